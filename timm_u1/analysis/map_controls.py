"""The control statistics of one source of maps (the trained model, the input, a random network): sombrero
figures, per-image centre concentration, and the class dependence of theta and phi, with the channel-order null."""
import math
from typing import Any, Dict, List, Optional

import torch

from .angles import centroid_vectors, hue_vectors
from .circular import relative_angle
from .decoding import AngleClassAccumulator
from .sombrero import SombreroStatistics, centre_mask

__all__ = ['MapControls', 'order_null']


class MapControls:
    """Control statistics of one source of maps (the model, the input, a random network).

    Streams, per image: the sombrero statistics (:class:`SombreroStatistics`, no permutations),
    the per-image centre concentration, and three class-angle accumulators: the hue theta (under
    G channel orders, natural first), the centroid angle phi and phi relative to a reference
    (the input's own centroid angle).
    """

    def __init__(self, num_classes: int, level: Any, orders: Optional[torch.Tensor] = None, seed: int = 0):
        self.num_classes = num_classes
        self.orders = orders
        self.stats = SombreroStatistics(num_classes=num_classes, permutations=0, seed=seed)
        self.level = level
        self.seed = seed
        self.angles: Dict[str, AngleClassAccumulator] = {}
        self.concentration: List[torch.Tensor] = []  # one float per image: small (8 bytes an image)

    def _acc(self, name: str, groups: int) -> AngleClassAccumulator:
        if name not in self.angles:
            lv = self.level
            self.angles[name] = AngleClassAccumulator(
                self.num_classes, groups=groups, folds=lv.folds, bins=lv.bins, permutations=lv.permutations,
                seed=self.seed + len(self.angles))
        return self.angles[name]

    def update(self, fmap: torch.Tensor, labels: torch.Tensor, reference_phi: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Add a batch; returns its (B, 2) centroid-angle unit vectors (the reference of other sources)."""
        fmap = fmap.detach().float().cpu()
        labels = torch.as_tensor(labels).long().flatten()
        self.stats.update(fmap, labels if self.num_classes else None)
        e = fmap.square().sum(1).double()
        h, w = e.shape[-2:]
        phi = torch.zeros(len(e), 2, dtype=torch.float64)
        if h * w >= 2:
            inner = centre_mask(h, w)
            if inner.any() and not inner.all():
                total = e.sum((1, 2))
                conc = e[:, inner].sum(1) / total.clamp_min(1e-300) / inner.double().mean()
                self.concentration.append(torch.where(total > 0, conc, torch.full_like(conc, float('nan'))))
            phi = centroid_vectors(e)
        if self.num_classes >= 2:
            if fmap.shape[1] >= 3:
                orders = self.orders if self.orders is not None else torch.arange(fmap.shape[1]).unsqueeze(0)
                self._acc('theta', len(orders)).update(hue_vectors(fmap, orders), labels)
            if h * w >= 2:
                self._acc('phi', 1).update(phi, labels)
                if reference_phi is not None:
                    self._acc('phi_relative_to_input', 1).update(relative_angle(phi, reference_phi), labels)
        return phi

    def image_concentration(self) -> torch.Tensor:
        return torch.cat(self.concentration) if self.concentration else torch.zeros(0, dtype=torch.float64)

    def result(self) -> Dict[str, Any]:
        fig = self.stats.result()
        e = fig['energy']
        out: Dict[str, Any] = {
            'images': fig['images'],
            'centre_concentration': e.get('centre_concentration'),
            'image_concentration_mean': e.get('image_concentration_mean'),
            'mean_centroid_length': e.get('image_centroid_mean', {}).get('length'),
        }
        if 'hue' in fig:
            h = fig['hue']['all']
            out['hue_resultant_length'] = h['image_resultant_length']
            out['hue_rayleigh_log10_p'] = h['rayleigh_log10_p']
        for name, acc in self.angles.items():
            res = acc.result()
            entry = {k: v for k, v in res.items() if k not in ('statistic', 'accuracy')}
            entry['statistic'], entry['accuracy'] = res['statistic'][0], res['accuracy'][0]
            if len(res['statistic']) > 1:
                entry['channel_orders'] = order_null(res['statistic'], res['accuracy'])
            out[name] = entry
        return out


def order_null(statistic: List[Optional[float]], accuracy: List[float]) -> Dict[str, Any]:
    """Where the natural channel order (entry 0) falls among the random orders (the rest)."""
    t = torch.tensor([float('nan') if v is None else v for v in statistic], dtype=torch.float64)
    a = torch.tensor([float('nan') if v is None else v for v in accuracy], dtype=torch.float64)
    out: Dict[str, Any] = {'orders': len(t) - 1}
    for name, v in (('statistic', t), ('accuracy', a)):
        null = v[1:][~torch.isnan(v[1:])]
        nat = float(v[0])
        if null.numel() == 0 or math.isnan(nat):
            continue
        out[name] = {
            'natural': nat,
            'median': float(null.median()),
            'q05': float(null.quantile(0.05)), 'q95': float(null.quantile(0.95)),
            # share of random orders strictly below the natural one: 0.5 = a typical order
            'percentile': float((null < nat).double().mean()),
            'p_value': (1 + int((null >= nat - 1e-12 * max(1.0, abs(nat))).sum())) / (null.numel() + 1),
            'values': null.tolist(),
        }
    return out
