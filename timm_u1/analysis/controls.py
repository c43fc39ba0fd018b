""" Controls that can make the analysis fail, and a verdict per claim (docs/math.md, "Statistics").

A statistic of a trained model's map is evidence for a claim of arXiv 2206.02220 only beside
controls that could have produced it without the claim being true. :func:`run_controls` computes,
on the same images:

* **input baseline**: the same statistics of the input itself, its pixels (normalisation undone,
  so in [0, 1]) pooled to ``patch`` x ``patch`` cells per map location and unshuffled into
  channels (3 x patch^2 "channels" per location: colour x position in the cell);
* **random initialisation**: the same architecture with random weights over several seeds, its
  BatchNorm statistics recalibrated on the analysed images (at default statistics a random network
  is half dead and saturated, which no trained network is);
* **channel-order null**: a hidden layer's channel order is arbitrary, so its activation hue is
  one of N! projections; each hue statistic is recomputed under random channel orders (the
  model's and the input's) and the natural order placed among them;
* **decoding**: the class decoded from the hue angle theta and from the energy-centroid angle phi
  (k-fold cross-validated, :class:`timm_u1.analysis.stats.AngleClassAccumulator`), against chance and
  against every control; phi also relative to the input's own centroid angle, which takes out
  where the input's energy lies.

:func:`verdicts` then states, per claim, ``supported`` (the trained model differs from every
control in the claimed direction), ``not distinguishable from controls`` or ``contradicted`` (the
trained model itself does not show the effect), with the numbers it rests on.
"""
import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..core.hue import CHROMA_RTOL, energy_centroid, hue_basis
from .probe import ActivationProbe
from .stats import AngleClassAccumulator, SombreroStatistics, binomial_two_sided_p

__all__ = [
    'ControlLevel', 'CONTROL_LEVELS', 'SUPPORTED', 'NOT_DISTINGUISHABLE', 'CONTRADICTED', 'input_map',
    'channel_orders', 'hue_vectors', 'centroid_vectors', 'transformed_copies', 'FollowsInput', 'random_init_copy', 'recalibrate_batchnorm',
    'MapControls', 'run_controls', 'controls_from_maps', 'assemble', 'verdicts', 'render_markdown', 'format_value',
]

SUPPORTED = 'supported'
NOT_DISTINGUISHABLE = 'not distinguishable from controls'
CONTRADICTED = 'contradicted'
ALPHA = 0.05


@dataclass(frozen=True)
class ControlLevel:
    """How much control work ``--controls`` buys.

    Args:
        images: Images the controls use (the first of the analysis' shuffled order); None = all.
        seeds: Random-initialisation seeds (>= 5).
        orders: Random channel orders of the channel-order null (>= 100).
        calibration_images: Images that recalibrate each random network's BatchNorm statistics.
        permutations: Label permutations of each control's own tests.
        folds, bins: Cross-validation folds and angle sectors of the decoder.
        transforms: Also run the image-plane test on rotated and off-centre-cropped copies.
    """
    images: Optional[int]
    seeds: int
    orders: int
    calibration_images: int
    permutations: int
    folds: int = 5
    bins: int = 12
    transforms: bool = False


CONTROL_LEVELS: Dict[str, Optional[ControlLevel]] = {
    'none': None,
    'fast': ControlLevel(images=192, seeds=5, orders=100, calibration_images=64, permutations=199),
    'full': ControlLevel(images=None, seeds=10, orders=200, calibration_images=256, permutations=999,
                        transforms=True),
}


def resolve_level(level: Union[str, ControlLevel, None]) -> Optional[ControlLevel]:
    """A :class:`ControlLevel` from 'none' | 'fast' | 'full' (or one given as is)."""
    if level is None or isinstance(level, ControlLevel):
        return level
    if level not in CONTROL_LEVELS:
        raise ValueError(f'controls must be one of {sorted(CONTROL_LEVELS)}, got {level!r}.')
    return CONTROL_LEVELS[level]


# --- per-batch quantities -----------------------------------------------------------------------

