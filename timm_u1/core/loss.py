""" U(1) loss: cross-entropy plus the activation-hue term of docs/math.md ("Label hue and the U(1) loss").

    total = CE(x, y) + lambda * (1 - Re(conj(h(x)) t(p)))

h(x) is the unit hue vector of the logits (or of their softmax) and t(p) the target hue vector
of the class distribution p: one-hot, label-smoothed, mixup or cutmix. ``U1Loss`` follows
``timm.loss``: ``loss(logits, target)`` returns a scalar tensor, so it drops into timm's own
train loop; :meth:`U1Loss.parts` also returns both terms for logging.

Numerics: the loss is computed in float32 (float64 for float64 logits, and then returned in
float64) with autocast turned off, so the AMP recipe of computing the loss inside
``torch.autocast`` does not run the hue projection in bfloat16. The hue's forward value is exact;
its gradient is bounded near zero chroma by a guard relative to the logit scale (see
:func:`hue_loss`). Input checks (finite logits, class indices in range, soft targets that are
distributions) cost one host sync per call in eager mode; under ``torch.compile`` they become
``torch._assert_async`` inside the graph (no graph break, no sync), with a shorter message.
"""
import math
from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hue import full_precision, hue_basis, pow2_scale, target_hue_vector
from .u1 import U1Config, U1Output, get_u1_config

__all__ = ['U1Loss', 'U1LossParts', 'hue_loss']


class U1LossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    hue: torch.Tensor


# The hue's gradient is (I - h h^T) / |z|: unbounded as the chroma |z| -> 0, while the
# cross-entropy's is at most sqrt(2) per row. Backpropagating as if |z| were at least
# GRAD_GUARD * max(rms of the centred input, scale_floor) keeps it within ~1 / GRAD_GUARD of the
# cross-entropy's at zero chroma; a vector whose chroma is a few times the guard or more gets its
# exact gradient to within (guard / |z|)^2. Relative to the input's own scale, so a scaled
# input keeps the same behaviour; the floor (1 logit, or 1 / C for probabilities) bounds it for
# (nearly) constant vectors, whose scale is 0.
GRAD_GUARD = 0.1


def _unit_hue(x: torch.Tensor, dim: int, eps: float, scale_floor: float = 1.0) -> torch.Tensor:
    """(..., 2) unit hue vector z/|z| (0 at zero chroma), with its gradient bounded near zero chroma.

    The forward value is the exact unit vector; the backward is that of z / sqrt(|z|^2 + g^2) with
    the guard g = max(eps, GRAD_GUARD * max(rms(x - mean x), scale_floor)) (straight-through).
    Everything is computed on x scaled by a power of two (exact), so huge logits neither overflow
    nor lose their hue.
    """
    x = x.movedim(dim, -1)
    s = pow2_scale(x)  # (..., 1), detached
    xs = x / s
    z = xs @ hue_basis(x.shape[-1], device=x.device, dtype=x.dtype)  # (..., 2), in units of s
    zd = z.detach()
    tiny = torch.finfo(z.dtype).tiny
    # exact unit vector: normalise by the largest component first, so |z|^2 cannot under/overflow
    zmax = zd.abs().amax(-1, keepdim=True).clamp_min(tiny)
    zn = z / zmax
    exact = zn * torch.rsqrt(zn.square().sum(-1, keepdim=True).clamp_min(1.0))
    # the guard, in units of s, treated as a constant; rms of the centred input from two fused
    # reductions (|xs| < 2, so no overflow; cancellation only where the floor takes over anyway)
    xd = xs.detach()
    n = x.shape[-1]
    ss = torch.linalg.vector_norm(xd, dim=-1, keepdim=True).square() - xd.sum(-1, keepdim=True).square() / n
    rms = (ss.clamp_min(0) / n).sqrt()
    guard = torch.maximum(GRAD_GUARD * torch.maximum(rms, scale_floor / s), eps / s)
    guard = guard.clamp(tiny, torch.finfo(z.dtype).max)
    m = torch.maximum(zmax, guard)  # any constant > 0 gives the same z / sqrt(|z|^2 + g^2)
    zg = z / m
    soft = zg * torch.rsqrt(zg.square().sum(-1, keepdim=True) + (guard / m).square())
    return exact.detach() + (soft - soft.detach())


