""" U(1) loss: cross-entropy plus the activation-hue term of docs/math.md ("Label hue and the U(1) loss").

    total = CE(x, p) + lambda * (1 - <h(x), t(p)>),    h(x) = z(x) / sqrt(|z(x)|^2 + g(x)^2)

z(x) is the hue vector of the logits (or of their softmax), g(x)^2 = eps^2 + CHROMA_GUARD^2 (sigma(x)^2
+ floor^2) its smoothing near zero chroma (sigma the rms of the centred x, floor 1 logit or 1 / C), and
t(p) the target hue vector of the class distribution p: one-hot, label-smoothed, mixup or cutmix.
Autograd differentiates exactly this function. ``U1Loss`` follows ``timm.loss``: ``loss(logits,
target)`` returns a scalar tensor; :meth:`U1Loss.parts` also returns both terms for logging.

The loss is computed in float32 (float64 for float64 logits) with autocast off. Bad input (non-finite
logits, class indices out of range, soft targets that are not distributions) is caught by one
flag per call (a few reductions), read once; the detailed check runs only when it is raised. Under
``torch.compile`` the flag is an assert inside the graph (no graph break, no host sync).
"""
import dataclasses
import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .hue import full_precision, hue_basis, label_hue_vectors
from .u1 import U1Config, U1Output, get_u1_config

__all__ = ['U1Loss', 'U1LossParts', 'hue_loss', 'CHROMA_GUARD']

# The hue's gradient is (I - h h^T) / |z|: unbounded as the chroma |z| -> 0, while the cross-entropy's
# is at most sqrt(2) per row. Smoothing the hue with g >= CHROMA_GUARD * max(sigma, floor) keeps it
# within ~1 / CHROMA_GUARD of the cross-entropy's, and changes the loss by at most (g / |z|)^2 / 2 of
# a row whose chroma |z| is well above g. Relative to the input's own scale sigma, so that scaled
# logits keep their behaviour; the floor (1 logit, 1 / C for probabilities) bounds it for constant rows.
CHROMA_GUARD = 0.1


class U1LossParts(NamedTuple):
    total: torch.Tensor
    ce: torch.Tensor
    hue: torch.Tensor


def _scale_down(x: torch.Tensor) -> torch.Tensor:
    """A power of two near max |x| (one scalar for the whole batch), at least 1; NaN/inf stay.

    Dividing by it is exact and leaves |x| < 2, so squares cannot overflow. The hue term does not
    depend on it (given its constants in the same units), so it is detached.
    """
    largest = torch.linalg.vector_norm(x.detach(), ord=math.inf)
    return torch.exp2(torch.floor(torch.log2(largest.clamp_min(1.0))))


def _hue_term(
        x: torch.Tensor,
        target_hue: torch.Tensor,
        floor: float,
        eps: float,
        weight: Optional[torch.Tensor] = None,
        scaled: bool = False,
) -> torch.Tensor:
    """Mean over the batch of 1 - <h(x), t>; ``x`` channels last, (B, C) or (B, H, W, C).

    ``scaled``: compute on x / :func:`_scale_down` (x), for inputs whose squares overflow; the result
    is the same function. Written in few autograd nodes: each costs ~15 us on a CPU, more than
    its arithmetic at these sizes.
    """
    const = (CHROMA_GUARD * floor) ** 2 + eps ** 2
    if scaled:
        scale = _scale_down(x)
        x = x / scale
        const = const / scale.square()
    var = torch.var(x, dim=-1, correction=0)
    z = x @ hue_basis(x.shape[-1], device=x.device, dtype=x.dtype)
    # 1 / sqrt(|z|^2 + g^2), g^2 = CHROMA_GUARD^2 var + const
    r = torch.rsqrt(torch.add(torch.linalg.vecdot(z, z) + const, var, alpha=CHROMA_GUARD ** 2))
    if weight is None:
        # the mean of <z, t> r as one dot product, with the 1 / B folded into t
        return 1 - torch.dot(torch.linalg.vecdot(z, target_hue / len(z)), r)
    agreement = torch.linalg.vecdot(z, target_hue[:, None, None, :]) * r
    return 1 - (weight * agreement).sum(dim=(1, 2)).mean()