def input_map(
        images: torch.Tensor,
        grid: Tuple[int, int],
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        patch: int = 4,
) -> torch.Tensor:
    """The input as a (B, 3 patch^2, H, W) "activation map" on the model map's (H, W) grid.

    Normalisation is undone (pixels in [0, 1], so a dark background has no energy), the image is
    area-pooled to (patch H, patch W) and each patch x patch cell becomes the channels of its
    location: channel order = (row, column, colour) within the cell.
    """
    if images.dim() != 4:
        raise ValueError(f'Expected images (B, C, H, W), got {tuple(images.shape)}.')
    x = images.float()
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x = x * s + m
    h, w = grid
    x = F.adaptive_avg_pool2d(x, (patch * h, patch * w))
    b, c = x.shape[:2]
    # position-major (row, column, colour): colour-major order would repeat a grey image's cell with
    # period patch^2 three times, and the three copies' hues cancel (1 + w + w^2 = 0), so grey inputs
    # would have no hue at all
    cells = F.pixel_unshuffle(x, patch).view(b, c, patch * patch, h, w)
    return cells.transpose(1, 2).reshape(b, c * patch * patch, h, w)


def channel_orders(num_channels: int, count: int, seed: int = 0) -> torch.Tensor:
    """(count + 1, N) channel orders: the natural order first, then ``count`` random ones."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.rand(count, num_channels, generator=gen).argsort(1)
    return torch.cat([torch.arange(num_channels).unsqueeze(0), rand], 0)


def hue_vectors(fmap: torch.Tensor, orders: Optional[torch.Tensor] = None, max_elements: int = 1 << 23) -> torch.Tensor:
    """(B, G, 2) per-image unit hue vector under each of G channel orders (zero: no hue).

    The vector is the direction of sum_xy E(x, y) * (a, b) / chroma over locations with a defined
    hue, as in :class:`timm_u1.analysis.stats.SombreroStatistics`; channel j takes the hue-basis vector of
    position ``order[j]``, so the identity order gives the natural hue.
    """
    b, c, h, w = fmap.shape
    if orders is None:
        orders = torch.arange(c).unsqueeze(0)
    g = orders.shape[0]
    x = fmap.detach().float().permute(0, 2, 3, 1).reshape(b, h * w, c)
    basis = hue_basis(c, device=x.device)[orders.to(x.device)]  # (G, N, 2)
    basis = basis.permute(1, 0, 2).reshape(c, 2 * g)
    e = x.square().sum(-1)  # (B, HW)
    tol = CHROMA_RTOL * e.sqrt()
    out = torch.zeros(b, g, 2, dtype=torch.float64)
    # chunk images so the (images x locations x 2G) projection stays bounded
    step = max(1, max_elements // max(1, h * w * 2 * g))
    for i in range(0, b, step):
        z = (x[i:i + step] @ basis).view(-1, h * w, g, 2)
        chroma = torch.hypot(z[..., 0], z[..., 1])
        weight = e[i:i + step].unsqueeze(-1) * (chroma > tol[i:i + step].unsqueeze(-1))
        s = (z / chroma.clamp_min(1e-30).unsqueeze(-1) * weight.unsqueeze(-1)).sum(1).double()
        out[i:i + step] = s
    norm = torch.hypot(out[..., 0], out[..., 1])
    return out / norm.clamp_min(1e-300).unsqueeze(-1) * (norm > 0).unsqueeze(-1)


def centroid_vectors(energy_map: torch.Tensor) -> torch.Tensor:
    """(B, 2) unit vector of each image's energy-centroid angle phi (zero: centred or no energy)."""
    cen = energy_centroid(energy_map.double())
    ok = ~torch.isnan(cen.angle)
    phi = cen.angle.nan_to_num(0.0)
    return torch.stack([torch.cos(phi), torch.sin(phi)], 1) * ok.unsqueeze(1)


