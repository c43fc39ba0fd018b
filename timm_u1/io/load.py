""" Load a model folder or Hub repo in the layout of :mod:`timm_u1.io.save`: as its ``u1_`` twin
(:func:`from_pretrained`) or as it was saved (:func:`create_model_from_source`), every file and
config field checked, the weights checked to fit before any is copied. """
import logging
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

import timm

from ..core.u1 import U1_PREFIX
from ..files import file_sha256
from .config import (
    CONFIG_NAME, RECORD_KEY, U1_KEY, WEIGHTS_NAME, base_name, is_u1_config, read_config, timm_parts, u1_settings,
)
from .download import download_folder
from .errors import IntegrityError, UnsafeCheckpointError
from .fit import check_fit, classifier_keys, weights_shapes
from .specs import HubRef, model_source
from .verify import verify_folder

__all__ = ['from_pretrained', 'create_model_from_source', 'check_model_folder', 'PICKLE_WEIGHTS']

_logger = logging.getLogger(__name__)

# checkpoints that need unpickling; refused unless the caller opts in (then weights_only=True)
PICKLE_WEIGHTS = ('pytorch_model.bin', 'pytorch_model.pth', 'model.pth')


def _build(config: Mapping[str, Any], folder: Path, twin: bool, where: str, hub_ref: Optional[HubRef], **kwargs) -> nn.Module:
    """The model ``config`` describes, randomly initialised: its twin, or the architecture it names."""
    pretrained_cfg, model_args = timm_parts(config)
    if hub_ref:
        pretrained_cfg.update(hf_hub_id=hub_ref.repo_id, source='hf-hub', file=None)
    if twin:
        pretrained_cfg[U1_KEY] = u1_settings(config, folder / CONFIG_NAME)
    name = U1_PREFIX + base_name(config['architecture']) if twin else base_name(config['architecture'])
    if not timm.is_model(name):
        raise ValueError(
            f"{where}: config.json names architecture '{config['architecture']}', which this timm "
            f'({timm.__version__}) does not know.')
    try:
        return timm.create_model(name, pretrained=False, pretrained_cfg=pretrained_cfg, **{**model_args, **kwargs})
    # what timm's constructors raise for arguments of the wrong type or value
    except (TypeError, ValueError, AssertionError, RuntimeError, AttributeError, KeyError, IndexError) as e:
        raise ValueError(
            f'{where}: config.json\'s "model_args" {model_args} do not build {name} ({type(e).__name__}: {e}). '
            f'The file is damaged or was edited by hand; save the model again.') from e


def _check_recorded_hash(folder: Path, config: Mapping[str, Any]) -> None:
    """The weights' SHA-256 and size against those ``config.json`` records (Hub folders too: a config and
    weights from two saves are refused wherever they come from)."""
    record = config.get(RECORD_KEY) or {}
    weights = folder / WEIGHTS_NAME
    if record.get('weights_sha256') and weights.is_file():
        size, digest = weights.stat().st_size, file_sha256(weights)
        if digest != record['weights_sha256'] or size != record.get('weights_size', size):
            raise IntegrityError(folder, {WEIGHTS_NAME: (
                f'SHA-256 {digest[:12]}... ({size} bytes) differs from the {record["weights_sha256"][:12]}... '
                f'recorded in config.json (corrupt, or config and weights come from two saves)')})


def _pickle_state_dict(folder: Path, where: str, allow_pickle: bool) -> Dict[str, torch.Tensor]:
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if not pickles:
        raise FileNotFoundError(f'{folder} has no weights ({WEIGHTS_NAME} or one of {", ".join(PICKLE_WEIGHTS)}).')
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f'{where} has pickle weights only ({pickles[0]}), no {WEIGHTS_NAME}. Unpickling can run '
            f'code; pass allow_pickle=True if you trust the source (it is then loaded with '
            f'torch.load(weights_only=True)), or convert it to safetensors.')
    state_dict = torch.load(folder / pickles[0], map_location='cpu', weights_only=True)
    return state_dict.get('state_dict', state_dict)