def hue_loss(
        x: torch.Tensor,
        target_hue: torch.Tensor,
        eps: float = 1e-6,
        weight: Optional[torch.Tensor] = None,
        scale_floor: float = 1.0,
) -> torch.Tensor:
    """Mean of 1 - <h(x), t> over the batch, h the smoothed unit hue of docs/math.md.

    Computed in float32 (float64 for float64 ``x``) with autocast off.

    Args:
        x: (B, C) logits or probabilities, or (B, C, H, W) per-location logits.
        target_hue: (B, 2) target hue vectors t(p).
        eps: the smallest smoothing of |z(x)|, in the units of x.
        weight: for per-location input, (B, H, W) location weights summing to 1 per image.
        scale_floor: the input's scale below which the smoothing stops shrinking: 1 for logits
            (the cross-entropy's unit), 1 / C for probabilities.
    """
    if x.dim() == 4 and weight is None:
        raise ValueError('Per-location hue loss needs location weights (B, H, W).')
    with full_precision(x):
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        x = x.to(dtype).movedim(1, -1)
        w = None if weight is None else weight.to(dtype)
        return _hue_term(x, target_hue.to(dtype), scale_floor, eps, weight=w, scaled=True)


def _soft_target_tolerance(dtype: torch.dtype) -> float:
    """How far a soft target may stray from a distribution by rounding alone (4 ulps at 1)."""
    return max(1e-4, 4 * torch.finfo(dtype).eps)


_COMPILED_CHECK_MESSAGE = (
    'U1Loss: invalid input (non-finite (NaN/inf) logits, a target class index out of range, or soft '
    'targets that are not distributions), or logits too large for float32 (beyond ~1e18). Run the loss '
    'without torch.compile for the details; it computes such logits in float64.')


def _bad_rows(*tensors: Optional[torch.Tensor]) -> List[int]:
    """Batch rows holding a NaN or inf in any of ``tensors``."""
    bad = torch.zeros(tensors[0].shape[0], dtype=torch.bool, device=tensors[0].device)
    for t in tensors:
        if t is not None:
            bad |= ~torch.isfinite(t.detach()).flatten(1).all(dim=1)
    return bad.nonzero().flatten().tolist()


