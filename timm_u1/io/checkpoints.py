""" timm's training checkpoints (``model_best.pth.tar``, ``checkpoint-*.pth.tar``, ``last.pth.tar``) as models.

timm's ``train.py`` saves ``arch``, ``args`` (its ``argparse.Namespace``: model name, number of
classes, input size, normalisation, ...), ``state_dict`` and, with ``--model-ema``, ``state_dict_ema``.
:func:`load_timm_checkpoint` rebuilds that model as its ``u1_`` twin (the same network; every
timm_u1 command, training included, takes it), with its weights and the data config its run used.
"""
import argparse
import contextlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn

import timm

from ..core.u1 import U1_PREFIX, register_u1_models
from .fit import check_fit, classifier_keys

__all__ = ['load_timm_checkpoint']

_logger = logging.getLogger(__name__)


def _read(path: Path) -> Dict[str, Any]:
    """The checkpoint's contents, unpickled with ``weights_only=True``; ``argparse.Namespace`` (its ``args``)
    is the one class allowed besides tensors, as timm's own loader allows it."""
    # torch < 2.5 has no safe_globals: its weights_only load refuses the Namespace, and says so below
    allow = torch.serialization.safe_globals([argparse.Namespace]) if hasattr(torch.serialization, 'safe_globals') \
        else contextlib.nullcontext()
    try:
        with allow:
            checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... for what it refuses
        raise ValueError(
            f'{path} cannot be read as a timm training checkpoint with torch.load(weights_only=True) '
            f'({type(e).__name__}: {str(e).splitlines()[0] if str(e) else "no detail"}). Only checkpoints of '
            f'tensors and their args load; convert others to a model folder (timm.models.save_for_hf).') from e
    if not isinstance(checkpoint, dict) or not any(k in checkpoint for k in ('state_dict', 'state_dict_ema')):
        raise ValueError(f'{path} holds no "state_dict": it is not a timm training checkpoint.')
    return checkpoint


def _state_dict(checkpoint: Dict[str, Any], args: Dict[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    """The EMA weights when the run kept them (train.py selects its best checkpoint on the EMA's metric
    then), else the model's; wrapper prefixes removed (``timm.models.clean_state_dict``)."""
    key = 'state_dict_ema' if checkpoint.get('state_dict_ema') is not None else 'state_dict'
    state_dict = checkpoint.get(key)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f'{path}: "{key}" is not a mapping of tensor names to tensors.')
    _logger.info('%s: loading its %s', path, key)
    return timm.models.clean_state_dict(state_dict)


def _num_classes(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> Optional[int]:
    for key in classifier_keys(model):
        if key.endswith('.weight') and key in state_dict:
            return int(state_dict[key].shape[0])
    return None


def load_timm_checkpoint(path, **kwargs) -> nn.Module:
    """The ``u1_`` twin of the model a timm training checkpoint holds, weights loaded and checked, its
    ``pretrained_cfg`` carrying the data config of the run (input size, mean, std, crop, interpolation),
    resolved as timm's train.py resolves it (``timm.data.resolve_data_config``). ``kwargs`` go to
    ``timm.create_model`` (``num_classes=N`` asks for a new head)."""
    from timm.data import resolve_data_config

    path = Path(path)
    checkpoint = _read(path)
    args = vars(checkpoint['args']) if isinstance(checkpoint.get('args'), argparse.Namespace) else {}
    arch = args.get('model') or checkpoint.get('arch')
    if not isinstance(arch, str) or not timm.is_model(arch.partition('.')[0]):
        raise ValueError(f'{path} names no model timm knows (args.model / arch = {arch!r}).')
    arch = arch.partition('.')[0]
    register_u1_models()
    state_dict = _state_dict(checkpoint, args, path)
    build: Dict[str, Any] = dict(args.get('model_kwargs') or {})
    if args.get('in_chans') or args.get('input_size'):
        build['in_chans'] = args.get('in_chans') or args['input_size'][0]
    if args.get('gp'):
        build['global_pool'] = args['gp']
    with torch.device('meta'):
        probe = timm.create_model(arch, **build)
    num_classes = args.get('num_classes') or _num_classes(probe, state_dict)
    if num_classes is not None:
        build['num_classes'] = num_classes
    new_head = 'num_classes' in kwargs and kwargs['num_classes'] != num_classes
    model = timm.create_model(U1_PREFIX + arch, pretrained=False, **{**build, **kwargs})
    skip = classifier_keys(model) if new_head else []
    check_fit(model, {k: tuple(v.shape) for k, v in state_dict.items()},
              {'architecture': arch, 'num_classes': num_classes}, str(path), skip, file='its state_dict')
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in skip}, strict=not skip)
    model.pretrained_cfg.update(resolve_data_config(args, model=model))
    model.pretrained_cfg.update(source='file', file=str(path))
    return model