def _load_folder(
        folder: Path, twin: bool, pretrained: bool = True, hub_ref: Optional[HubRef] = None,
        allow_pickle: bool = False, **kwargs,
) -> nn.Module:
    """The model a checked folder describes, as its twin or as plain timm builds it, weights checked and loaded."""
    config = read_config(folder)
    where = str(hub_ref) if hub_ref else str(folder)
    if config['architecture'].startswith(U1_PREFIX):
        _logger.warning(
            "%s: config.json names architecture '%s' (written by timm_u1 0.1.0, or by timm's save_for_hf / "
            'push_to_hf_hub on a twin), which plain timm cannot load. Save it again with '
            'timm_u1.save_pretrained, or push it with `timm-u1 push`, which writes the base architecture.',
            where, config['architecture'])
    model = _build(config, folder, twin, where, hub_ref, **kwargs)
    base_model = hub_ref.repo_id if hub_ref else (config.get(RECORD_KEY) or {}).get('base_model')
    if base_model:
        model.pretrained_cfg['base_model'] = base_model
    if not pretrained:
        return model
    new_head = 'num_classes' in kwargs and kwargs['num_classes'] != config.get('num_classes', kwargs['num_classes'])
    skip = classifier_keys(model) if new_head else []
    _check_recorded_hash(folder, config)
    if (folder / WEIGHTS_NAME).is_file():
        from safetensors.torch import load_file

        check_fit(model, weights_shapes(folder / WEIGHTS_NAME), config, where, skip)
        state_dict = load_file(str(folder / WEIGHTS_NAME))
    else:
        state_dict = _pickle_state_dict(folder, where, allow_pickle)
        check_fit(model, {k: tuple(v.shape) for k, v in state_dict.items()}, config, where, skip)
    for key in skip:
        state_dict.pop(key, None)
    model.load_state_dict(state_dict, strict=not skip)
    return model


def _fetch(source: Union[HubRef, Path], cache_dir=None, token=None, endpoint=None, local_files_only: bool = False) -> Path:
    if isinstance(source, HubRef):
        return download_folder(
            source.repo_id, revision=source.revision, required=(CONFIG_NAME,), cache_dir=cache_dir, token=token,
            endpoint=endpoint, local_files_only=local_files_only)
    if not source.is_dir():
        raise FileNotFoundError(f'{source} is not a folder.')
    return verify_folder(source, required=(CONFIG_NAME,))


def from_pretrained(
        name_or_path,
        revision: Optional[str] = None,
        cache_dir=None,
        as_u1: bool = False,
        allow_pickle: bool = False,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        **kwargs,
) -> nn.Module:
    """Load a u1 model, with its weights, from a local folder or a Hub repo (``ORG/NAME[@REV]``, ``hf-hub:...``).

    Hub repos are fetched with :func:`~timm_u1.io.download.download_folder` (pinned to ``revision``
    when given, kept in the Hugging Face cache, read from it offline with ``HF_HUB_OFFLINE=1``, each
    file checked against the Hub's hashes); local folders are checked by
    :func:`~timm_u1.io.verify.verify_folder`. Every field of ``config.json`` is checked, and the weights
    against the SHA-256 it records. The weights must fit the config (number of classes,
    architecture): nothing is re-initialised unless ``num_classes`` asks for a new head. The folder
    must be saved by timm_u1; ``as_u1=True`` loads a plain timm checkpoint (e.g. one saved by
    ``timm.models.save_for_hf``) into its u1 twin. Weights come from ``model.safetensors``; a folder
    with pickle weights only is refused unless ``allow_pickle=True``, and then read with
    ``torch.load(..., weights_only=True)``. ``kwargs`` go to ``timm.create_model``.
    """
    source = model_source(name_or_path, revision)
    if isinstance(source, Path) and source.is_file():
        raise ValueError(f"'{name_or_path}' is a file: from_pretrained loads a model folder or a Hub repo; a timm "
                         f'training checkpoint loads with timm_u1.io.create_model_from_spec(path).')
    if source is None:
        raise ValueError(f"'{name_or_path}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
    folder = _fetch(source, cache_dir, token, endpoint, local_files_only)
    config = read_config(folder)
    if not is_u1_config(config) and not as_u1:
        raise ValueError(
            f"{name_or_path}: config.json names architecture '{config['architecture']}', not a u1_ "
            f'architecture. Load it with timm.create_model, or pass as_u1=True to load these '
            f'weights into its u1 twin.')
    return _load_folder(folder, twin=True, hub_ref=source if isinstance(source, HubRef) else None,
                        allow_pickle=allow_pickle, **kwargs)


def create_model_from_source(source: Union[HubRef, Path], pretrained: bool = True, **kwargs) -> nn.Module:
    """The model a Hub repo or a local folder holds: the u1 twin when timm_u1 saved it, the plain timm
    model otherwise. Downloads and checks as :func:`from_pretrained` does."""
    folder = _fetch(source)
    config = read_config(folder)
    return _load_folder(
        folder, twin=is_u1_config(config), pretrained=pretrained,
        hub_ref=source if isinstance(source, HubRef) else None, **kwargs)


def check_model_folder(folder) -> Dict[str, Any]:
    """Everything a load checks, without reading the weights' values: files whole, every config field,
    the recorded SHA-256, and that the weights fit the architecture the config names (the model is
    built on the meta device). Returns the config. Run before a push."""
    folder = verify_folder(folder, required=(CONFIG_NAME, WEIGHTS_NAME))
    config = read_config(folder)
    _check_recorded_hash(folder, config)
    shapes = weights_shapes(folder / WEIGHTS_NAME)
    with torch.device('meta'):
        model = _build(config, folder, is_u1_config(config), str(folder), None)
    check_fit(model, shapes, config, str(folder))
    return config