def _relative(u: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Unit vectors of angle(u) - angle(ref); zero where either is zero."""
    return torch.stack([u[:, 0] * ref[:, 0] + u[:, 1] * ref[:, 1], u[:, 1] * ref[:, 0] - u[:, 0] * ref[:, 1]], 1)


def transformed_copies(images: torch.Tensor) -> List[Tuple[str, torch.Tensor]]:
    """Rotated (90, 180, 270 degrees; square images only) and off-centre-cropped copies of a batch.

    An off-centre crop is the 3/4-size window at one corner, resized back to the full size, so the
    content moves away from the centre towards the opposite corner.
    """
    out = []
    h, w = images.shape[-2:]
    if h == w:
        out += [(f'rot{90 * k}', torch.rot90(images, k, dims=(2, 3))) for k in (1, 2, 3)]
    ch, cw = (3 * h) // 4, (3 * w) // 4
    for name, (y, x) in (('crop_top_left', (0, 0)), ('crop_top_right', (0, w - cw)),
                         ('crop_bottom_left', (h - ch, 0)), ('crop_bottom_right', (h - ch, w - cw))):
        crop = images[..., y:y + ch, x:x + cw]
        out.append((name, F.interpolate(crop, size=(h, w), mode='bilinear', align_corners=False)))
    return out


class FollowsInput:
    """Does a network's energy-centroid angle phi just follow the input's own centroid angle?

    Streams, over transformed copies of the images (:func:`transformed_copies`), the resultant
    length R of phi_net - phi_input (1 = the network's centroid sits at a fixed angle from the
    input's: it follows the input) and the mean offset. No class decoding here: the copies of one
    image would fall into different cross-validation folds and leak.
    """

    def __init__(self, num_classes: int = 0, level: Optional[ControlLevel] = None, seed: int = 0):
        self.sum = torch.zeros(3, dtype=torch.float64)

    def update(self, fmap: torch.Tensor, inp: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        if fmap.shape[-2] * fmap.shape[-1] < 2:
            return
        rel = _relative(centroid_vectors(fmap.float().square().sum(1)), centroid_vectors(inp.square().sum(1)))
        ok = rel.abs().sum(1) > 0
        self.sum += torch.cat([rel[ok].sum(0), ok.sum().double().view(1)])

    def result(self) -> Dict[str, Any]:
        c, s, n = self.sum.tolist()
        return {'images': int(n), 'follow_resultant_length': math.hypot(c, s) / n if n else None,
                'mean_offset_deg': math.degrees(math.atan2(s, c)) if n else None}


def _follow_pass(net: nn.Module, data: Iterable, layer: Optional[str], num_classes: int, level: ControlLevel,
                 mean, std, device, seed: int) -> Dict[str, Any]:
    follow = FollowsInput(num_classes, level, seed)
    with ActivationProbe(net, layer) as probe:
        for images, labels in data:
            for _name, x in transformed_copies(images):
                fmap = probe(x.to(device)).float().cpu()
                follow.update(fmap, input_map(x, fmap.shape[-2:], mean, std), labels)
    return follow.result()


# --- random initialisation ----------------------------------------------------------------------

def random_init_copy(model: nn.Module, seed: int) -> Tuple[nn.Module, str]:
    """A copy of ``model``'s architecture with random weights; returns (model, how it was initialised).

    The architecture is re-created with timm (its own initialisation) when its state dict has the
    same keys and shapes; otherwise a deep copy gets every module's ``reset_parameters``.
    """

    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    arch = cfg.get('architecture')
    reference = {k: v.shape for k, v in model.state_dict().items()}
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        return _random_init(model, arch, cfg, reference)


def _random_init(model: nn.Module, arch: Optional[str], cfg: Dict[str, Any], reference: Dict[str, Any]):
    import timm

    if arch:
        try:
            fresh = timm.create_model(arch, pretrained=False, num_classes=getattr(model, 'num_classes', 1000))
            if {k: v.shape for k, v in fresh.state_dict().items()} == reference:
                fresh.pretrained_cfg = cfg
                return fresh.eval(), 'timm initialisation'
        except Exception:  # an architecture timm cannot re-create by name: fall back below
            pass
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        if hasattr(module, 'reset_parameters'):
            module.reset_parameters()
    return fresh.eval(), 'PyTorch default initialisation'


def _batchnorms(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_batchnorm(
        model: nn.Module, batches: Iterable, layer: Optional[str] = None, max_images: Optional[int] = None,
        device: Union[str, torch.device] = 'cpu') -> int:
    """Re-estimate every BatchNorm's running mean and variance on ``batches`` (a cumulative average).

    Runs the model up to ``layer`` (later BatchNorms do not touch the probed map). Returns the
    number of images used; 0 if the model has no BatchNorm.
    """
    norms = _batchnorms(model)
    if not norms:
        return 0
    model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts alike
        m.train()
    used = 0
    try:
        with ActivationProbe(model, layer) as probe:
            for images, _labels in batches:
                if max_images is not None and used >= max_images:
                    break
                if max_images is not None:
                    images = images[:max_images - used]
                probe(images.to(device))
                used += len(images)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        model.eval()
    return used


# --- streaming control statistics ---------------------------------------------------------------

class MapControls:
    """Control statistics of one source of maps (the model, the input, a random network).

    Streams, per image: the sombrero statistics (:class:`SombreroStatistics`, no permutations),
    the per-image centre concentration, and three class-angle accumulators: the hue theta (under
    G channel orders, natural first), the centroid angle phi and phi relative to a reference
    (the input's own centroid angle).
    """

    def __init__(self, num_classes: int, level: ControlLevel, orders: Optional[torch.Tensor] = None, seed: int = 0):
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
            inner = SombreroStatistics._inner_mask(h, w)
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
                    self._acc('phi_relative_to_input', 1).update(_relative(phi, reference_phi), labels)
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
                entry['channel_orders'] = _order_null(res['statistic'], res['accuracy'])
            out[name] = entry
        return out


def _order_null(statistic: List[Optional[float]], accuracy: List[float]) -> Dict[str, Any]:
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


# --- the controls of one analysis ---------------------------------------------------------------

class _Replay:
    """Iterates a loader's (images, labels) again and again; keeps them in memory when small enough."""

    def __init__(self, loader: Iterable, max_bytes: int = 1 << 29):
        self.loader, self.max_bytes = loader, max_bytes
        self.cache: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = []

    @staticmethod
    def _pairs(loader: Iterable):
        for batch in loader:
            images, labels = batch[0], batch[1]
            if images is None:  # every image of the batch was unreadable (analyze's loader)
                continue
            yield images, torch.as_tensor(labels)

    def __iter__(self):
        if self.cache is not None and self.cache and getattr(self, '_complete', False):
            yield from self.cache
            return
        size = 0
        if self.cache is not None:
            self.cache = []  # an earlier pass stopped early: start the cache afresh
        for images, labels in self._pairs(self.loader):
            if self.cache is not None:
                size += images.numel() * images.element_size()
                if size <= self.max_bytes:
                    self.cache.append((images, labels))
                else:
                    self.cache = None
            yield images, labels
        self._complete = self.cache is not None


def run_controls(
        model: nn.Module,
        loader: Iterable,
        layer: Optional[str] = None,
        class_names: Optional[Sequence[str]] = None,
        level: Union[str, ControlLevel] = 'fast',
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        seed: int = 0,
        device: Union[str, torch.device] = 'cpu',
        progress: bool = True,
) -> Dict[str, Any]:
    """The controls of :mod:`timm_u1.analysis.controls` for ``layer`` of ``model`` over ``loader``.

    ``loader`` yields (images, labels[, ...]) batches already transformed for ``model`` (the images
    the controls use; label -1 = unlabelled), and is iterated once per network; ``mean`` / ``std``
    are the normalisation to undo for the input baseline. Returns the report's ``controls`` section;
    :func:`verdicts` turns it into per-claim verdicts.
    """
    from tqdm.auto import tqdm

    lv = resolve_level(level)
    if lv is None:
        raise ValueError("run_controls needs a control level; 'none' means: do not call it.")
    num_classes = len(class_names or ())
    data = _Replay(loader)
    model.eval().to(device)
    # no_grad, not inference_mode: the random networks made in here must stay trainable for BatchNorm
    with torch.no_grad():
        # the trained model and the input, one pass
        model_ctl = input_ctl = None
        with ActivationProbe(model, layer) as probe:
            for images, labels in tqdm(data, desc='controls: model + input', unit='batch', disable=not progress):
                fmap = probe(images.to(device)).float().cpu()
                inp = input_map(images, fmap.shape[-2:], mean, std)
                if model_ctl is None:
                    model_ctl = MapControls(num_classes, lv, channel_orders(fmap.shape[1], lv.orders, seed), seed)
                    input_ctl = MapControls(num_classes, lv, channel_orders(inp.shape[1], lv.orders, seed + 1), seed)
                ref = input_ctl.update(inp, labels)
                model_ctl.update(fmap, labels, reference_phi=ref)
        if model_ctl is None:
            raise ValueError('The controls got no images.')

        follows: Dict[str, Any] = {}
        if lv.transforms:
            follows['model'] = _follow_pass(model, data, layer, num_classes, lv, mean, std, device, seed)
            follows['random_init'] = []

        # random networks with recalibrated BatchNorm
        randoms, how, calibrated = [], None, 0
        for k in tqdm(range(lv.seeds), desc='controls: random init', unit='seed', disable=not progress):
            net, how = random_init_copy(model, seed + 1000 + k)
            net.to(device)
            calibrated = recalibrate_batchnorm(net, data, layer, lv.calibration_images, device)
            ctl = None
            with ActivationProbe(net, layer) as probe:
                for images, labels in data:
                    fmap = probe(images.to(device)).float().cpu()
                    inp = input_map(images, fmap.shape[-2:], mean, std)
                    if ctl is None:
                        ctl = MapControls(num_classes, lv, None, seed + 2 + k)
                    ref = centroid_vectors(inp.square().sum(1).double()) if inp.shape[-2] * inp.shape[-1] >= 2 else None
                    ctl.update(fmap, labels, reference_phi=ref)
            randoms.append(ctl)
            if lv.transforms:
                follows['random_init'].append(_follow_pass(net, data, layer, num_classes, lv, mean, std, device, seed))
            del net
    out = assemble(model_ctl, input_ctl, randoms, lv, name=level if isinstance(level, str) else 'custom',
                   seeds=[seed + 1000 + k for k in range(lv.seeds)], initialisation=how, calibrated=calibrated)
    if follows:
        out['follows_input'] = {
            'transforms': [name for name, _ in transformed_copies(next(iter(data))[0][:1])],
            'question': "over rotated and off-centre-cropped copies: does the network's energy-centroid angle sit at "
                        "a fixed angle from the input's own (R near 1: it follows the input)?",
            **follows}
    return out


def controls_from_maps(
        batches: Iterable[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, Sequence[torch.Tensor]]],
        num_classes: int,
        level: Union[str, ControlLevel] = 'fast',
        seed: int = 0,
) -> Dict[str, Any]:
    """The controls section from maps computed elsewhere: batches of (labels, model map, input map,
    [one map per random network]), all (B, C, H, W) on the same grid. For synthetic tests and for
    models that :func:`run_controls` cannot re-initialise."""
    lv = resolve_level(level)
    model_ctl = input_ctl = None
    randoms: List[MapControls] = []
    for labels, fmap, inp, rand_maps in batches:
        if model_ctl is None:
            model_ctl = MapControls(num_classes, lv, channel_orders(fmap.shape[1], lv.orders, seed), seed)
            input_ctl = MapControls(num_classes, lv, channel_orders(inp.shape[1], lv.orders, seed + 1), seed)
            randoms = [MapControls(num_classes, lv, None, seed + 2 + k) for k in range(len(rand_maps))]
        ref = input_ctl.update(inp, labels)
        model_ctl.update(fmap, labels, reference_phi=ref)
        for ctl, rmap in zip(randoms, rand_maps):
            ctl.update(rmap, labels, reference_phi=ref)
    if model_ctl is None:
        raise ValueError('controls_from_maps got no batches.')
    return assemble(model_ctl, input_ctl, randoms, lv, name=level if isinstance(level, str) else 'custom',
                    seeds=list(range(len(randoms))), initialisation='given maps', calibrated=0)


def assemble(model_ctl: MapControls, input_ctl: MapControls, randoms: Sequence[MapControls], lv: ControlLevel,
             name: str, seeds: Sequence[int], initialisation: Optional[str], calibrated: int) -> Dict[str, Any]:
    """The report's ``controls`` section from the streamed statistics of each source."""
    mc, ic = model_ctl.image_concentration(), input_ctl.image_concentration()
    if mc.numel() == ic.numel():
        ok = ~(torch.isnan(mc) | torch.isnan(ic))
        higher, lower = int((mc[ok] > ic[ok]).sum()), int((mc[ok] < ic[ok]).sum())
    else:
        ok, higher, lower = torch.zeros(0, dtype=torch.bool), 0, 0
    sources: Dict[str, Any] = {'model': model_ctl.result(), 'input': input_ctl.result(), 'random_init': []}
    for ctl, s in zip(randoms, seeds):
        entry = ctl.result()
        entry['seed'] = s
        sources['random_init'].append(entry)
    return {
        'level': {'name': name, **asdict(lv)},
        'images': sources['model']['images'],
        'labelled': model_ctl.num_classes >= 2,
        'input_baseline': 'pixels in [0, 1] (normalisation undone), area-pooled to 4x4 cells per map location; '
                          'the 48 values of a cell (row x column x colour) are its channels',
        'random_init': {
            'seeds': len(randoms), 'initialisation': initialisation,
            'batchnorm': (f'running statistics recalibrated on the first {calibrated} images' if calibrated
                          else 'no BatchNorm layers'),
        },
        'decoding': (f'{lv.folds}-fold cross-validated Bayes classifier of the angle binned in {lv.bins} sectors; '
                     f'chance = always the majority class; p-values from {lv.permutations} label permutations'),
        'channel_order_null': f'{lv.orders} random channel orders of the map (and of the input cells); '
                              f'p = share of random orders at least as extreme as the natural order',
        'concentration_model_vs_input': {
            'images': int(ok.sum()), 'model_higher': higher, 'input_higher': lower,
            'sign_test_p': binomial_two_sided_p(higher, higher + lower),
        },
        'sources': sources,
    }


# --- verdicts -----------------------------------------------------------------------------------

def _values(randoms: List[Dict[str, Any]], *keys: str) -> List[float]:
    out = []
    for r in randoms:
        v: Any = r
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        if v is not None:
            out.append(float(v))
    return out


def _spread(values: List[float]) -> Dict[str, Optional[float]]:
    if not values:
        return {'min': None, 'median': None, 'max': None}
    s = sorted(values)
    return {'min': s[0], 'median': s[len(s) // 2], 'max': s[-1]}


def _claim_sombrero(c: Dict[str, Any]) -> Dict[str, Any]:
    src = c['sources']
    m, i = src['model'].get('centre_concentration'), src['input'].get('centre_concentration')
    rnd = _values(src['random_init'], 'centre_concentration')
    pair = c['concentration_model_vs_input']
    numbers = {'model': m, 'input': i, 'random_init': _spread(rnd),
               'images_model_above_input': pair['model_higher'], 'images_input_above_model': pair['input_higher'],
               'sign_test_p': pair['sign_test_p']}
    claim = 'bottleneck energy is concentrated about the image centre (sombrero), beyond what the input and the architecture give'
    if m is None:
        return {'claim': claim, 'verdict': None, 'reason': 'the map has no centre region (grid too small)', 'numbers': numbers}
    if m <= 1:
        return {'claim': claim, 'verdict': CONTRADICTED, 'numbers': numbers,
                'reason': f'the trained map is not concentrated at the centre (concentration {m:.3g} <= 1)'}
    above_input = i is None or (m > i and pair['model_higher'] > pair['input_higher'] and pair['sign_test_p'] < ALPHA)
    above_random = not rnd or m > max(rnd)
    if above_input and above_random:
        return {'claim': claim, 'verdict': SUPPORTED, 'numbers': numbers,
                'reason': f'concentration {m:.3g} above the input ({format_value(i)}, paired sign test p = {pair["sign_test_p"]:.2g}) '
                          f'and every random network (max {format_value(max(rnd) if rnd else None)})'}
    why = []
    if not above_input:
        why.append(f'the input itself gives {format_value(i)} (model {m:.3g}; per image the model is higher in '
                   f'{pair["model_higher"]} of {pair["model_higher"] + pair["input_higher"]}, sign test p = {pair["sign_test_p"]:.2g})')
    if not above_random:
        why.append(f'random networks give up to {max(rnd):.3g}')
    return {'claim': claim, 'verdict': NOT_DISTINGUISHABLE, 'numbers': numbers, 'reason': '; '.join(why)}


def _claim_angle(c: Dict[str, Any], key: str, claim: str, relative_key: Optional[str] = None,
                 hidden: bool = True) -> Dict[str, Any]:
    src = c['sources']
    mod = src['model'].get(key)
    if not c['labelled']:
        return {'claim': claim, 'verdict': None, 'reason': 'the data has no labels', 'numbers': {}}
    if mod is None:
        return {'claim': claim, 'verdict': None, 'reason': f'no {key} angle on this map', 'numbers': {}}
    inp = src['input'].get(key) or {}
    rnd_acc = _values(src['random_init'], key, 'accuracy')
    rnd_t = _values(src['random_init'], key, 'statistic')
    numbers: Dict[str, Any] = {
        'images': mod['images'], 'chance': mod['chance'],
        'model': {k: mod.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
        'input': {k: inp.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
        'random_init': {'statistic': _spread(rnd_t), 'accuracy': _spread(rnd_acc)},
    }
    if mod.get('p_value') is None or mod.get('accuracy_p_value') is None:
        return {'claim': claim, 'verdict': None, 'numbers': numbers,
                'reason': 'no label permutations (or no image with an angle), so no test of class dependence'}
    significant = min(mod['p_value'], mod['accuracy_p_value']) < ALPHA
    if not significant:
        return {'claim': claim, 'verdict': CONTRADICTED, 'numbers': numbers,
                'reason': f'the trained model shows no class dependence (T p = {format_value(mod.get("p_value"))}, '
                          f'decoding {format_value(mod["accuracy"])} vs chance {format_value(mod["chance"])}, p = {format_value(mod.get("accuracy_p_value"))})'}
    why = []
    acc = mod['accuracy']
    if inp.get('accuracy') is not None and not acc > inp['accuracy']:
        why.append(f'the input decodes the class as well ({inp["accuracy"]:.3f} vs model {acc:.3f})')
    if rnd_acc and not acc > max(rnd_acc):
        why.append(f'random networks decode up to {max(rnd_acc):.3f} (model {acc:.3f})')
    null = mod.get('channel_orders', {})
    if hidden and null.get('statistic'):
        s = null['statistic']
        numbers['channel_order_null'] = {k: s[k] for k in ('natural', 'median', 'q95', 'percentile', 'p_value')}
        numbers['channel_order_null']['accuracy_median'] = null.get('accuracy', {}).get('median')
        if not s['p_value'] < ALPHA:
            why.append(f'the natural channel order is not special: T {s["natural"]:.3g} at percentile '
                       f'{100 * s["percentile"]:.0f} of {null["orders"]} random orders (median {s["median"]:.3g})')
    if relative_key is not None:
        rel = src['model'].get(relative_key) or {}
        rnd_rel = _values(src['random_init'], relative_key, 'accuracy')
        numbers['relative_to_input'] = {
            'model': {k: rel.get(k) for k in ('statistic', 'p_value', 'accuracy', 'accuracy_p_value')},
            'random_init': {'accuracy': _spread(rnd_rel)}}
        # reported, not judged: where the input's own centroid is near the centre its angle is noise,
        # and the difference of two angles then carries none of the model's class signal
    if why:
        return {'claim': claim, 'verdict': NOT_DISTINGUISHABLE, 'numbers': numbers, 'reason': '; '.join(why)}
    return {'claim': claim, 'verdict': SUPPORTED, 'numbers': numbers,
            'reason': f'class decoded at {acc:.3f} (chance {mod["chance"]:.3f}), above the input '
                      f'({format_value(inp.get("accuracy"))}) and every random '
                      f'network' + (', natural channel order beyond the random orders' if hidden else '')}


def verdicts(controls: Dict[str, Any], hidden_layer: bool = True) -> Dict[str, Any]:
    """Per-claim verdicts from :func:`run_controls`' section: ``sombrero``, ``hue_class``, ``centroid_angle_class``.

    ``hidden_layer``: the map's channel order is arbitrary (every layer but the logits), so the hue
    must also beat the channel-order null.
    """
    return {
        'sombrero': _claim_sombrero(controls),
        'hue_class': _claim_angle(
            controls, 'theta', 'the activation hue theta depends on the class (symmetry breaking in activation space)',
            hidden=hidden_layer),
        'centroid_angle_class': _claim_angle(
            controls, 'phi', 'the energy-centroid angle phi depends on the class more than the input\'s own '
                             'centroid angle does (symmetry breaking in the image plane)', relative_key='phi_relative_to_input', hidden=False),
    }


def format_value(x: Any, digits: int = 3) -> str:
    """A figure for a report table: 3 significant digits, '-' for a missing or NaN value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return '-'
    if isinstance(x, float):
        return f'{x:.{digits}g}'
    return str(x)


def render_markdown(controls: Dict[str, Any], claims: Dict[str, Any]) -> List[str]:
    """Lines of report.md: the verdicts, then the model beside its controls."""
    src = controls['sources']
    rnd = src['random_init']
    lines = ['## Verdicts', '', '| claim | verdict | because |', '|---|---|---|']
    for name, v in claims.items():
        lines.append(f"| {name}: {v['claim']} | **{v['verdict'] or 'not evaluated'}** | {v['reason']} |")
    lv = controls['level']
    lines += ['', f"## Model beside its controls ({controls['images']} images, controls '{lv['name']}')", '',
              f"Input baseline: {controls['input_baseline']}. Random networks: {controls['random_init']['seeds']} seeds, "
              f"{controls['random_init']['initialisation']}, {controls['random_init']['batchnorm']}. "
              f"Decoding: {controls['decoding']}. Channel-order null: {controls['channel_order_null']}.", '',
              '| figure | trained model | input | random init (min / median / max) |', '|---|---|---|---|']

    def row(label: str, *keys: str) -> None:
        def get(d):
            for k in keys:
                d = d.get(k) if isinstance(d, dict) else None
            return d
        r = _spread(_values(rnd, *keys))
        lines.append(f"| {label} | {format_value(get(src['model']))} | {format_value(get(src['input']))} | "
                     f"{format_value(r['min'])} / {format_value(r['median'])} / {format_value(r['max'])} |")

    row('centre concentration (mean map)', 'centre_concentration')
    row('mean per-image concentration', 'image_concentration_mean')
    row('hue R over images', 'hue_resultant_length')
    row('hue Rayleigh log10 p (uniformity, not class)', 'hue_rayleigh_log10_p')
    for key, label in (('theta', 'hue θ'), ('phi', 'centroid angle φ'), ('phi_relative_to_input', 'φ minus the input\'s φ')):
        if key in src['model']:
            row(f'{label}: class statistic T', key, 'statistic')
            row(f'{label}: T label-permutation p', key, 'p_value')
            row(f'{label}: decoding accuracy', key, 'accuracy')
            row(f'{label}: decoding p', key, 'accuracy_p_value')
            row(f'{label}: chance', key, 'chance')
    theta = src['model'].get('theta', {}).get('channel_orders', {})
    if theta.get('statistic'):
        s, a = theta['statistic'], theta.get('accuracy', {})
        si = src['input'].get('theta', {}).get('channel_orders', {}).get('statistic', {})
        lines += ['', f"Channel-order null of the hue ({theta['orders']} random orders): the natural order's T = "
                      f"{format_value(s['natural'])} is at percentile {100 * s['percentile']:.0f} (median {format_value(s['median'])}, "
                      f"95th percentile {format_value(s['q95'])}, p = {format_value(s['p_value'])}); decoding {format_value(a.get('natural'))} "
                      f"against a median order's {format_value(a.get('median'))}."
                  + (f" The input cells: natural T {format_value(si.get('natural'))} at percentile "
                     f"{100 * si.get('percentile', 0):.0f}." if si else '')]
    fol = controls.get('follows_input')
    if fol:
        rr = _spread([r['follow_resultant_length'] for r in fol['random_init'] if r['follow_resultant_length'] is not None])
        lines += ['', f"Image-plane angle on {', '.join(fol['transforms'])} copies ({fol['model']['images']} maps): "
                      f"R of φ_net - φ_input = {format_value(fol['model']['follow_resultant_length'])} for the trained model, "
                      f"{format_value(rr['min'])} / {format_value(rr['median'])} / {format_value(rr['max'])} for the random networks (1 = follows the input)."]
    pair = controls['concentration_model_vs_input']
    lines += ['', f"Per image, the model's centre concentration is above the input's in {pair['model_higher']} and below "
                  f"in {pair['input_higher']} of {pair['images']} images (sign test p = {format_value(pair['sign_test_p'])}).", '']
    return lines