class U1Loss(nn.Module):
    """Cross-entropy + lambda * activation-hue loss, for hard or soft targets.

    The U(1) settings are a :class:`~timm_u1.core.u1.U1Config` (``loss.config``); each keyword left
    at None takes its value from ``config`` (default: ``U1Config()``).

    Args:
        hue_weight: lambda; 0 gives exactly (label-smoothed) cross-entropy.
        smoothing: label smoothing for hard targets (soft targets carry their own).
        hue_input: 'logits' or 'probs' (hue of the softmax).
        spatial: hue of the head at every bottleneck location, energy-weighted (needs a
            :class:`~timm_u1.core.u1.U1Output` from ``model.forward_u1`` as input).
        eps: the smallest smoothing of |z(x)| near zero chroma.
        check_finite: raise on NaN/inf logits instead of returning a NaN loss.
        config: the U(1) settings the keywords above override.
    """

    def __init__(
            self,
            hue_weight: Optional[float] = None,
            smoothing: float = 0.0,
            hue_input: Optional[str] = None,
            spatial: Optional[bool] = None,
            eps: Optional[float] = None,
            check_finite: bool = True,
            *,
            config: Optional[U1Config] = None,
    ):
        super().__init__()
        if config is None:
            config = U1Config()
        elif not isinstance(config, U1Config):
            raise TypeError(f'config must be a U1Config, got {type(config).__name__}; use U1Config.from_dict.')
        given = dict(hue_weight=hue_weight, hue_input=hue_input, spatial=spatial, eps=eps)
        self.config = dataclasses.replace(config, **{k: v for k, v in given.items() if v is not None})
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
            raise ValueError(f'smoothing must be a number in [0, 1), got {smoothing!r}.')
        self.smoothing = float(smoothing)
        self.check_finite = check_finite

    @classmethod
    def from_model(cls, model: nn.Module, **overrides) -> 'U1Loss':
        """A loss with the U(1) settings a model carries in ``pretrained_cfg['u1']``, keywords overriding."""
        return cls(config=get_u1_config(model), **overrides)

    # the settings read through to the one U1Config (assigning one validates it)
    def _set(self, **change) -> None:
        self.config = dataclasses.replace(self.config, **change)

    hue_weight = property(lambda self: self.config.hue_weight, lambda self, v: self._set(hue_weight=v))
    hue_input = property(lambda self: self.config.hue_input, lambda self, v: self._set(hue_input=v))
    spatial = property(lambda self: self.config.spatial, lambda self, v: self._set(spatial=v))
    eps = property(lambda self: self.config.eps, lambda self, v: self._set(eps=v))

    def extra_repr(self) -> str:
        return (f'hue_weight={self.hue_weight}, smoothing={self.smoothing}, hue_input={self.hue_input!r}, '
                f'spatial={self.spatial}, eps={self.eps}')

    def _check_shapes(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> None:
        """Shapes and dtypes: free, no tensor is read."""
        logits = x.logits if isinstance(x, U1Output) else x
        if logits.dim() != 2:
            raise ValueError(f'Logits must be (B, C), got shape {tuple(logits.shape)}.')
        b, c = logits.shape
        if c < 3:
            raise ValueError(f'The U(1) hue loss needs C >= 3 classes, got logits with C={c}.')
        if b == 0:
            # a mean over no samples is NaN; refused rather than returned as 0, which would hide
            # a data pipeline that yields empty batches
            raise ValueError('U1Loss got an empty batch (0 rows of logits); skip empty batches before the loss.')
        if target.dtype.is_floating_point:
            if target.shape != logits.shape:
                raise ValueError(
                    f'Soft targets must match the logits shape {tuple(logits.shape)}, got {tuple(target.shape)}.')
        elif target.dtype in (torch.bool, torch.complex64, torch.complex128) or target.dim() != 1:
            raise ValueError(
                f'Hard targets must be integer class indices of shape ({b},), got dtype {target.dtype} '
                f'shape {tuple(target.shape)}; pass soft targets as float (B, C).')
        elif target.shape[0] != b:
            raise ValueError(f'Batch size mismatch: {b} logits and {target.shape[0]} targets.')
        if self.hue_weight and self.spatial and (not isinstance(x, U1Output) or x.spatial_logits is None):
            raise ValueError(
                'U1Loss(spatial=True) needs the output of model.forward_u1(x, spatial=True), not plain logits.')

    def _compute(
            self, x: Union[torch.Tensor, U1Output], target: torch.Tensor, dtype: torch.dtype, scaled: bool = False,
    ) -> Tuple[U1LossParts, torch.Tensor]:
        """The loss in ``dtype`` and a flag that is False where the input (or the result) is bad.

        ``scaled``: the hue computed on inputs scaled down by a power of two, for logits whose
        squares overflow (the same function, two more autograd nodes).
        """
        logits = (x.logits if isinstance(x, U1Output) else x).to(dtype)
        c = logits.shape[1]
        if target.dtype.is_floating_point:
            p = target.to(dtype)
            ce = F.cross_entropy(logits, p)
            tol = _soft_target_tolerance(target.dtype)
            ok = (p.amin() >= -tol) & ((p.sum(1) - 1).abs().amax() <= tol)
        else:
            # clamped, so that no kernel fails on a bad index before the flag reports it (on a GPU a
            # failing kernel is a device-side assert, not an exception), and -100 is not ignored
            index = target.long().clamp(0, c - 1)
            ok = (index == target).all()
            if self.smoothing:  # F.cross_entropy(label_smoothing=) costs 3x this, for the same value
                log_p = F.log_softmax(logits, dim=-1)
                ce = torch.add(F.nll_loss(log_p, index) * (1 - self.smoothing), log_p.mean(), alpha=-self.smoothing)
            else:
                ce = F.cross_entropy(logits, index)
        largest = torch.linalg.vector_norm(logits.detach(), ord=math.inf)  # NaN/inf iff a logit is
        if not self.hue_weight:
            total, hue = ce, torch.zeros_like(ce)
        else:
            roots = label_hue_vectors(c, device=logits.device, dtype=dtype)
            if target.dtype.is_floating_point:
                t = p @ roots
            else:
                # the roots of unity sum to 0: smoothing keeps the angle and shrinks |t| by (1 - s)
                t = roots.index_select(0, index)
                if self.smoothing:
                    t = t * (1 - self.smoothing)
            hue = self._hue(x, logits, t, scaled)
            total = torch.add(ce, hue, alpha=self.hue_weight)
            if self.spatial:
                largest = torch.maximum(largest, torch.linalg.vector_norm(x.spatial_logits.detach(), ord=math.inf))
        # beyond this the squares of the unscaled hue term could overflow: to the scaled recomputation.
        # Finite logits within it, good targets: every term is finite but the spatial one, whose
        # bottleneck features are not among the logits
        limit = math.inf if scaled else math.sqrt(torch.finfo(dtype).max / (c + 1)) / 2
        ok = ok & (largest <= limit)
        if self.spatial and self.hue_weight:
            ok = ok & torch.isfinite(total.detach())
        return U1LossParts(total, ce, hue), ok

    def _hue(
            self, x: Union[torch.Tensor, U1Output], logits: torch.Tensor, t: torch.Tensor, scaled: bool,
    ) -> torch.Tensor:
        """The unweighted hue term, of the logits, their softmax or every location's logits."""
        c, eps = logits.shape[1], self.eps
        probs = self.hue_input == 'probs'
        floor = 1.0 / c if probs else 1.0
        if self.spatial:
            e = x.energy_map.to(logits.dtype)
            weight = e / e.sum(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
            hue_in = x.spatial_logits.to(logits.dtype).movedim(1, -1)
            if probs:
                hue_in = hue_in.softmax(-1)
            return _hue_term(hue_in, t, floor, eps, weight=weight, scaled=scaled and not probs)
        if probs:  # probabilities are in [0, 1]: never scaled
            return _hue_term(logits.softmax(-1), t, floor, eps)
        return _hue_term(logits, t, floor, eps, scaled=scaled)

    def _explain(self, x: Union[torch.Tensor, U1Output], logits: torch.Tensor, target: torch.Tensor) -> bool:
        """Raise the error that names what is wrong with the input; else return whether it is finite
        (it may not be with ``check_finite=False``)."""
        c = logits.shape[1]
        spatial = (x.spatial_logits, x.features) if self.spatial and self.hue_weight else ()
        bad = _bad_rows(logits, *spatial)
        if self.check_finite and bad:
            what = 'logits' if _bad_rows(logits) else 'spatial logits or bottleneck features'
            raise ValueError(
                f'Non-finite (NaN/inf) {what} in batch rows {bad[:10]}; check the learning rate and inputs.')
        if not target.dtype.is_floating_point:
            if int(target.min()) < 0 or int(target.max()) >= c:
                raise ValueError(
                    f'Target class index out of range [0, {c}): min {int(target.min())}, max {int(target.max())}.')
            return not bad
        tol = _soft_target_tolerance(target.dtype)
        if not bool(torch.isfinite(target).all()):
            raise ValueError(f'Soft targets hold NaN/inf in batch rows {_bad_rows(target)[:10]}; '
                             f'pass a distribution over the classes.')
        if float(target.min()) < -tol:
            raise ValueError(
                f'Soft targets must be class probabilities, got negative entries (min {float(target.min()):.4g}); '
                f'pass a distribution over the classes, e.g. softmax or timm Mixup targets.')
        sums = target.sum(dim=1, dtype=logits.dtype)
        if float((sums - 1).abs().max()) > tol:
            raise ValueError(
                f'Soft targets must sum to 1 over the classes (a distribution), got row sums in '
                f'[{float(sums.min()):.4g}, {float(sums.max()):.4g}]; normalise them '
                f'(target / target.sum(1, keepdim=True)).')
        return not bad

    def parts(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> U1LossParts:
        """Total loss and its two terms (CE and the unweighted hue loss)."""
        self._check_shapes(x, target)
        logits = x.logits if isinstance(x, U1Output) else x
        # float32 (float64 for float64 logits) with autocast off: bfloat16 would bend the hue
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        with full_precision(logits):
            parts, ok = self._compute(x, target, dtype)
            if torch.compiler.is_compiling():
                torch._assert_async(ok, _COMPILED_CHECK_MESSAGE)
                return parts
            if bool(ok):  # the one host sync of a call
                return parts
            if self._explain(x, logits, target):  # good input: the loss overflowed
                return self._without_overflow(x, target, dtype)
            return parts  # non-finite input with check_finite=False: the NaN asked for

    def _without_overflow(
            self, x: Union[torch.Tensor, U1Output], target: torch.Tensor, dtype: torch.dtype,
    ) -> U1LossParts:
        """The input is good but its squares overflow ``dtype`` (logits beyond ~1e18 in float32): the
        same loss computed in float64 on scaled inputs, returned in ``dtype`` if it fits."""
        parts, ok = self._compute(x, target, torch.float64, scaled=True)
        if bool(ok) and bool(torch.isfinite(parts.total.to(dtype))):
            return U1LossParts(*(v.to(dtype) for v in parts))
        logits = x.logits if isinstance(x, U1Output) else x
        largest = float(torch.linalg.vector_norm(logits.detach().double(), ord=math.inf))
        hint = ('pass float64 logits (logits.double()) or ' if dtype != torch.float64 else '')
        raise ValueError(
            f'U1Loss: the loss overflows {str(dtype).replace("torch.", "")} (logits as large as {largest:.3g}); '
            f'{hint}lower the learning rate: the model diverged.')

    def forward(self, x: Union[torch.Tensor, U1Output], target: torch.Tensor) -> torch.Tensor:
        return self.parts(x, target).total
