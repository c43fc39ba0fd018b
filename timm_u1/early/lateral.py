""" Lateral propagation in the first layer: a connectivity kernel K applied for T steps to the
feed-forward response u, after the V1 horizontal connections of Bertoni et al. (arXiv 2104.08537).

K is stored in conv-weight layout ``K[target j, source i, ky, kx]`` and applied as a 'same'
cross-correlation. Two rules (docs/early.md):

* ``'recurrent'`` (the recurrent convolutional layer of Liang & Hu 2015, the KerCNN scheme with K
  learned): ``h0 = ReLU(u)``, ``h_{t+1} = ReLU(u + K * h_t)``; the output is ``h_T``, so T = 0 gives
  ``ReLU(u)``. The registered ``lgn_v1net_*`` models use it.
* ``'linear'``: ``h0 = u``, ``h_{t+1} = u + K * ReLU(h_t)``: the output stays a linear-range response
  (what the normalisation after a pretrained stem expects) and K = 0 gives exactly u, which is what
  makes :func:`timm_u1.early.stem.add_v1_stem` function-identical at initialisation.

Two kernels: ``'learned'`` (a parameter) and ``'filter_correlation'``, the parameter-free baseline
of KerCNN / Montobbio et al.: the correlation of the feed-forward filters' receptive profiles,
rectified and normalised per target (a transition kernel), scaled by a learned eta.

**Direction convention.** conv2d computes ``out_j(p) = sum_i sum_u K[j, i, u] h_i(p + u - c)`` with
c the kernel centre, so the connection *from* source unit (i, q) *to* target unit (j, q + d) is
``K[j, i, c - d]``: the flipped kernel. :func:`connection_maps` returns it as
``A[i, j, c + d_row, c + d_col]`` (rows down); every connectivity analysis reads A, never K.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['LateralPropagation', 'filter_correlation_kernel', 'connection_maps', 'LATERAL_RULES', 'LATERAL_KERNELS']

LATERAL_RULES = ('recurrent', 'linear')
LATERAL_KERNELS = ('learned', 'filter_correlation')


def _pair(v: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def filter_correlation_kernel(weight: torch.Tensor, kernel_size: int, stride: Union[int, Tuple[int, int]] = 1,
                              eps: float = 1e-12) -> torch.Tensor:
    """The KerCNN kernel of a feed-forward bank, in conv-weight layout (targets, sources, k, k).

    ``A_{i->j}(d) = [ <Psi_i at 0, Psi_j at d> ]_+`` over the receptive profiles of the (N, C, s, s)
    ``weight`` (displacement d in output units: ``stride`` input pixels each), each target's row
    normalised to sum 1 over sources and displacements; returned as K with ``K[j, i, c - d] = A_{i->j}(d)``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f'the lateral kernel_size must be odd and >= 1, got {kernel_size}.')
    sy, sx = _pair(stride)
    return _filter_correlation(weight, kernel_size, sy, sx, eps)


def _filter_correlation(weight: torch.Tensor, kernel_size: int, sy: int, sx: int, eps: float = 1e-12) -> torch.Tensor:
    _, _, sh, sw = weight.shape
    c = kernel_size // 2
    py, px = max(sh - 1, sy * c), max(sw - 1, sx * c)
    # conv2d(pad(W, P), W)[i, j, t] = sum_p W_i[p] W_j[p - (t - P)] = <profile i at 0, profile j at d>,
    # d = t - P input pixels; P covers every displacement of the k x k support and every overlap
    corr = F.conv2d(F.pad(weight, [px, px, py, py]), weight)
    maps = corr[:, :, py - sy * c:py + sy * c + 1:sy, px - sx * c:px + sx * c + 1:sx]  # A[i, j, c + d]
    maps = F.relu(maps)
    maps = maps / maps.sum(dim=(0, 2, 3), keepdim=True).clamp_min(eps)  # each target's inputs sum to 1
    return maps.transpose(0, 1).flip(-2, -1)


