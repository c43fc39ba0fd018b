""" The file format of a saved memory, and the check of every field and tensor when it is loaded.

A saved memory is a folder::

    memory.safetensors   prototypes, prototype_norms, counts, pooled, pooled_labels
                         (+ vectors, vector_labels in instance mode)
    memory.json          flat like a timm pretrained_cfg: format, version, mode, backbone,
                         backbone_local, base_model, fingerprint, layer, num_features, grid_size, the
                         timm data config (input_size, interpolation, mean, std, crop_pct, crop_mode),
                         num_bins, centre_radius, k, dtype, class_names, num_images, num_vectors,
                         dataset, metrics, complete, build_progress, and the SHA-256 and size of
                         memory.safetensors

A hand-edited, tampered or damaged file is refused with one line naming the field or tensor, never
half-loaded.
"""
import math
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from .bins import MAX_BINS
from .storage import DTYPES, MODES

__all__ = [
    'MEMORY_FORMAT', 'MEMORY_VERSION', 'MEMORY_WEIGHTS', 'MEMORY_CONFIG', 'MEMORY_SUBFOLDER', 'BUILD_STATE',
    'DATA_CONFIG_FIELDS',
    'check_metadata', 'check_tensors',
]

MEMORY_FORMAT = 'timm_u1.memory'
MEMORY_VERSION = 1
MEMORY_WEIGHTS = 'memory.safetensors'
MEMORY_CONFIG = 'memory.json'
MEMORY_SUBFOLDER = 'memory'  # where a memory lives in a model repo
BUILD_STATE = '.memory-build'  # file stem of a build's checkpoints; hidden, so that a push never sends them
# the timm data config a memory's images are transformed with; all of them or none (raw features)
DATA_CONFIG_FIELDS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')
INTERPOLATIONS = ('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos')
CROP_MODES = ('center', 'squash', 'border')

Check = Callable[[Any], Optional[str]]  # None when the value is right, else what it must be


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) else 'must be a string'


def _integer(low: int, high: Optional[int] = None) -> Check:
    span = f'in [{low}, {high}]' if high is not None else f'>= {low}'
    return lambda v: None if _is_int(v) and v >= low and (high is None or v <= high) else f'must be an integer {span}'


def _number(low: float, low_open: bool = False) -> Check:
    def check(v: Any) -> Optional[str]:
        ok = _is_number(v) and (v > low if low_open else v >= low)
        return None if ok else f"must be a finite number {'>' if low_open else '>='} {low:g}"
    return check


def _choice(options) -> Check:
    return lambda v: None if isinstance(v, str) and v in options else f'must be one of {list(options)}'


def _numbers(positive: bool) -> Check:
    what = 'must be a list of finite numbers, one per channel' + (', each > 0' if positive else '')
    return lambda v: None if isinstance(v, list) and v and all(
        _is_number(x) and (x > 0 or not positive) for x in v) else what


def _class_names(v: Any) -> Optional[str]:
    ok = isinstance(v, list) and v and all(isinstance(n, str) for n in v) and len(set(v)) == len(v)
    return None if ok else 'must be list of distinct strings (not empty)'


def _metrics(v: Any) -> Optional[str]:
    ok = isinstance(v, dict) and all(isinstance(k, str) and (x is None or _is_number(x)) for k, x in v.items())
    return None if ok else 'must be an object of metric names and finite numbers'


