""" The first conv of a timm model, found through timm's own metadata, and the listing of timm
architectures by the kernel size of that conv.

:func:`first_conv` reads ``model.pretrained_cfg["first_conv"]`` (timm names the module there for
every architecture whose input channels can be adapted); only where timm leaves it empty does it fall
back to the first ``nn.Conv2d`` in module order, and it says so in ``Stem.found_by``.

:func:`list_stems` builds each architecture on the meta device (shapes, no weights allocated or
initialised), so the ~1400 architectures of timm list in minutes without gigabytes of memory. The
result is cached per timm version in ``~/.cache/timm_u1`` (``$TIMM_U1_CACHE``), written as it grows,
so an interrupted listing resumes and a second one is instant.
"""
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..files import read_json, write_json

__all__ = ['Stem', 'StemInfo', 'first_conv', 'stem_info', 'list_stems', 'stems_cache_path']

_logger = logging.getLogger(__name__)
_CACHE_FORMAT = 'timm_u1.stems/1'
_SAVE_EVERY = 10.0  # seconds between cache writes while listing


@dataclass
class Stem:
    """A model's first conv: its module name, weight (filters, in_chans, kH, kW) and how it was found."""
    name: str
    weight: torch.Tensor
    stride: Tuple[int, int]
    found_by: str

    @property
    def kernel(self) -> Tuple[int, int]:
        return tuple(self.weight.shape[-2:])