def hue_loss(
        x: torch.Tensor,
        target_hue: torch.Tensor,
        eps: float = 1e-6,
        weight: Optional[torch.Tensor] = None,
        scale_floor: float = 1.0,
) -> torch.Tensor:
    """Mean of 1 - Re(conj(h(x)) t) over the batch, in ``x``'s compute dtype (float32 or float64).

    The value is exact (h = z/|z|, 0 at zero chroma). Near zero chroma the gradient is bounded
    by treating |z| as at least ``GRAD_GUARD * max(rms of the centred x, scale_floor)``.

    Args:
        x: (B, C) logits or probabilities, or (B, C, H, W) per-location logits.
        target_hue: (B, 2) target hue vectors t(p).
        eps: smallest guard on |z(x)|, in the units of x.
        weight: for per-location input, (B, H, W) location weights summing to 1 per image.
        scale_floor: the input's scale below which the guard stops shrinking: 1 for logits
            (the cross-entropy's unit), 1 / C for probabilities.
    """
    with full_precision(x):
        x = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        h = _unit_hue(x, dim=1, eps=eps, scale_floor=scale_floor)  # (B, 2) or (B, H, W, 2)
        target_hue = target_hue.to(h.dtype)
        return _hue_loss(h, x.dim(), target_hue, weight)


