""" What a model folder's ``config.json`` holds, every field checked when it is read.

A folder saved by timm_u1 is a timm folder (``timm.models.save_for_hf``'s ``config.json``) plus two
top-level keys timm ignores: ``u1`` (the twin's U(1) settings) and ``timm_u1`` (the record: the
weights' SHA-256 and size, base model, what the card shows). Folders written by timm_u1 0.1.0 (and by
timm's own ``save_for_hf`` on a twin) name the architecture ``u1_<arch>`` and keep the settings in
``pretrained_cfg["u1"]``; they still load.
"""
import math
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from timm.models import PretrainedCfg

from ..core.u1 import U1_PREFIX, U1Config
from ..files import read_json

__all__ = [
    'CONFIG_NAME', 'WEIGHTS_NAME', 'CARD_NAME', 'U1_KEY', 'RECORD_KEY', 'FORMAT_VERSION', 'read_config',
    'check_config', 'twin_name', 'base_name', 'is_u1_config', 'u1_settings', 'timm_parts', 'PRETRAINED_CFG_KEYS',
]

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
U1_KEY = 'u1'  # the twin's U(1) settings
RECORD_KEY = 'timm_u1'  # what timm_u1 records: weights hash and size, base model, card data
FORMAT_VERSION = 2  # 1: timm_u1 0.1.0 (architecture "u1_...", pretrained_cfg["u1"], no record)
PRETRAINED_CFG_KEYS = frozenset(f.name for f in fields(PretrainedCfg))  # what timm's PretrainedCfg accepts

# a check is (predicate, what the value must be)
Check = Tuple[Callable[[Any], bool], str]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


STRING: Check = (lambda v: isinstance(v, str), 'a string')
NAME: Check = (lambda v: isinstance(v, str) and bool(v.strip()), 'a non-empty string')
BOOL: Check = (lambda v: isinstance(v, bool), 'true or false')
COUNT: Check = (lambda v: _integer(v) and v >= 0, 'an integer >= 0')
INTEGER: Check = (_integer, 'an integer')
NUMBER: Check = (_number, 'a finite number')
POSITIVE: Check = (lambda v: _number(v) and v > 0, 'a number > 0')
FRACTION: Check = (lambda v: _number(v) and 0 < v <= 1, 'a number in (0, 1]')
SHA256: Check = (lambda v: isinstance(v, str) and re.fullmatch(r'[0-9a-f]{64}', v) is not None, '64 hex digits')
MAPPING: Check = (lambda v: isinstance(v, dict), 'a mapping')
RELATIVE: Check = (lambda v: isinstance(v, str) and bool(v) and not Path(v).is_absolute() and '..' not in Path(v).parts,
                   'a path inside the folder')


def optional(check: Check) -> Check:
    return lambda v: v is None or check[0](v), f'{check[1]} or null'


def list_of(check: Check, length: Optional[int] = None) -> Check:
    what = f'a list of {length} items, each {check[1]}' if length else f'a list, each item {check[1]}'
    return (lambda v: isinstance(v, list) and (length is None or len(v) == length) and all(check[0](x) for x in v),
            what)


def mapping_of(check: Check) -> Check:
    return (lambda v: isinstance(v, dict) and all(isinstance(k, str) and check[0](v[k]) for k in v),
            f'a mapping of names to {check[1]}')


def one_of(*checks: Check) -> Check:
    return lambda v: any(c[0](v) for c in checks), ' or '.join(c[1] for c in checks)


def choice(*values: str) -> Check:
    return lambda v: v in values, 'one of ' + ', '.join(repr(x) for x in values)


SIZE = list_of((lambda v: _integer(v) and v > 0, 'an integer > 0'), length=3)
NAMES = one_of(STRING, list_of(STRING))