def _conv_weight(module: nn.Module, name: str, model_name: str) -> torch.Tensor:
    weight = getattr(module, 'weight', None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = None if weight is None else tuple(weight.shape)
        raise ValueError(
            f'{model_name}: its first conv {name!r} ({type(module).__name__}) has no 4-D conv weight (weight shape '
            f'{shape}); the filter analysis needs a 2-D convolution as the first layer.')
    return weight


def first_conv(model: nn.Module) -> Stem:
    """The first conv of a timm model (a ``u1_`` twin included): ``pretrained_cfg["first_conv"]``,
    else the first ``nn.Conv2d``."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    model_name = cfg.get('architecture') or type(model).__name__
    names = cfg.get('first_conv')
    if isinstance(names, (list, tuple)):
        names = names[0] if names else None
    if names:
        try:
            module = model.get_submodule(names)
        except AttributeError as e:
            raise ValueError(
                f'{model_name}: pretrained_cfg["first_conv"] names {names!r}, which is not a module of the model '
                f'({e}); set model.pretrained_cfg["first_conv"] to the first conv\'s module name.') from e
        found_by = 'pretrained_cfg["first_conv"]'
    else:
        names, module = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), (None, None))
        if module is None:
            raise ValueError(f'{model_name} has no pretrained_cfg["first_conv"] and no nn.Conv2d; nothing to analyse.')
        found_by = 'first nn.Conv2d (pretrained_cfg has no first_conv)'
    weight = _conv_weight(module, names, model_name)
    stride = getattr(module, 'stride', (1, 1))
    stride = tuple(stride) if isinstance(stride, (list, tuple)) else (int(stride), int(stride))
    return Stem(names, weight.detach(), stride, found_by)


@dataclass
class StemInfo:
    """One row of :func:`list_stems`: an architecture's first conv (no weights), or why it could not be built."""
    architecture: str
    first_conv: Optional[str] = None
    kernel: Optional[List[int]] = None
    stride: Optional[List[int]] = None
    in_chans: Optional[int] = None
    filters: Optional[int] = None
    found_by: Optional[str] = None
    error: Optional[str] = None

    @property
    def kernel_size(self) -> Optional[int]:
        """The smaller side of the kernel (what a fit's minimum size is compared with)."""
        return min(self.kernel) if self.kernel else None


def stem_info(architecture: str) -> StemInfo:
    """The first conv of ``architecture`` built on the meta device: shapes only, nothing allocated."""
    import timm

    try:
        with torch.device('meta'):
            model = timm.create_model(architecture, pretrained=False)
        stem = first_conv(model)
    except Exception as e:  # any architecture timm cannot build on meta is listed with its error, not fatal
        return StemInfo(architecture, error=f'{type(e).__name__}: {e}'.splitlines()[0][:200])
    n, c, h, w = stem.weight.shape
    return StemInfo(architecture, stem.name, [h, w], list(stem.stride), c, n, stem.found_by)


def stems_cache_path() -> Path:
    """The listing cache of this timm version."""
    import timm

    from ..core.lite0 import cache_dir

    return cache_dir() / f'stems-timm-{timm.__version__}.json'


_FIELDS = {'architecture': str, 'first_conv': (str, type(None)), 'kernel': (list, type(None)),
           'stride': (list, type(None)), 'in_chans': (int, type(None)), 'filters': (int, type(None)),
           'found_by': (str, type(None)), 'error': (str, type(None))}


def _read_cache(path: Path) -> Dict[str, StemInfo]:
    if not path.is_file():
        return {}
    data = read_json(path)
    fix = f'delete {path} to list the stems afresh'
    if not isinstance(data, dict) or data.get('format') != _CACHE_FORMAT or not isinstance(data.get('stems'), list):
        raise ValueError(f'{path} is not a stems listing of format {_CACHE_FORMAT!r}; {fix}.')
    out = {}
    for i, row in enumerate(data['stems']):
        if not isinstance(row, dict) or set(row) != set(_FIELDS):
            raise ValueError(f'{path}: stems[{i}] must have the fields {sorted(_FIELDS)}; {fix}.')
        for key, kind in _FIELDS.items():
            if not isinstance(row[key], kind) or isinstance(row[key], bool):
                raise ValueError(f'{path}: stems[{i}].{key} has the wrong type ({type(row[key]).__name__}); {fix}.')
        for key in ('kernel', 'stride'):
            if row[key] is not None and (len(row[key]) != 2 or not all(isinstance(v, int) and v > 0 for v in row[key])):
                raise ValueError(f'{path}: stems[{i}].{key} must be two positive integers, got {row[key]}; {fix}.')
        out[row['architecture']] = StemInfo(**row)
    return out


def _write_cache(path: Path, known: Dict[str, StemInfo]) -> None:
    write_json(path, {'format': _CACHE_FORMAT, 'stems': [asdict(v) for v in sorted(known.values(), key=lambda s: s.architecture)]})


def list_stems(
        pattern: str = '*',
        min_kernel: Optional[int] = None,
        progress: bool = True,
        cache: Optional[Path] = None,
) -> List[StemInfo]:
    """timm architectures matching ``pattern`` (fnmatch, as ``timm.list_models``) with their first conv;
    ``u1_`` twins (their base's stem) only when the pattern starts with ``u1_``.

    Architectures are built on the meta device (no weights); results are cached in ``cache``
    (default :func:`stems_cache_path`). With ``min_kernel``, only stems whose smaller kernel side is
    at least that are returned (and no architecture that failed to build).
    """
    import timm
    from tqdm.auto import tqdm

    # a u1_ twin has its base's stem: listed only when the pattern asks for twins
    names = [n for n in timm.list_models(pattern) if not n.startswith('u1_') or pattern.startswith('u1_')]
    if not names:
        raise ValueError(f'no timm architecture matches {pattern!r}; try a pattern such as "resnet*" (fnmatch syntax).')
    path = Path(cache) if cache is not None else stems_cache_path()
    known = _read_cache(path)
    todo = [n for n in names if n not in known]
    last = time.monotonic()
    try:
        for name in tqdm(todo, desc='stems (meta device)', unit='arch', disable=not progress or not todo):
            known[name] = stem_info(name)
            if time.monotonic() - last >= _SAVE_EVERY:
                _write_cache(path, known)
                last = time.monotonic()
    finally:  # an interrupted listing keeps what it built, and the next one resumes there
        if todo:
            _write_cache(path, known)
    _logger.info('listed %d architectures (%d from the cache %s)', len(names), len(names) - len(todo), path)
    rows = [known[n] for n in names]
    if min_kernel is not None:
        rows = [r for r in rows if r.kernel_size is not None and r.kernel_size >= min_kernel]
    return rows

