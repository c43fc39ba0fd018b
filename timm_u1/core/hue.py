""" Activation hue: the U(1) geometry of activation vectors and of the image plane.

Definitions as in docs/math.md (arXiv 2206.02220 / 2310.03911). For an activation
vector v in R^N (N >= 3):

* medial ("grey") axis m = (1, ..., 1) / sqrt(N); luminance L(v) = <v, m>
* hue plane basis u_k = sqrt(2/N) cos(2 pi k / N), w_k = sqrt(2/N) sin(2 pi k / N)
* hue components a = <v, u>, b = <v, w>; z(v) = a + i b
* hue angle theta = atan2(b, a) in (-pi, pi]; chroma C = |z|; energy E = ||v||^2

Every function takes a ``dim`` argument naming the channel dimension, works on any batch layout
(NC, NCHW, NLC, ...) and computes in float32 (or float64 when given float64), so float16 and
bfloat16 activations are safe; inside ``torch.autocast`` too, which would otherwise run the
projection in bfloat16 (angles off by up to 19 degrees for logits around 50). Vectors are scaled by
a power of two near their largest magnitude before projecting, exactly (no rounding), so huge
(>= 1e20) and tiny vectors get the hue of their direction instead of overflowing. Zero chroma has no
angle: :func:`hue_angle` returns NaN there.
"""
import contextlib
import math
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import torch

__all__ = [
    'HueStats', 'hue_basis', 'luminance', 'hue_components', 'hue_angle', 'chroma', 'energy',
    'activation_hue', 'chroma_tolerance', 'label_hue', 'label_hue_vectors', 'target_hue_vector',
    'image_plane_grid', 'energy_centroid', 'EnergyCentroid',
]

# Chroma at or below this fraction of ||v|| is zero within float32 rounding of the projection.
CHROMA_RTOL = 1e-5


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_channels(x: torch.Tensor, dim: int, what: str = 'input') -> int:
    if x.dim() == 0:
        raise ValueError(f'{what} is a scalar; activation hue needs a tensor with a channel dimension.')
    n = x.shape[dim]
    if n < 3:
        raise ValueError(
            f'{what} has {n} channels along dim={dim}; activation hue needs N >= 3 channels '
            f'(shape {tuple(x.shape)}). Pass the channel dimension with dim=.')
    return n


