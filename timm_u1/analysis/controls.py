"""The controls of an analysis, computed on the same images as the trained model: the input itself, random
networks with recalibrated BatchNorm, random channel orders, and class decoding (docs/analysis.md, "Controls and
verdicts"); :func:`run_controls` returns the report's ``controls`` section."""
import importlib
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .angles import channel_orders
from .concentration import INPUT_EXPONENTS, concentration_tests
from .claims import ALPHA, CONTRADICTED, NOT_DISTINGUISHABLE, SUPPORTED  # noqa: F401  (timm_u1.early imports them here)
from .follows import FOLLOW_QUESTION, follow_pass
from .formatting import format_value  # noqa: F401  (timm_u1.early imports it here)
from .inputs import input_map, transformed_copies
from .logits import batch_logits, logit_classes_mismatch
from .map_controls import MapControls
from .probe import ActivationProbe
from .random_init import random_init_copy, recalibrate_batchnorm

__all__ = [
    'ControlLevel', 'CONTROL_LEVELS', 'resolve_level', 'ControlImages', 'TrainedControls', 'run_controls',
    'finish_controls', 'controls_from_maps', 'assemble', 'SUPPORTED', 'NOT_DISTINGUISHABLE', 'CONTRADICTED',
]


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
        order_permutations: Label permutations of every random channel (and class) order, which standardise
            each order's T against its own null (at most ``permutations``; fewer past 64 MB, i.e. many classes).
        informative_images: Images (the first of the control images; None = all) whose class-informative
            locations are found by nearest neighbours.
    """
    images: Optional[int]
    seeds: int
    orders: int
    calibration_images: int
    permutations: int
    folds: int = 5
    bins: int = 12
    transforms: bool = False
    order_permutations: int = 199
    informative_images: Optional[int] = 96


CONTROL_LEVELS: Dict[str, Optional[ControlLevel]] = {
    'none': None,
    'fast': ControlLevel(images=192, seeds=5, orders=100, calibration_images=64, permutations=199),
    'full': ControlLevel(images=None, seeds=10, orders=200, calibration_images=256, permutations=999,
                        transforms=True, order_permutations=999, informative_images=256),
}


def resolve_level(level: Union[str, ControlLevel, None]) -> Optional[ControlLevel]:
    """A :class:`ControlLevel` from 'none' | 'fast' | 'full' (or one given as is)."""
    if level is None or isinstance(level, ControlLevel):
        return level
    if level not in CONTROL_LEVELS:
        raise ValueError(f'controls must be one of {sorted(CONTROL_LEVELS)}, got {level!r}.')
    return CONTROL_LEVELS[level]


class ControlImages:
    """The control images as (images, labels) batches, iterated once per network; kept in memory when small
    enough (else the loader is read again each time). Batches whose images were all unreadable are left out."""

    def __init__(self, loader: Optional[Iterable] = None, max_bytes: int = 1 << 29,
                 batches: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None):
        self.loader, self.max_bytes = loader, max_bytes
        self.cache: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = list(batches) if batches is not None else []
        self._complete = batches is not None

    @staticmethod
    def _pairs(loader: Iterable):
        for batch in loader:
            images, labels = batch[0], batch[1]
            if images is None:  # every image of the batch was unreadable (analyze's loader)
                continue
            yield images, torch.as_tensor(labels)

    def __iter__(self):
        if self.cache is not None and self._complete:
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


class TrainedControls:
    """The trained model's and the input's control statistics, fed one batch of images and model maps at a time
    (by :func:`run_controls`, or by the statistics pass of :func:`timm_u1.analysis.analyze`, which computes the
    same maps)."""

    def __init__(self, num_classes: int, level: ControlLevel, mean: Sequence[float], std: Sequence[float],
                 seed: int = 0, logits: bool = False):
        self.num_classes, self.level, self.mean, self.std, self.seed = num_classes, level, mean, std, seed
        self.logits = logits  # whether the logits' hue is analysed (the model's outputs are the data's classes)
        self.model: Optional[MapControls] = None
        self.input: Optional[MapControls] = None
        self.references: List[torch.Tensor] = []  # per batch: the input's centroid-angle vectors

    def update(self, images: torch.Tensor, labels: torch.Tensor, fmap: torch.Tensor,
               logits: Optional[Callable[[], torch.Tensor]] = None) -> None:
        """Add a batch: its (transformed) images, labels, the trained model's maps of them and a function giving
        its logits (called only when the logits are analysed)."""
        fmap = fmap.float().cpu()
        inp = input_map(images, fmap.shape[-2:], self.mean, self.std)
        if self.model is None:
            self.model, self.input = _sources(self.num_classes, self.level, fmap.shape[1], inp.shape[1], self.seed)
        ref = self.input.update(inp, labels)
        self.model.update(fmap, labels, reference_phi=ref, logits=logits() if self.logits and logits else None)
        self.references.append(ref)


def _sources(num_classes: int, lv: ControlLevel, channels: int, input_channels: int, seed: int):
    """The MapControls of the trained model and of the input."""
    model = MapControls(num_classes, lv, channel_orders(channels, lv.orders, seed), seed, class_orders=lv.orders)
    inp = MapControls(num_classes, lv, channel_orders(input_channels, lv.orders, seed + 1), seed,
                      exponents=INPUT_EXPONENTS)
    return model, inp


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
    """The controls for ``layer`` of ``model`` over ``loader``.

    ``loader`` yields (images, labels[, ...]) batches already transformed for ``model`` (the images
    the controls use; label -1 = unlabelled), and is iterated once per network; ``mean`` / ``std``
    are the normalisation to undo for the input baseline. Returns the report's ``controls`` section;
    :func:`timm_u1.analysis.claims.verdicts` turns it into per-claim verdicts.
    """
    from tqdm.auto import tqdm

    lv = _level(level)
    data = ControlImages(loader)
    num_classes = len(class_names or ())
    trained = TrainedControls(num_classes, lv, mean, std, seed, logits=logit_classes_mismatch(model, num_classes) is None)
    model.eval().to(device)
    with torch.no_grad(), ActivationProbe(model, layer) as probe:
        for images, labels in tqdm(data, desc='controls: model + input', unit='batch', disable=not progress):
            x = images.to(device)
            trained.update(images, labels, probe(x), batch_logits(model, probe, x))
    return finish_controls(model, data, trained, layer, level, mean, std, seed, device, progress)


def _level(level: Union[str, ControlLevel]) -> ControlLevel:
    lv = resolve_level(level)
    if lv is None:
        raise ValueError("run_controls needs a control level; 'none' means: do not call it.")
    return lv


def finish_controls(
        model: nn.Module, data: ControlImages, trained: TrainedControls, layer: Optional[str],
        level: Union[str, ControlLevel], mean: Sequence[float], std: Sequence[float], seed: int,
        device: Union[str, torch.device], progress: bool) -> Dict[str, Any]:
    """The rest of :func:`run_controls` once ``trained`` holds every control image: the random networks (and,
    at a level with ``transforms``, the image-plane test), then the section."""
    from tqdm.auto import tqdm

    lv = _level(level)
    if trained.model is None:
        raise ValueError('The controls got no images.')
    follows: Dict[str, Any] = {}
    # no_grad, not inference_mode: the random networks made in here must stay trainable for BatchNorm
    with torch.no_grad():
        if lv.transforms:
            follows = {'model': follow_pass(model, data, layer, mean, std, device), 'random_init': []}
        randoms, how, calibrated = [], None, 0
        for k in tqdm(range(lv.seeds), desc='controls: random init', unit='seed', disable=not progress):
            net, how = random_init_copy(model, seed + 1000 + k)
            net.to(device)
            calibrated = recalibrate_batchnorm(net, data, layer, lv.calibration_images, device)
            ctl = MapControls(trained.num_classes, lv, None, seed + 2 + k)
            with ActivationProbe(net, layer) as probe:
                for (images, labels), ref in zip(data, trained.references):
                    x = images.to(device)
                    fmap = probe(x).float().cpu()
                    ctl.update(fmap, labels, reference_phi=ref,
                               logits=batch_logits(net, probe, x)() if trained.logits else None)
            randoms.append(ctl)
            if lv.transforms:
                follows['random_init'].append(follow_pass(net, data, layer, mean, std, device))
            del net
    out = assemble(trained.model, trained.input, randoms, lv, name=level if isinstance(level, str) else 'custom',
                   seeds=[seed + 1000 + k for k in range(lv.seeds)], initialisation=how, calibrated=calibrated,
                   seed=seed, logits=None if trained.logits else logit_classes_mismatch(model, trained.num_classes))
    if follows:
        out['follows_input'] = {
            'transforms': [name for name, _ in transformed_copies(next(iter(data))[0][:1])],
            'question': FOLLOW_QUESTION, **follows}
    return out


def controls_from_maps(
        batches: Iterable[Tuple[Any, ...]],
        num_classes: int,
        level: Union[str, ControlLevel] = 'fast',
        seed: int = 0,
) -> Dict[str, Any]:
    """The controls section from maps computed elsewhere: batches of (labels, model map, input map,
    [one map per random network]), all (B, C, H, W) on the same grid, optionally followed by the model's
    logits (B, classes) and [the logits of each random network]. For synthetic tests and for models that
    :func:`run_controls` cannot re-initialise."""
    lv = resolve_level(level)
    model_ctl = input_ctl = None
    randoms: List[MapControls] = []
    has_logits = False
    for labels, fmap, inp, rand_maps, *logits in batches:
        model_logits, rand_logits = logits if logits else (None, [None] * len(rand_maps))
        if model_ctl is None:
            model_ctl, input_ctl = _sources(num_classes, lv, fmap.shape[1], inp.shape[1], seed)
            randoms = [MapControls(num_classes, lv, None, seed + 2 + k) for k in range(len(rand_maps))]
            has_logits = model_logits is not None
        ref = input_ctl.update(inp, labels)
        model_ctl.update(fmap, labels, reference_phi=ref, logits=model_logits)
        for ctl, rmap, rlogits in zip(randoms, rand_maps, rand_logits):
            ctl.update(rmap, labels, reference_phi=ref, logits=rlogits)
    if model_ctl is None:
        raise ValueError('controls_from_maps got no batches.')
    return assemble(model_ctl, input_ctl, randoms, lv, name=level if isinstance(level, str) else 'custom',
                    seeds=list(range(len(randoms))), initialisation='given maps', calibrated=0, seed=seed,
                    logits=None if has_logits else 'no logits were given')


def assemble(model_ctl: MapControls, input_ctl: MapControls, randoms: Sequence[MapControls], lv: ControlLevel,
             name: str, seeds: Sequence[int], initialisation: Optional[str], calibrated: int, seed: int = 0,
             logits: Optional[str] = None) -> Dict[str, Any]:
    """The report's ``controls`` section from the streamed statistics of each source; ``logits``: why the logits'
    hue was not analysed (None: it was)."""
    sources: Dict[str, Any] = {'model': model_ctl.result(), 'input': input_ctl.result(), 'random_init': []}
    for ctl, s in zip(randoms, seeds):
        entry = ctl.result()
        entry['seed'] = s
        sources['random_init'].append(entry)
    extra = {'logits_skipped': logits} if logits else {}
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
        'concentration_model_vs_input': concentration_tests(model_ctl, input_ctl, seed),
        'informative': (f'locations whose nearest neighbour (cosine) among the locations of the other images of '
                        f'the first {lv.informative_images or "all"} control images has the image\'s class'),
        'sources': sources,
        **extra,
    }


# names this module exported in timm_u1 0.1, now in the module that holds their concept (until 0.3)
_MOVED = {
    'hue_vectors': 'angles', 'centroid_vectors': 'angles', 'FollowsInput': 'follows', 'verdicts': 'claims',
    'render_markdown': 'report',
}


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    new = 'controls_markdown' if name == 'render_markdown' else name
    warnings.warn(f'timm_u1.analysis.controls.{name} moved to timm_u1.analysis.{_MOVED[name]}.{new}; import it '
                  f'from there (the old path goes in timm_u1 0.3).', DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f'{__package__}.{_MOVED[name]}'), new)
