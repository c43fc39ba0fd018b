""" Hub-layout save and load of u1 models.

A saved folder is what timm's ``create_model("hf-hub:...")`` and ``create_model("local-dir:...")``
read: ``config.json`` (timm's format; architecture ``u1_...``, label names, the U(1) settings in
``pretrained_cfg['u1']``), ``model.safetensors`` and a ``README.md`` model card.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

import timm

from ._files import read_json, write_text
from .cards import render_model_card
from .u1 import U1_PREFIX

__all__ = ['save_pretrained', 'from_pretrained', 'read_config', 'WEIGHTS_NAME', 'CONFIG_NAME']

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'


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


def _download_config(repo_id: str, revision: Optional[str], cache_dir: Optional[str]) -> Dict[str, Any]:
    from huggingface_hub import hf_hub_download
    path = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir)
    return read_config(Path(path).parent)


def from_pretrained(
        name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        as_u1: bool = False,
        **kwargs,
) -> nn.Module:
    """Load a u1 model from a local folder or a Hub repo id (``ORG/NAME``), with its weights.

    The same as ``timm.create_model("local-dir:PATH" | "hf-hub:ORG/NAME@REV", pretrained=True)``,
    after checking that the config names a ``u1_`` architecture. ``as_u1=True`` loads a plain timm
    checkpoint (e.g. one saved by ``timm.models.save_for_hf``) as its u1 twin. Offline, hub ids
    resolve from the Hugging Face cache (``HF_HUB_OFFLINE=1``).
    """
    path = Path(name_or_path)
    local = path.is_dir()
    if local:
        config = read_config(path)
        spec = f'local-dir:{path}'
    else:
        repo_id = str(name_or_path)
        if repo_id.count('/') != 1:
            raise ValueError(
                f"'{repo_id}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
        config = _download_config(repo_id, revision, cache_dir)
        spec = f'hf-hub:{repo_id}' + (f'@{revision}' if revision else '')

    architecture = config['architecture']
    if not architecture.startswith(U1_PREFIX):
        if not as_u1:
            raise ValueError(
                f"{name_or_path}: config.json names architecture '{architecture}', not a u1_ "
                f'architecture. Load it with timm.create_model, or pass as_u1=True to load these '
                f'weights into its u1 twin.')
        return _load_as_u1(spec, cache_dir=cache_dir, **kwargs)
    return timm.create_model(spec, pretrained=True, cache_dir=cache_dir, **kwargs)


def _load_as_u1(spec: str, cache_dir=None, **kwargs) -> nn.Module:
    """Build the u1 twin of a plain timm checkpoint folder/repo, loading its weights."""
    from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

    source, model_id = spec.split(':', 1)
    if source == 'local-dir':
        pretrained_cfg, name, model_args = load_model_config_from_path(model_id)
    else:
        pretrained_cfg, name, model_args = load_model_config_from_hf(model_id, cache_dir=cache_dir)
    return timm.create_model(
        U1_PREFIX + name, pretrained=True, pretrained_cfg=pretrained_cfg, cache_dir=cache_dir,
        **{**model_args, **kwargs})
