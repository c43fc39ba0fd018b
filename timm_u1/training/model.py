"""The model a run trains: a ``u1_`` twin with the dataset's head, its forward for the loss, and its EMA."""
import logging
from typing import Any, Optional

import torch
from torch import nn

import timm

from ..core.u1 import U1_PREFIX, U1Output, is_u1_model
from .config import TrainConfig

__all__ = ['create_train_model', 'ForwardU1', 'create_ema']

_logger = logging.getLogger(__name__)


class ForwardU1(nn.Module):
    """Makes ``model.forward_u1(x, spatial=True)`` the module's forward.

    The spatial hue loss needs the per-location logits and the bottleneck map, not just the logits.
    Calling ``accelerator.unwrap_model(model).forward_u1`` would work on one process (the same
    parameters, the same autograd graph), but under DistributedDataParallel it would bypass DDP's
    forward, which readies the gradient all-reduce for the backward pass. So the wrapper, not the
    bare model, is what Accelerate prepares: DDP's forward runs and returns the whole U1Output.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> U1Output:
        return self.model.forward_u1(x, spatial=True)


def create_train_model(args: TrainConfig, num_classes: int) -> nn.Module:
    """The model to train, as a u1_ twin (same weights as the timm model) with a head of ``num_classes``."""
    from ..io.factory import create_model_from_spec

    spec = args.model
    if not spec.startswith(U1_PREFIX) and timm.is_model(spec):
        spec = U1_PREFIX + spec  # the twin is the same network, plus forward_u1 and its U(1) settings
    kwargs = {}
    if args.drop_rate:
        kwargs['drop_rate'] = args.drop_rate
    if args.drop_path:
        kwargs['drop_path_rate'] = args.drop_path
    if not args.pretrained:
        kwargs['num_classes'] = num_classes
    model = create_model_from_spec(spec, pretrained=args.pretrained, **kwargs)
    if not is_u1_model(model):
        arch = model.pretrained_cfg.get('architecture') or type(model).__name__
        raise ValueError(
            f'{args.model} loads as a plain {arch} model; pass its u1_ name or a folder saved by '
            f'timm_u1.save_pretrained, or load it with timm_u1.from_pretrained(..., as_u1=True).')
    if model.num_classes != num_classes:
        _logger.info('The head of %s has %d classes and the dataset %d: replacing it with a new %d-class head '
                     '(fine-tuning).', args.model, model.num_classes, num_classes, num_classes)
        model.reset_classifier(num_classes)
    model.pretrained_cfg['u1'] = dict(model.pretrained_cfg.get('u1') or {}, **args.u1_config().to_dict())
    return model


def create_ema(args: TrainConfig, model: nn.Module, accelerator: Any) -> Optional[nn.Module]:
    """timm's ``ModelEmaV3`` of ``model`` when ``--model-ema``, else None.

    Prepared in evaluation mode (placed on the device, never wrapped in DDP: every process applies the
    same update to the same synchronised weights), so ``accelerator.save_state`` writes it beside the
    model as safetensors and ``load_state`` restores it.
    """
    if not args.model_ema:
        return None
    from timm.utils import ModelEmaV3

    ema = ModelEmaV3(model, decay=args.model_ema_decay)
    ema.requires_grad_(False)
    return accelerator.prepare_model(ema, evaluation_mode=True)
