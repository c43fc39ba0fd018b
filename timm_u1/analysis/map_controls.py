"""The control statistics of one source of maps (the trained model, the input, a random network): sombrero
figures, per-image centre energy, the class dependence of theta (also over the class-informative locations) and of
phi, the logits' hue where the source has logits, with the channel-order null."""
from typing import Any, Dict, List, Optional, Sequence

import torch

from .angles import centroid_vectors, hue_vectors
from .circular import relative_angle
from .decoding import AngleClassAccumulator, group_permutations, order_null
from .informative import InformativeHue
from .logits import LogitHue
from .sombrero import SombreroStatistics, centre_mask

__all__ = ['MapControls', 'angle_entry']


class MapControls:
    """Control statistics of one source of maps (the model, the input, a random network).

    Streams, per image: the sombrero statistics (:class:`SombreroStatistics`, no permutations), the energy within
    the centre region and in all (for each of ``exponents`` of the energy), and three class-angle accumulators: the
    hue theta (under G channel orders, natural first), the centroid angle phi and phi relative to a reference (the
    input's own centroid angle). Keeps the first ``level.informative_images`` maps for the class-informative hue, and
    streams the logits' hue (under ``class_orders`` random class orders) when :meth:`update` gets logits.
    """

    def __init__(self, num_classes: int, level: Any, orders: Optional[torch.Tensor] = None, seed: int = 0,
                 exponents: Sequence[float] = (1.0,), class_orders: int = 0):
        self.num_classes = num_classes
        self.orders = orders
        self.stats = SombreroStatistics(num_classes=num_classes, permutations=0, seed=seed)
        self.level = level
        self.seed = seed
        self.angles: Dict[str, AngleClassAccumulator] = {}
        self.concentration: List[torch.Tensor] = []  # one float per image: small (8 bytes an image)
        self.exponents = tuple(exponents)
        self.centre_energy: Dict[float, List[torch.Tensor]] = {x: [] for x in self.exponents}  # (B, 2): centre, all
        self.informative = InformativeHue(num_classes, level, orders, seed + 10, level.informative_images) if (
            num_classes >= 2) else None
        self.logits: Optional[LogitHue] = None
        self.class_orders = class_orders
        self.centre_share = 0.0  # share of the grid's locations in the centre region (0: no centre region)

    def _acc(self, name: str, groups: int) -> AngleClassAccumulator:
        if name not in self.angles:
            lv = self.level
            self.angles[name] = AngleClassAccumulator(
                self.num_classes, groups=groups, folds=lv.folds, bins=lv.bins, permutations=lv.permutations,
                seed=self.seed + len(self.angles), group_permutations=group_permutations(lv, groups, self.num_classes))
        return self.angles[name]

    def update(self, fmap: torch.Tensor, labels: torch.Tensor, reference_phi: Optional[torch.Tensor] = None,
               logits: Optional[torch.Tensor] = None) -> torch.Tensor:
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
                self.centre_share = float(inner.double().mean())
                total = e.sum((1, 2))
                conc = e[:, inner].sum(1) / total.clamp_min(1e-300) / inner.double().mean()
                self.concentration.append(torch.where(total > 0, conc, torch.full_like(conc, float('nan'))))
                for x in self.exponents:
                    ex = e if x == 1 else e.pow(x)
                    self.centre_energy[x].append(torch.stack([ex[:, inner].sum(1), ex.sum((1, 2))], 1))
            phi = centroid_vectors(e)
        if self.num_classes >= 2:
            if fmap.shape[1] >= 3:
                orders = self.orders if self.orders is not None else torch.arange(fmap.shape[1]).unsqueeze(0)
                self._acc('theta', len(orders)).update(hue_vectors(fmap, orders), labels)
                self.informative.update(fmap, labels)
            if h * w >= 2:
                self._acc('phi', 1).update(phi, labels)
                if reference_phi is not None:
                    self._acc('phi_relative_to_input', 1).update(relative_angle(phi, reference_phi), labels)
            if logits is not None:
                if self.logits is None:
                    self.logits = LogitHue(logits.shape[1], self.level, self.seed + 11, self.class_orders)
                self.logits.update(logits, labels)
        return phi

    def image_concentration(self) -> torch.Tensor:
        return torch.cat(self.concentration) if self.concentration else torch.zeros(0, dtype=torch.float64)

    def image_centre_energy(self, exponent: float = 1.0) -> torch.Tensor:
        """(images, 2): each image's energy (raised to ``exponent``) within the centre region, and in all."""
        parts = self.centre_energy.get(exponent) or []
        return torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.float64)

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
            out[name] = angle_entry(acc.result())
        informative = self.informative.result() if self.informative is not None else None
        if informative is not None:
            out['informative_theta'] = angle_entry(informative)
        if self.logits is not None:
            out['logits'] = self.logits.result()
        return out


def angle_entry(res: Dict[str, Any]) -> Dict[str, Any]:
    """A source's entry for one angle from :meth:`AngleClassAccumulator.result`: the natural variant's figures,
    and where the others fall (``channel_orders``) when there are several."""
    entry = {k: v for k, v in res.items() if k not in ('statistic', 'accuracy', 'statistic_z_groups')}
    entry['statistic'], entry['accuracy'] = res['statistic'][0], res['accuracy'][0]
    if len(res['statistic']) > 1:
        entry['channel_orders'] = order_null({'statistic': res['statistic'], 'accuracy': res['accuracy'],
                                              'standardised': res.get('statistic_z_groups')})
    return entry