# timm's PretrainedCfg fields (timm.models.PretrainedCfg), as JSON gives them
PRETRAINED_CFG_FIELDS: Dict[str, Check] = {
    'url': optional(NAMES), 'file': optional(STRING), 'hf_hub_id': optional(STRING),
    'hf_hub_filename': optional(STRING), 'source': optional(STRING), 'architecture': optional(STRING),
    'tag': optional(STRING), 'custom_load': BOOL, 'input_size': SIZE, 'test_input_size': optional(SIZE),
    'min_input_size': optional(SIZE), 'fixed_input_size': BOOL,
    'interpolation': choice('nearest', 'bilinear', 'bicubic', 'box', 'hamming', 'lanczos', 'random'),
    'crop_pct': FRACTION, 'test_crop_pct': optional(FRACTION), 'crop_mode': choice('center', 'squash', 'border'),
    'mean': list_of(NUMBER), 'std': list_of(POSITIVE), 'num_classes': COUNT, 'label_offset': optional(INTEGER),
    'label_names': optional(list_of(STRING)), 'label_descriptions': optional(mapping_of(STRING)),
    'pool_size': optional(list_of(COUNT)), 'test_pool_size': optional(list_of(COUNT)),
    'first_conv': optional(NAMES), 'classifier': optional(NAMES), 'license': optional(STRING),
    'description': optional(STRING), 'origin_url': optional(STRING), 'paper_name': optional(STRING),
    'paper_ids': optional(NAMES), 'notes': optional(list_of(STRING)),
    'state_dict': (lambda v: v is None, 'absent (weights live in the weights file)'),
}
TOP_FIELDS: Dict[str, Check] = {
    'architecture': NAME, 'num_classes': COUNT, 'num_features': COUNT, 'global_pool': STRING,
    'pretrained_cfg': MAPPING, 'model_args': mapping_of((lambda v: True, 'any value')),
    'label_names': list_of(STRING), 'label_descriptions': mapping_of(STRING), U1_KEY: MAPPING, RECORD_KEY: MAPPING,
}
RECORD_FIELDS: Dict[str, Check] = {
    'format_version': (lambda v: v == FORMAT_VERSION, f'{FORMAT_VERSION} (this timm_u1 writes and reads format {FORMAT_VERSION})'),
    'weights_sha256': optional(SHA256), 'weights_size': optional(COUNT), 'base_model': optional(STRING),
    'params': optional(COUNT), 'gmacs': optional((lambda v: _number(v) and v >= 0, 'a number >= 0')),
    'card': MAPPING,
}
CARD_FIELDS: Dict[str, Check] = {
    'metrics': optional(mapping_of(optional(one_of(NUMBER, STRING, BOOL)))), 'dataset': optional(STRING),
    'eval_split': optional(STRING), 'training': optional(STRING), 'plots': list_of(RELATIVE),
    'license': optional(STRING),
}
# the Python type of each U1Config field, as JSON gives it
_U1_TYPES: Dict[type, Check] = {float: NUMBER, int: INTEGER, bool: BOOL, str: STRING}


def _bad(path: Path, field: str, what: str, value: Any) -> ValueError:
    shown = repr(value) if len(repr(value)) < 80 else repr(value)[:77] + '...'
    return ValueError(f'{path}: "{field}" must be {what}, got {shown}. The file is damaged or was edited by '
                      f'hand; save the model again.')


def _check_fields(values: Mapping[str, Any], schema: Mapping[str, Check], path: Path, prefix: str = '') -> None:
    for key, (ok, what) in schema.items():
        if key in values and not ok(values[key]):
            raise _bad(path, prefix + key, what, values[key])


def u1_settings(config: Mapping[str, Any], path: Path = Path(CONFIG_NAME)) -> Dict[str, Any]:
    """The twin's U(1) settings in a config (top-level ``u1``, or 0.1.0's ``pretrained_cfg["u1"]``), checked."""
    where = U1_KEY if U1_KEY in config else f'pretrained_cfg.{U1_KEY}'
    raw = config[U1_KEY] if U1_KEY in config else (config.get('pretrained_cfg') or {}).get(U1_KEY)
    if raw is None:
        return U1Config().to_dict()
    if not isinstance(raw, dict):
        raise _bad(path, where, 'a mapping of U(1) settings', raw)
    types = {f.name: f.type for f in fields(U1Config)}
    for key, value in raw.items():
        check = _U1_TYPES.get(types.get(key))
        if check is not None and not check[0](value):
            raise _bad(path, f'{where}.{key}', check[1], value)
    try:
        return U1Config.from_dict(raw).to_dict()
    except (TypeError, ValueError) as e:
        raise ValueError(f'{path}: bad U(1) settings in "{where}" {raw!r}: {e}') from e