def _sha256(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and re.fullmatch(r'sha256:[0-9a-f]{64}', v) else 'must be "sha256:" and 64 hex digits'


def _typed(kind: type, name: str) -> Check:
    return lambda v: None if isinstance(v, kind) and not (kind is not bool and isinstance(v, bool)) else f'must be {name}'


# every field memory.json may hold: (required, check). Unknown fields are kept, not refused.
_FIELDS: Dict[str, tuple] = {
    'mode': (True, _choice(MODES)),
    'backbone': (True, _optional(_string)),
    'backbone_local': (False, _optional(_string)),
    'base_model': (False, _optional(_string)),
    'fingerprint': (True, _optional(_string)),
    'layer': (True, _optional(_string)),
    'num_features': (True, _integer(1)),
    'grid_size': (True, lambda v: None if isinstance(v, list) and len(v) == 2 and all(
        _is_int(x) and x > 0 for x in v) else 'must be two positive integers'),
    'input_size': (False, lambda v: None if isinstance(v, list) and len(v) == 3 and all(
        _is_int(x) and x > 0 for x in v) else 'must be three positive integers (C, H, W)'),
    'interpolation': (False, _choice(INTERPOLATIONS)),
    'mean': (False, _numbers(positive=False)),
    'std': (False, _numbers(positive=True)),
    'crop_pct': (False, _number(0, low_open=True)),
    'crop_mode': (False, _choice(CROP_MODES)),
    'num_bins': (True, _integer(0, MAX_BINS)),
    'centre_radius': (True, _number(0)),
    'k': (True, _integer(1)),
    'dtype': (True, _choice(sorted(DTYPES))),
    'class_names': (True, _class_names),
    'num_images': (False, _integer(0)),
    'num_vectors': (False, _optional(_integer(0))),
    'dataset': (False, _optional(_string)),
    'metrics': (False, _optional(_metrics)),
    'complete': (True, _typed(bool, 'bool (true or false)')),
    'build_progress': (False, _optional(_typed(dict, 'an object'))),
    'safetensors_sha256': (True, _sha256),
    'safetensors_size': (True, _integer(0)),
}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def _field_error(folder: Path, field: str, what: str, value: Any = None) -> ValueError:
    got = f', got {_short(value)}' if value is not None else ''
    return ValueError(
        f'{folder / MEMORY_CONFIG}: "{field}" {what}{got}; the file is damaged or was edited by hand. '
        f'Rebuild or re-download the memory.')


def check_metadata(meta: Any, folder: Path) -> None:
    """Check every field of a loaded ``memory.json``; raise a one-line ``ValueError`` naming the first wrong one."""
    folder = Path(folder)
    if not isinstance(meta, dict) or meta.get('format') != MEMORY_FORMAT:
        found = meta.get('format') if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f'{folder / MEMORY_CONFIG} is not a timm_u1 memory ("format" is {_short(found)}, '
                         f'not {MEMORY_FORMAT!r}).')
    version = meta.get('version', 0)
    if not _is_int(version) or version < 0:
        raise _field_error(folder, 'version', 'must be an integer >= 0', version)
    if version > MEMORY_VERSION:
        raise ValueError(
            f'{folder / MEMORY_CONFIG}: "version" is {version}; this timm_u1 reads memories up to version '
            f'{MEMORY_VERSION}. Upgrade timm_u1.')
    for field, (required, check) in _FIELDS.items():
        if field not in meta:
            if required:
                raise _field_error(folder, field, 'is missing')
            continue
        problem = check(meta[field])
        if problem:
            raise _field_error(folder, field, problem, meta[field])
    present = [f for f in DATA_CONFIG_FIELDS if f in meta]
    if present and len(present) != len(DATA_CONFIG_FIELDS):
        missing = next(f for f in DATA_CONFIG_FIELDS if f not in meta)
        raise _field_error(folder, missing, f'is missing beside {present}: a memory records its whole data config '
                                            f'or none, and no image is transformed with defaults')
    for field in ('mean', 'std'):
        if present and len(meta[field]) != meta['input_size'][0]:
            raise _field_error(folder, field, f"must have one value per input channel ({meta['input_size'][0]})",
                               meta[field])
    if not meta['complete'] and not isinstance(meta.get('build_progress'), dict):
        raise _field_error(folder, 'build_progress', 'must describe where an unfinished build stopped',
                           meta.get('build_progress'))


def check_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], path: Path) -> None:
    """Check the tensors of ``memory.safetensors`` against a checked ``memory.json``: names, dtypes,
    shapes, finite values, label ranges and counts. Raises a one-line ``ValueError`` naming the tensor."""
    c, nb, d = len(meta['class_names']), meta['num_bins'] + 1, meta['num_features']
    h, w = meta['grid_size']
    n = meta.get('num_images', tensors['pooled'].shape[0] if 'pooled' in tensors else 0)
    dtype = DTYPES[meta['dtype']]
    expected = {
        'prototypes': (torch.float32, (c, nb, d), '"class_names", "num_bins", "num_features"'),
        'prototype_norms': (torch.float32, (c, nb), '"class_names", "num_bins"'),
        'counts': (torch.int64, (c, nb), '"class_names", "num_bins"'),
        'pooled': (dtype, (n, d), '"num_images", "num_features", "dtype"'),
        'pooled_labels': (torch.int64, (n,), '"num_images"'),
    }
    if meta['mode'] == 'instance':
        expected['vectors'] = (dtype, (n * h * w, d), '"num_images" x "grid_size", "num_features", "dtype"')
        expected['vector_labels'] = (torch.int64, (n * h * w,), '"num_images" x "grid_size"')

    def bad(name: str, what: str) -> ValueError:
        return ValueError(f'{path}: tensor {name!r} {what}; the file is damaged or was edited. '
                          f'Rebuild or re-download the memory.')

    for name, (kind, shape, fields) in expected.items():
        if name not in tensors:
            raise bad(name, f'is missing from a {meta["mode"]} memory')
        t = tensors[name]
        if t.dtype != kind or tuple(t.shape) != shape:
            raise bad(name, f'is {t.dtype} {tuple(t.shape)}, but memory.json ({fields}) implies {kind} {shape}')
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise bad(name, 'holds NaN or infinite values')
    if (tensors['prototype_norms'] < 0).any() or (tensors['counts'] < 0).any():
        raise bad('prototype_norms' if (tensors['prototype_norms'] < 0).any() else 'counts', 'holds negative values')
    for name in ('pooled_labels', 'vector_labels'):
        if name in expected and tensors[name].numel() and not (
                (tensors[name] >= 0) & (tensors[name] < c)).all():
            raise bad(name, f'holds labels outside [0, {c - 1}] ("class_names")')
    if int(tensors['counts'].sum()) != n * h * w:
        raise bad('counts', f'counts {int(tensors["counts"].sum())} vectors, but memory.json ("num_images" '
                            f'{n} x "grid_size" {h}x{w}) implies {n * h * w}')
    if meta['mode'] == 'instance' and meta.get('num_vectors') not in (None, n * h * w):
        raise ValueError(f'{path.parent / MEMORY_CONFIG}: "num_vectors" is {meta["num_vectors"]}, but the memory '
                         f'holds {n * h * w} vectors; the file is damaged or was edited. Rebuild or re-download the memory.')