@lru_cache(maxsize=64)
def _hue_basis(num_channels: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # a normal tensor even when first asked for under torch.inference_mode (e.g. by analyze): the cached basis
    # also serves training steps, and autograd refuses inference tensors
    with torch.inference_mode(False):
        k = torch.arange(num_channels, dtype=torch.float64)
        angle = 2 * math.pi * k / num_channels
        scale = math.sqrt(2.0 / num_channels)
        return torch.stack([scale * torch.cos(angle), scale * torch.sin(angle)], dim=1).to(dtype=dtype, device=device)


def _device(device: Optional[torch.device]) -> torch.device:
    return torch.device('cpu') if device is None else torch.device(device)


def hue_basis(
        num_channels: int,
        device: Optional[torch.device] = None,
        dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The orthonormal hue-plane basis as an (N, 2) matrix with columns u and w (cached: do not modify)."""
    if num_channels < 3:
        raise ValueError(f'Activation hue needs N >= 3 channels, got {num_channels}.')
    return _hue_basis(num_channels, dtype, _device(device))


@lru_cache(maxsize=64)
def _label_hue_vectors(num_classes: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):  # a normal tensor, as _hue_basis
        theta = 2 * math.pi * torch.arange(num_classes, dtype=torch.float64) / num_classes
        return torch.stack([torch.cos(theta), torch.sin(theta)], dim=1).to(dtype=dtype, device=device)


def label_hue_vectors(
        num_classes: int,
        device: Optional[torch.device] = None,
        dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(C, 2) unit vectors (cos, sin) of the label hues 2 pi c / C (cached: do not modify)."""
    if num_classes < 3:
        raise ValueError(f'Label hue needs C >= 3 classes, got {num_classes}.')
    return _label_hue_vectors(num_classes, dtype, _device(device))


def _channels_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    return x.movedim(dim, -1).to(_compute_dtype(x))


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Context that turns autocast off for ``x``'s device, so float32 math stays float32."""
    device = x.device.type
    # entering an autocast context costs more than the checks: only where autocast is on
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device_type=device, enabled=False)
    return contextlib.nullcontext()


def pow2_scale(x: torch.Tensor) -> torch.Tensor:
    """A power of two near max |x| along the last dim (keepdim), 1 where that is 0 or not finite.

    Dividing by a power of two is exact, so ``x / pow2_scale(x)`` has the same digits with a
    largest magnitude in [1, 2): squares and sums of it neither overflow nor underflow.
    """
    m = torch.linalg.vector_norm(x.detach(), ord=math.inf, dim=-1, keepdim=True)  # one pass; NaN stays NaN
    s = torch.exp2(torch.floor(torch.log2(m)))
    return torch.where(torch.isfinite(s) & (s > 0), s, torch.ones_like(s))


def _scaled(x: torch.Tensor, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x / s, s): channels last, in the compute dtype, scaled by :func:`pow2_scale`."""
    xl = _channels_last(x, dim)
    s = pow2_scale(xl)
    return xl / s, s.squeeze(-1)


def luminance(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Projection on the medial axis (1, ..., 1)/sqrt(N)."""
    n = _check_channels(x, dim)
    with full_precision(x):
        xs, s = _scaled(x, dim)
        return xs.sum(-1) / math.sqrt(n) * s


def hue_components(x: torch.Tensor, dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Hue-plane coordinates (a, b) of every vector along ``dim``; ``dim`` is reduced."""
    n = _check_channels(x, dim)
    with full_precision(x):
        xs, s = _scaled(x, dim)
        ab = xs @ hue_basis(n, device=x.device, dtype=xs.dtype)
        return ab[..., 0] * s, ab[..., 1] * s


def chroma(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Length of the hue-plane projection, sqrt(a^2 + b^2)."""
    a, b = hue_components(x, dim)
    return torch.hypot(a, b)


def energy(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Squared L2 norm of every vector along ``dim``."""
    with full_precision(x):
        return _channels_last(x, dim).square().sum(-1)


def chroma_tolerance(norm: torch.Tensor) -> torch.Tensor:
    """Chroma below which a vector of this L2 norm counts as achromatic (no defined angle)."""
    return CHROMA_RTOL * norm + torch.finfo(norm.dtype).tiny


def _angle_from(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    theta = torch.atan2(b, a)
    # atan2 gives [-pi, pi]; the spec's range is (-pi, pi]
    theta = torch.where(theta == -math.pi, torch.full_like(theta, math.pi), theta)
    return theta.masked_fill(c <= chroma_tolerance(norm), float('nan'))


def hue_angle(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Hue angle atan2(b, a) in (-pi, pi]; NaN where the chroma is zero (no angle exists)."""
    return activation_hue(x, dim).angle


class HueStats(NamedTuple):
    """Per-vector activation-hue quantities; the channel dimension is reduced."""
    luminance: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    angle: torch.Tensor  # NaN where chroma is zero
    chroma: torch.Tensor
    energy: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        """Mask of vectors with a defined hue angle."""
        return ~torch.isnan(self.angle)


def activation_hue(x: torch.Tensor, dim: int = 1) -> HueStats:
    """All activation-hue quantities of ``x`` in one pass."""
    n = _check_channels(x, dim)
    with full_precision(x):
        xs, s = _scaled(x, dim)
        ab = xs @ hue_basis(n, device=x.device, dtype=xs.dtype)
        a, b = ab[..., 0], ab[..., 1]
        c = torch.hypot(a, b)
        e = xs.square().sum(-1)
        # the angle and its zero-chroma test are scale-free: take them before scaling back
        angle = _angle_from(a, b, c, e.sqrt())
        return HueStats(xs.sum(-1) / math.sqrt(n) * s, a * s, b * s, angle, c * s, e * s * s)


def label_hue(num_classes: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """Hue angle 2 pi c / C of each class c: the hue of the one-hot vector e_c."""
    if num_classes < 3:
        raise ValueError(f'Label hue needs C >= 3 classes, got {num_classes}.')
    return 2 * math.pi * torch.arange(num_classes, device=device, dtype=torch.float32) / num_classes


def target_hue_vector(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Target hue vector t(p) = sum_c p_c exp(i theta_c) as a (B, 2) tensor of (real, imag).

    ``target`` holds class indices (B,) or class probabilities (B, C): hard labels, label-smoothed,
    mixup or cutmix targets. Its angle is the target hue and its length (<= 1) the confidence.
    """
    if num_classes < 3:
        raise ValueError(f'Label hue needs C >= 3 classes, got {num_classes}.')
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    roots = label_hue_vectors(num_classes, device=target.device, dtype=dtype)
    if target.dtype.is_floating_point or target.dtype.is_complex:
        if target.dim() != 2 or target.shape[1] != num_classes:
            raise ValueError(
                f'Soft targets must have shape (B, {num_classes}), got {tuple(target.shape)}.')
        with full_precision(target):
            return target.to(dtype) @ roots
    if target.dtype == torch.bool or target.dim() != 1:
        raise ValueError(
            f'Hard targets must be integer class indices of shape (B,), got dtype {target.dtype} '
            f'shape {tuple(target.shape)}.')
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(
            f'Target class index out of range [0, {num_classes}): '
            f'min {int(target.min())}, max {int(target.max())}.')
    return roots[target.long()]  # any integer dtype; uint8 would otherwise index as a mask


def image_plane_grid(
        height: int,
        width: int,
        device: Optional[torch.device] = None,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Offsets from the grid centre ((W-1)/2, (H-1)/2): (dx, dy, phi, r), each of shape (H, W).

    ``phi = atan2(dy, dx)`` with y growing downwards (row index), as in image coordinates.
    """
    ys = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
    xs = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
    dy, dx = torch.meshgrid(ys, xs, indexing='ij')
    return dx, dy, torch.atan2(dy, dx), torch.hypot(dx, dy)


class EnergyCentroid(NamedTuple):
    x: torch.Tensor  # offset from the grid centre, in grid cells
    y: torch.Tensor
    angle: torch.Tensor  # atan2(y, x); NaN where the centroid is at the centre (or no energy)
    length: torch.Tensor  # |centroid| / grid half-size, 0 = perfectly centred


def energy_centroid(energy_map: torch.Tensor) -> EnergyCentroid:
    """Energy-weighted centroid of (..., H, W) energy maps relative to the grid centre.

    The length is normalised by the grid's half-size, max((W-1)/2, (H-1)/2), so a centroid at
    the middle of an edge has length 1. Maps with no energy give NaN for every field.
    """
    if energy_map.dim() < 2:
        raise ValueError(f'energy_centroid needs (..., H, W) maps, got shape {tuple(energy_map.shape)}.')
    h, w = energy_map.shape[-2:]
    if h * w < 2:
        raise ValueError(f'energy_centroid needs more than one location, got a {h}x{w} grid.')
    e = energy_map.to(_compute_dtype(energy_map))
    dx, dy, _, _ = image_plane_grid(h, w, device=e.device)  # element-wise only: autocast leaves it alone
    total = e.sum(dim=(-2, -1))
    total_safe = torch.where(total > 0, total, torch.full_like(total, float('nan')))
    cx = (e * dx.to(e.dtype)).sum(dim=(-2, -1)) / total_safe
    cy = (e * dy.to(e.dtype)).sum(dim=(-2, -1)) / total_safe
    half = max((w - 1) / 2, (h - 1) / 2)
    length = torch.hypot(cx, cy) / half
    angle = torch.atan2(cy, cx).masked_fill(length <= 1e-6, float('nan'))
    return EnergyCentroid(cx, cy, angle, length)
