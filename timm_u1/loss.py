""" U(1) loss: cross-entropy plus the activation-hue term of docs/math.md ("Label hue and the U(1) loss").

    total = CE(x, y) + lambda * (1 - Re(conj(h(x)) t(p)))

h(x) is the unit hue vector of the logits (or of their softmax) and t(p) the target hue vector
of the class distribution p: one-hot, label-smoothed, mixup or cutmix. ``U1Loss`` follows
``timm.loss``: ``loss(logits, target)`` returns a scalar tensor, so it drops into timm's own
train loop; :meth:`U1Loss.parts` also returns both terms for logging.
"""
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hue import hue_basis, target_hue_vector
from .u1 import U1Config, U1Output, get_u1_config

__all__ = ['U1Loss', 'U1LossParts', 'hue_loss']


class U1LossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    hue: torch.Tensor


def _unit_hue(x: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """(..., 2) hue vector z/|z| with |z| guarded by eps, so gradients stay finite near zero chroma."""
    x = x.float().movedim(dim, -1)
    z = x @ hue_basis(x.shape[-1], device=x.device, dtype=x.dtype)
    return z * torch.rsqrt(z.square().sum(-1, keepdim=True) + eps * eps)


def hue_loss(
        x: torch.Tensor,
        target_hue: torch.Tensor,
        eps: float = 1e-6,
        weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Mean of 1 - Re(conj(h(x)) t) over the batch.

    Args:
        x: (B, C) logits or probabilities, or (B, C, H, W) per-location logits.
        target_hue: (B, 2) target hue vectors t(p).
        eps: guard on |z(x)|.
        weight: for per-location input, (B, H, W) location weights summing to 1 per image.
    """
    h = _unit_hue(x, dim=1, eps=eps)  # (B, 2) or (B, H, W, 2)
    if x.dim() == 2:
        return (1 - (h * target_hue).sum(-1)).mean()
    if weight is None:
        raise ValueError('Per-location hue loss needs location weights (B, H, W).')
    agreement = (h * target_hue[:, None, None, :]).sum(-1)  # (B, H, W)
    return (1 - (weight * agreement).sum(dim=(1, 2))).mean()


class U1Loss(nn.Module):
    """Cross-entropy + lambda * activation-hue loss, for hard or soft targets.

    Args:
        hue_weight: lambda; 0 gives exactly (label-smoothed) cross-entropy.
        smoothing: label smoothing for hard targets (soft targets carry their own).
        hue_input: 'logits' or 'probs' (hue of the softmax).
        spatial: hue of the head at every bottleneck location, energy-weighted (needs a
            :class:`~timm_u1.u1.U1Output` from ``model.forward_u1`` as input).
        eps: guard on |z(x)| -> 0.
        check_finite: raise on NaN/inf logits instead of returning a NaN loss.
    """

    def __init__(
            self,
            hue_weight: float = 1.0,
            smoothing: float = 0.0,
            hue_input: str = 'logits',
            spatial: bool = False,
            eps: float = 1e-6,
            check_finite: bool = True,
    ):
        super().__init__()
        U1Config(hue_weight=hue_weight, hue_input=hue_input, spatial=spatial, eps=eps)  # validates
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f'smoothing must be in [0, 1), got {smoothing}.')
        self.hue_weight = hue_weight
        self.smoothing = smoothing
        self.hue_input = hue_input
        self.spatial = spatial
        self.eps = eps
        self.check_finite = check_finite

    @classmethod
    def from_model(cls, model: nn.Module, **overrides) -> 'U1Loss':
        """A loss with the U(1) settings a model carries in ``pretrained_cfg['u1']``."""
        return cls(**{**get_u1_config(model).to_dict(), **overrides})

    def extra_repr(self) -> str:
        return (f'hue_weight={self.hue_weight}, smoothing={self.smoothing}, hue_input={self.hue_input!r}, '
                f'spatial={self.spatial}, eps={self.eps}')

    def _target_distribution(self, target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        b, c = logits.shape
        if target.dtype.is_floating_point:
            if target.shape != logits.shape:
                raise ValueError(
                    f'Soft targets must match the logits shape {tuple(logits.shape)}, got {tuple(target.shape)}.')
            return target.float()
        if target.dtype in (torch.bool, torch.complex64, torch.complex128) or target.dim() != 1:
            raise ValueError(
                f'Hard targets must be integer class indices of shape ({b},), got dtype {target.dtype} '
                f'shape {tuple(target.shape)}; pass soft targets as float (B, C).')
        if target.shape[0] != b:
            raise ValueError(f'Batch size mismatch: {b} logits and {target.shape[0]} targets.')
        if b and (int(target.min()) < 0 or int(target.max()) >= c):
            raise ValueError(
                f'Target class index out of range [0, {c}): min {int(target.min())}, max {int(target.max())}.')
        p = F.one_hot(target, c).float()
        if self.smoothing:
            p = p * (1 - self.smoothing) + self.smoothing / c
        return p

    def parts(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> U1LossParts:
        """Total loss and its two terms (CE and the unweighted hue loss)."""
        logits = x.logits if isinstance(x, U1Output) else x
        if logits.dim() != 2:
            raise ValueError(f'Logits must be (B, C), got shape {tuple(logits.shape)}.')
        num_classes = logits.shape[1]
        if num_classes < 3:
            raise ValueError(f'The U(1) hue loss needs C >= 3 classes, got logits with C={num_classes}.')
        if self.check_finite and not torch.isfinite(logits).all():
            bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f'Non-finite (NaN/inf) logits in batch rows {bad[:10]}; check the learning rate and inputs.')

        p = self._target_distribution(target, logits)
        ce = torch.sum(-p * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        if not self.hue_weight:
            return U1LossParts(ce, ce, torch.zeros_like(ce))

        t = target_hue_vector(p, num_classes)
        if self.spatial:
            if not isinstance(x, U1Output) or x.spatial_logits is None:
                raise ValueError(
                    'U1Loss(spatial=True) needs the output of model.forward_u1(x, spatial=True), '
                    'not plain logits.')
            e = x.energy_map.float()
            weight = e / e.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
            hue_in = x.spatial_logits.float()
            if self.hue_input == 'probs':
                hue_in = hue_in.softmax(dim=1)
            hue = hue_loss(hue_in, t, eps=self.eps, weight=weight)
        else:
            hue_in = logits.softmax(dim=-1) if self.hue_input == 'probs' else logits
            hue = hue_loss(hue_in, t, eps=self.eps)
        return U1LossParts(ce + self.hue_weight * hue, ce, hue)

    def forward(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> torch.Tensor:
        return self.parts(x, target).total
