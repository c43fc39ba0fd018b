""" Save a u1 model in the Hub layout that timm's ``create_model("hf-hub:...")`` and ``"local-dir:..."`` read::

    config.json        timm's format: "architecture" is the BASE architecture (e.g. "resnet10t"), plus
                       "u1" (the twin's U(1) settings) and "timm_u1" (the record), which timm ignores
    model.safetensors  the weights (the twin's weights are the base model's)
    README.md          the model card, rendered from config.json

A folder is replaced as a whole or not at all (:func:`save_pretrained`): its files belong together
(``config.json`` records the weights' hash), so single-file atomic writes are not enough here.
"""
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import nn

import timm

from ..core.u1 import U1_PREFIX, U1Config
from ..files import _UMASK, _pid_alive, file_sha256, read_json, write_json, write_text  # one umask, one pid check
from .cards import render_card
from .config import CARD_NAME, CONFIG_NAME, FORMAT_VERSION, PRETRAINED_CFG_KEYS, RECORD_KEY, U1_KEY, WEIGHTS_NAME

__all__ = ['save_pretrained', 'model_size']

_logger = logging.getLogger(__name__)


def model_size(model: nn.Module) -> Dict[str, Any]:
    """``{"params": N, "gmacs": G}``: parameters, and multiply-accumulates of one image at the model's
    ``input_size`` in billions (``torch.utils.flop_counter``; None when it cannot count this model)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters())
    size = tuple(model.pretrained_cfg.get('input_size') or (3, 224, 224))
    device = next(iter(model.parameters()), torch.empty(0)).device
    training = model.training
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, *size, device=device))
        gmacs = round(counter.get_total_flops() / 2e9, 4)
    except Exception as e:  # a model the counter cannot run: the card says so rather than a wrong number
        _logger.info('GMACs of %s not measured (%s: %s)', type(model).__name__, type(e).__name__, e)
        gmacs = None
    finally:
        model.train(training)
    return {'params': params, 'gmacs': gmacs}


def _stale_temps(folder: Path) -> None:
    """Remove temp folders of saves into ``folder`` whose process is gone (killed mid-save)."""
    for tmp in folder.glob('.save-*'):
        match = re.fullmatch(r'\.save-(\d+)-.*', tmp.name)
        if tmp.is_dir() and match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _timm_config(model: nn.Module, folder: Path, label_names: Optional[Sequence[str]]) -> Dict[str, Any]:
    """Write the weights and timm's config.json into ``folder``; return that config in the layout plain timm loads."""
    model_config = {'label_names': list(label_names)} if label_names is not None else None
    timm.models.save_for_hf(model, folder, model_config=model_config, safe_serialization=True)
    os.chmod(folder / WEIGHTS_NAME, 0o666 & ~_UMASK)  # safetensors writes 0600; the project means the usual umask
    config = read_json(folder / CONFIG_NAME)
    settings = config['pretrained_cfg'].get(U1_KEY) or {}
    config['architecture'] = config['architecture'][len(U1_PREFIX):]
    # timm's own fields only: plain timm's PretrainedCfg rejects others
    config['pretrained_cfg'] = {k: v for k, v in config['pretrained_cfg'].items() if k in PRETRAINED_CFG_KEYS}
    # num_classes lives at the top level: also in model_args, it is passed twice by loaders that read both
    # (transformers' TimmWrapper: create_model(arch, num_classes=..., **model_args))
    if 'model_args' in config:
        config['model_args'].pop('num_classes', None)
    config[U1_KEY] = U1Config.from_dict(settings).to_dict()
    return config


def save_pretrained(
        model: nn.Module,
        save_directory,
        label_names: Optional[Sequence[str]] = None,
        repo_id: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        model_card: bool = True,
        eval_split: Optional[str] = None,
        base_model: Optional[str] = None,
        license: Optional[str] = None,
) -> Path:
    """Save a u1 model in the Hub layout (weights as safetensors, timm config, model card).

    ``config.json`` names the base architecture, so plain timm loads the folder. ``metrics`` (evaluated
    on ``dataset``, split ``eval_split``), ``training``, ``plots`` (paths relative to the folder) and
    ``license`` (a Hub licence id) are kept in ``config.json`` with the parameter count and GMACs, and
    rendered into the card, so pushing under another repo id re-renders it from data. ``base_model``
    is the Hub repo the weights started from; by default the one the model was loaded from.

    Files are written to a temporary folder, then moved in, weights first and ``config.json`` (with
    the weights' SHA-256) last: a folder caught between two saves has a config whose recorded hash
    names the mismatch, and loading refuses it. On an error the previous files are restored; the temp
    folder of a killed save is removed by the next save.
    """
    from .cards import check_license

    architecture = model.pretrained_cfg.get('architecture', '')
    if not architecture.startswith(U1_PREFIX):
        raise ValueError(
            f"save_pretrained saves u1 models; this model's architecture is '{architecture}'. "
            f"Create it as timm.create_model('{U1_PREFIX}{architecture}', ...) (same weights) "
            f'or use timm.models.save_for_hf for plain timm models.')
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f'{len(label_names)} label names for a model with {model.num_classes} classes.')
    license = check_license(license)
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    _stale_temps(save_directory)
    card = dict(metrics=dict(metrics) if metrics else None, dataset=dataset, eval_split=eval_split,
                training=training, plots=list(plots), license=license)

    tmp = Path(tempfile.mkdtemp(prefix=f'.save-{os.getpid()}-', dir=save_directory))
    try:
        config = _timm_config(model, tmp, label_names)
        config[RECORD_KEY] = {
            'format_version': FORMAT_VERSION,
            'weights_sha256': file_sha256(tmp / WEIGHTS_NAME),
            'weights_size': (tmp / WEIGHTS_NAME).stat().st_size,
            'base_model': base_model or model.pretrained_cfg.get('base_model'),
            **model_size(model),
            'card': card,
        }
        write_json(tmp / CONFIG_NAME, config)
        names = [WEIGHTS_NAME]
        if model_card:
            write_text(tmp / CARD_NAME, render_card(config, repo_id or f'ORG/{save_directory.resolve().name}'))
            names.append(CARD_NAME)
        _move_in(tmp, save_directory, names + [CONFIG_NAME])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return save_directory


def _move_in(tmp: Path, folder: Path, names: Sequence[str]) -> None:
    """Replace ``folder``'s ``names`` with ``tmp``'s; on an error put the previous files back."""
    backup = tmp / '.previous'
    backup.mkdir()
    moved: List[str] = []
    try:
        for name in names:
            if (folder / name).exists():
                try:
                    os.link(folder / name, backup / name)
                except OSError:  # no hard links on this file system
                    shutil.copy2(folder / name, backup / name)
            os.replace(tmp / name, folder / name)
            moved.append(name)
    except BaseException:
        for name in reversed(moved):
            if (backup / name).exists():
                os.replace(backup / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)
        raise