def check_config(config: Any, path: Path) -> None:
    """Raise a ``ValueError`` naming the first field of ``config`` that is not what timm or timm_u1 reads."""
    if not isinstance(config, dict) or not NAME[0](config.get('architecture')):
        raise ValueError(f'{path} names no architecture; it is not a timm model config.')
    _check_fields(config, TOP_FIELDS, path)
    pretrained_cfg = config.get('pretrained_cfg')
    if pretrained_cfg is not None:
        _check_fields(pretrained_cfg, PRETRAINED_CFG_FIELDS, path, 'pretrained_cfg.')
        channels = (pretrained_cfg.get('input_size') or [None])[0]
        for key in ('mean', 'std'):
            n = len(pretrained_cfg.get(key) or ())
            if n and channels and n not in (1, channels):
                raise _bad(path, f'pretrained_cfg.{key}', f'1 or {channels} numbers (input_size has {channels} '
                           f'channels)', pretrained_cfg[key])
    record = config.get(RECORD_KEY)
    if record is not None:
        _check_fields(record, RECORD_FIELDS, path, f'{RECORD_KEY}.')
        _check_fields(record.get('card') or {}, CARD_FIELDS, path, f'{RECORD_KEY}.card.')
    labels, num_classes = config.get('label_names'), config.get('num_classes')
    if labels is not None and num_classes is not None and len(labels) != num_classes:
        raise ValueError(f'{path}: {len(labels)} label names for num_classes={num_classes}. The file is damaged '
                         f'or was edited by hand; save the model again.')
    u1_settings(config, path)


def read_config(folder) -> Dict[str, Any]:
    """The ``config.json`` of a saved model folder, every field checked (:func:`check_config`)."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.')
    config = read_json(path)
    check_config(config, path)
    return config


def base_name(architecture: str) -> str:
    return architecture[len(U1_PREFIX):] if architecture.startswith(U1_PREFIX) else architecture


def twin_name(config: Mapping[str, Any]) -> str:
    return U1_PREFIX + base_name(config['architecture'])


def is_u1_config(config: Mapping[str, Any]) -> bool:
    """A folder saved by timm_u1: the ``u1`` key (format 2), or a ``u1_`` architecture (0.1.0, timm on a twin)."""
    return U1_KEY in config or config['architecture'].startswith(U1_PREFIX)


def timm_parts(config: Mapping[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """``(pretrained_cfg, model_args)`` to build the model a checked config describes, as timm's
    ``local-dir:`` does: the top-level ``num_classes`` and labels override the ``pretrained_cfg``'s, whose
    keys are narrowed to the fields of timm's ``PretrainedCfg``.

    timm's own reader (``load_model_config_from_path``) is not public API; this is the part of it a
    folder written by ``save_for_hf`` needs.
    """
    if 'pretrained_cfg' in config:
        pretrained_cfg = dict(config['pretrained_cfg'])
    else:  # timm's legacy single-dict config: the whole file is the pretrained_cfg
        pretrained_cfg = {k: v for k, v in config.items() if k not in ('architecture', 'num_features', 'model_args')}
        if 'labels' in pretrained_cfg:
            pretrained_cfg['label_names'] = pretrained_cfg.pop('labels')
    for key in ('num_classes', 'label_names', 'label_descriptions'):
        if key in config:
            pretrained_cfg[key] = config[key]
    pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k in PRETRAINED_CFG_KEYS}
    pretrained_cfg['architecture'] = base_name(config['architecture'])
    model_args = dict(config.get('model_args') or {})
    # as timm's reader does: the input the weights were saved for follows the recorded model arguments
    if model_args.get('dynamic_img_size') or model_args.get('strict_img_size') is False or model_args.get('use_naflex'):
        pretrained_cfg['fixed_input_size'] = False
    if model_args.get('in_chans') is not None:
        size = pretrained_cfg.get('input_size', (3, 224, 224))
        pretrained_cfg['input_size'] = (model_args['in_chans'], *size[1:])
        for key in ('test_input_size', 'min_input_size'):
            if pretrained_cfg.get(key):
                pretrained_cfg[key] = (model_args['in_chans'], *pretrained_cfg[key][1:])
    if model_args.get('img_size') is not None and pretrained_cfg.get('fixed_input_size', False):
        size = model_args['img_size']
        size = (size, size) if isinstance(size, int) else tuple(size)
        pretrained_cfg['input_size'] = (pretrained_cfg['input_size'][0], *size)
    return pretrained_cfg, model_args
