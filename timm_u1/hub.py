""" Hub-layout save and load of u1 models.

A saved folder is what timm's ``create_model("hf-hub:...")`` and ``create_model("local-dir:...")``
read: ``config.json`` (timm's format; architecture ``u1_...``, label names, the U(1) settings in
``pretrained_cfg['u1']``), ``model.safetensors`` and a ``README.md`` model card.
"""
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import nn

import timm

from ._files import read_json, write_text
from .cards import render_model_card
from .u1 import U1_PREFIX

__all__ = [
    'save_pretrained', 'from_pretrained', 'read_config', 'UnsafeCheckpointError', 'WEIGHTS_NAME',
    'CONFIG_NAME', 'PICKLE_WEIGHTS',
]

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
# checkpoints that need unpickling; refused unless the caller opts in (then weights_only=True)
PICKLE_WEIGHTS = ('pytorch_model.bin', 'pytorch_model.pth', 'model.pth')


class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs unpickling, refused because the caller did not opt in."""


def save_pretrained(
        model: nn.Module,
        save_directory: Union[str, os.PathLike],
        label_names: Optional[Sequence[str]] = None,
        repo_id: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        model_card: bool = True,
) -> Path:
    """Save a u1 model in the Hub layout (weights as safetensors, timm config, model card).

    Files are written to a temporary folder first and moved in one by one with ``os.replace``,
    weights before config, so an interrupted save never leaves a config pointing at missing
    weights. ``metrics``, ``dataset``, ``training`` and ``plots`` (paths relative to the folder)
    go into the model card.
    """
    architecture = model.pretrained_cfg.get('architecture', '')
    if not architecture.startswith(U1_PREFIX):
        raise ValueError(
            f"save_pretrained saves u1 models; this model's architecture is '{architecture}'. "
            f"Create it as timm.create_model('{U1_PREFIX}{architecture}', ...) (same weights) "
            f'or use timm.models.save_for_hf for plain timm models.')
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f'{len(label_names)} label names for a model with {model.num_classes} classes.')
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)

    model_config = {'label_names': list(label_names)} if label_names is not None else None
    with tempfile.TemporaryDirectory(prefix='.save-', dir=save_directory) as tmp:
        tmp = Path(tmp)
        timm.models.save_for_hf(model, tmp, model_config=model_config, safe_serialization=True)
        names = [WEIGHTS_NAME]
        if model_card:
            config = read_config(tmp)
            cfg = dict(config['pretrained_cfg'], architecture=config['architecture'])
            if config.get('label_names'):
                cfg['label_names'] = config['label_names']
            card = render_model_card(
                cfg, num_features=config.get('num_features', model.num_features),
                repo_id=repo_id or f'ORG/{save_directory.resolve().name}', metrics=metrics,
                dataset=dataset, training=training, plots=plots)
            write_text(tmp / CARD_NAME, card)
            names.append(CARD_NAME)
        names.append(CONFIG_NAME)
        for name in names:
            os.replace(tmp / name, save_directory / name)
    return save_directory


def read_config(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The ``config.json`` of a saved model folder, checked to be a timm config."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.')
    config = read_json(path)
    if not isinstance(config, dict) or 'architecture' not in config:
        raise ValueError(f'{path} names no architecture; it is not a timm model config.')
    return config


def from_pretrained(
        name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        as_u1: bool = False,
        allow_pickle: bool = False,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        **kwargs,
) -> nn.Module:
    """Load a u1 model, with its weights, from a local folder or a Hub repo id (``ORG/NAME``).

    Hub repos are fetched with ``snapshot_download`` (pinned to ``revision`` when given, kept in the
    Hugging Face cache, read from it offline with ``HF_HUB_OFFLINE=1``). Every folder is checked
    first (:func:`timm_u1.publish.verify_folder`): a missing or corrupt file is named. The config
    must name a ``u1_`` architecture; ``as_u1=True`` loads a plain timm checkpoint (e.g. one saved
    by ``timm.models.save_for_hf``) into its u1 twin. Weights come from ``model.safetensors``; a
    folder with pickle weights only is refused unless ``allow_pickle=True``, and then read with
    ``torch.load(..., weights_only=True)``. ``kwargs`` go to ``timm.create_model``. The result is
    the model ``timm.create_model("local-dir:FOLDER", pretrained=True)`` builds.
    """
    from .publish import download_folder, verify_folder

    path = Path(name_or_path)
    if path.is_dir():
        folder = verify_folder(path, required=(CONFIG_NAME,))
    else:
        repo_id = str(name_or_path)
        if repo_id.count('/') != 1:
            raise ValueError(
                f"'{repo_id}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
        folder = download_folder(
            repo_id, revision=revision, required=(CONFIG_NAME,), cache_dir=cache_dir, token=token,
            endpoint=endpoint, local_files_only=local_files_only)

    architecture = read_config(folder)['architecture']
    if not architecture.startswith(U1_PREFIX) and not as_u1:
        raise ValueError(
            f"{name_or_path}: config.json names architecture '{architecture}', not a u1_ "
            f'architecture. Load it with timm.create_model, or pass as_u1=True to load these '
            f'weights into its u1 twin.')
    if (folder / WEIGHTS_NAME).is_file():
        if architecture.startswith(U1_PREFIX):
            return timm.create_model(f'local-dir:{folder}', pretrained=True, **kwargs)
        return _create_from_folder(folder, pretrained=True, **kwargs)

    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if not pickles:
        raise FileNotFoundError(f'{folder} has no weights ({WEIGHTS_NAME} or one of {", ".join(PICKLE_WEIGHTS)}).')
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f'{name_or_path} has pickle weights only ({pickles[0]}), no {WEIGHTS_NAME}. Unpickling can run '
            f'code; pass allow_pickle=True if you trust the source (it is then loaded with '
            f'torch.load(weights_only=True)), or convert it to safetensors.')
    model = _create_from_folder(folder, pretrained=False, **kwargs)
    state_dict = torch.load(folder / pickles[0], map_location='cpu', weights_only=True)
    model.load_state_dict(state_dict.get('state_dict', state_dict))
    return model


def _create_from_folder(folder: Path, pretrained: bool, **kwargs) -> nn.Module:
    """The u1 model a saved folder describes (the twin of a plain timm architecture), as timm builds it."""
    from timm.models._hub import load_model_config_from_path

    pretrained_cfg, name, model_args = load_model_config_from_path(folder)
    if not name.startswith(U1_PREFIX):
        name = U1_PREFIX + name
    return timm.create_model(name, pretrained=pretrained, pretrained_cfg=pretrained_cfg, **{**model_args, **kwargs})