# a leaf of torch.fx traces (timm's feature extractors): its padding depends on the weight's shape
torch.fx.wrap('_filter_correlation')


def connection_maps(kernel: torch.Tensor) -> torch.Tensor:
    """``A[i, j, c + d_row, c + d_col]``: the weight of the connection from source (i, q) to target
    (j, q + d), from a kernel in conv-weight layout ``K[j, i, ...]`` (``A_{i->j}(d) = K[j, i, c - d]``)."""
    if kernel.dim() != 4 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f'a lateral kernel is (channels, channels, k, k), got shape {tuple(kernel.shape)}.')
    return kernel.transpose(0, 1).flip(-2, -1)


class LateralPropagation(nn.Module):
    """T steps of lateral propagation through a k x k connectivity kernel (see the module docstring).

    Args:
        channels: Channels of u (the feed-forward filters).
        kernel_size: k, odd.
        steps: T >= 0. With T = 0 the module has no kernel and returns ReLU(u) (``'recurrent'``) or u.
        rule: ``'recurrent'`` or ``'linear'``.
        kernel: ``'learned'`` or ``'filter_correlation'`` (computed from the ``ff_weight`` passed to
            :meth:`forward` at every call).
        init_std: Standard deviation of the learned kernel's initial weights (0: zeros).
        eta: Initial value of the learned gain of the filter-correlation kernel.
        stride: The feed-forward conv's stride (the filter-correlation kernel's unit of displacement).
    """

    def __init__(self, channels: int, kernel_size: int = 7, steps: int = 2, rule: str = 'recurrent',
                 kernel: str = 'learned', init_std: float = 1e-3, eta: float = 0.1,
                 stride: Union[int, Tuple[int, int]] = 1):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'the lateral kernel_size must be odd and >= 1 (centred), got {kernel_size}.')
        if steps < 0:
            raise ValueError(f'lateral steps must be >= 0, got {steps}.')
        if rule not in LATERAL_RULES or kernel not in LATERAL_KERNELS:
            raise ValueError(f'lateral rule must be one of {list(LATERAL_RULES)} and kernel one of '
                             f'{list(LATERAL_KERNELS)}, got rule={rule!r}, kernel={kernel!r}.')
        self.channels = channels
        self.kernel_size = kernel_size
        self.steps = steps
        self.rule = rule
        self.kernel_mode = kernel
        self.stride = _pair(stride)
        learned = steps > 0 and kernel == 'learned'
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size)) if learned else None
        self.eta = nn.Parameter(torch.tensor(float(eta))) if steps > 0 and not learned else None
        self.reset_parameters(init_std)

    def reset_parameters(self, init_std: float = 1e-3) -> None:
        if self.weight is not None:
            with torch.no_grad():
                self.weight.normal_(0.0, init_std) if init_std > 0 else self.weight.zero_()

    def kernel(self, ff_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The kernel K of the next forward pass, in conv-weight layout (targets, sources, k, k)."""
        if self.weight is not None:
            return self.weight
        if ff_weight is None:
            raise ValueError('the filter-correlation kernel needs the feed-forward weight (ff_weight).')
        eta = self.eta
        assert eta is not None  # only a module with steps > 0 propagates
        return eta * _filter_correlation(ff_weight, self.kernel_size, self.stride[0], self.stride[1])

    def forward(self, u: torch.Tensor, ff_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.steps == 0:
            return F.relu(u) if self.rule == 'recurrent' else u
        k = self.kernel(ff_weight).to(u.dtype)
        pad = self.kernel_size // 2
        if self.rule == 'recurrent':
            h = F.relu(u)
            for _ in range(self.steps):
                h = F.relu(u + F.conv2d(h, k, padding=pad))
        else:
            h = u
            for _ in range(self.steps):
                h = u + F.conv2d(F.relu(h), k, padding=pad)
        return h

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, kernel_size={self.kernel_size}, steps={self.steps}, '
                f'rule={self.rule!r}, kernel={self.kernel_mode!r}')