def _hue_loss(h: torch.Tensor, ndim: int, target_hue: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if ndim == 2:
        return (1 - (h * target_hue).sum(-1)).mean()
    if weight is None:
        raise ValueError('Per-location hue loss needs location weights (B, H, W).')
    agreement = (h * target_hue[:, None, None, :]).sum(-1)  # (B, H, W)
    return (1 - (weight.to(h.dtype) * agreement).sum(dim=(1, 2))).mean()


def _soft_target_tolerance(dtype: torch.dtype) -> float:
    """How far a soft target may stray from a distribution by rounding alone (4 ulps at 1)."""
    return max(1e-4, 4 * torch.finfo(dtype).eps)


_COMPILED_CHECK_MESSAGE = (
    'U1Loss: invalid input: non-finite (NaN/inf) logits, a target class index out of range, or soft '
    'targets that are not distributions. Run the loss without torch.compile for the details.')


class U1Loss(nn.Module):
    """Cross-entropy + lambda * activation-hue loss, for hard or soft targets.

    Args:
        hue_weight: lambda; 0 gives exactly (label-smoothed) cross-entropy.
        smoothing: label smoothing for hard targets (soft targets carry their own).
        hue_input: 'logits' or 'probs' (hue of the softmax).
        spatial: hue of the head at every bottleneck location, energy-weighted (needs a
            :class:`~timm_u1.core.u1.U1Output` from ``model.forward_u1`` as input).
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
        for name, value in (('hue_weight', hue_weight), ('eps', eps), ('smoothing', smoothing)):
            if not math.isfinite(value):
                raise ValueError(f'{name} must be a finite number, got {value}.')
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
        """The class distribution p (B, C) in the logits' compute dtype; checks shapes only."""
        b, c = logits.shape
        if target.dtype.is_floating_point:
            if target.shape != logits.shape:
                raise ValueError(
                    f'Soft targets must match the logits shape {tuple(logits.shape)}, got {tuple(target.shape)}.')
            return target.to(logits.dtype)
        if target.dtype in (torch.bool, torch.complex64, torch.complex128) or target.dim() != 1:
            raise ValueError(
                f'Hard targets must be integer class indices of shape ({b},), got dtype {target.dtype} '
                f'shape {tuple(target.shape)}; pass soft targets as float (B, C).')
        if target.shape[0] != b:
            raise ValueError(f'Batch size mismatch: {b} logits and {target.shape[0]} targets.')
        # any integer dtype holds class indices; clamped so that one_hot cannot fail before the
        # range check below reports the bad index
        p = F.one_hot(target.long().clamp(0, c - 1), c).to(logits.dtype)
        if self.smoothing:
            p = p * (1 - self.smoothing) + self.smoothing / c
        return p

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Finite logits, class indices in range, soft targets that are distributions.

        One host sync in eager mode (the detailed message is built only on failure); inside
        torch.compile an asynchronous assert in the graph instead, so the graph does not break.
        """
        c = logits.shape[1]
        if self.check_finite:
            # max |x| per row is one fused pass over the logits and is NaN/inf iff the row is
            ok = torch.isfinite(torch.linalg.vector_norm(logits.detach(), ord=math.inf, dim=1)).all()
        else:
            ok = torch.ones((), dtype=torch.bool, device=logits.device)
        soft = target.dtype.is_floating_point
        if soft:
            tol = _soft_target_tolerance(target.dtype)
            sums = target.sum(dim=1, dtype=logits.dtype)
            ok = ok & (target.min() >= -tol) & ((sums - 1).abs().max() <= tol)
        else:
            ok = ok & (target.min() >= 0) & (target.max() < c)
        if torch.compiler.is_compiling():
            torch._assert_async(ok, _COMPILED_CHECK_MESSAGE)
            return
        if bool(ok):
            return
        if self.check_finite and not torch.isfinite(logits).all():
            bad = (~torch.isfinite(logits)).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f'Non-finite (NaN/inf) logits in batch rows {bad[:10]}; check the learning rate and inputs.')
        if not soft:
            raise ValueError(
                f'Target class index out of range [0, {c}): min {int(target.min())}, max {int(target.max())}.')
        if float(target.min()) < -tol:
            raise ValueError(
                f'Soft targets must be class probabilities, got negative entries (min {float(target.min()):.4g}); '
                f'pass a distribution over the classes, e.g. softmax or timm Mixup targets.')
        raise ValueError(
            f'Soft targets must sum to 1 over the classes (a distribution), got row sums in '
            f'[{float(sums.min()):.4g}, {float(sums.max()):.4g}]; normalise them (target / target.sum(1, keepdim=True)).')

    def parts(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> U1LossParts:
        """Total loss and its two terms (CE and the unweighted hue loss)."""
        logits = x.logits if isinstance(x, U1Output) else x
        if logits.dim() != 2:
            raise ValueError(f'Logits must be (B, C), got shape {tuple(logits.shape)}.')
        num_classes = logits.shape[1]
        if num_classes < 3:
            raise ValueError(f'The U(1) hue loss needs C >= 3 classes, got logits with C={num_classes}.')
        if logits.shape[0] == 0:
            # a mean over no samples is NaN; refused rather than returned as 0, which would hide
            # a data pipeline that yields empty batches
            raise ValueError('U1Loss got an empty batch (0 rows of logits); skip empty batches before the loss.')
        # float32 (float64 for float64 logits) with autocast off: bfloat16 would bend the hue
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        with full_precision(logits):
            logits = logits.to(dtype)
            p = self._target_distribution(target, logits)
            self._check(logits, target)
            ce = torch.sum(-p * F.log_softmax(logits, dim=-1), dim=-1).mean()
            if not self.hue_weight:
                return U1LossParts(ce, ce, torch.zeros_like(ce))

            t = target_hue_vector(p, num_classes)
            floor = 1.0 if self.hue_input == 'logits' else 1.0 / num_classes
            if self.spatial:
                if not isinstance(x, U1Output) or x.spatial_logits is None:
                    raise ValueError(
                        'U1Loss(spatial=True) needs the output of model.forward_u1(x, spatial=True), '
                        'not plain logits.')
                e = x.energy_map.to(dtype)
                weight = e / e.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
                hue_in = x.spatial_logits.to(dtype)
                if self.hue_input == 'probs':
                    hue_in = hue_in.softmax(dim=1)
                hue = hue_loss(hue_in, t, eps=self.eps, weight=weight, scale_floor=floor)
            else:
                hue_in = logits.softmax(dim=-1) if self.hue_input == 'probs' else logits
                hue = hue_loss(hue_in, t, eps=self.eps, scale_floor=floor)
            return U1LossParts(ce + self.hue_weight * hue, ce, hue)

    def forward(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> torch.Tensor:
        return self.parts(x, target).total
