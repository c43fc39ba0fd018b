""" The LGN-like pre-filter l0 (Bertoni, Citti, Sarti, LGN-CNN, arXiv 1911.06276): one learned s0 x s0
filter and an activation, applied before the first conv without changing the image size.

Three ways to meet a colour image (docs/early.md):

* ``shared``: the one filter on every input channel (a depthwise conv with a shared kernel): channels
  and size unchanged, s0^2 parameters. What :func:`timm_u1.early.stem.add_v1_stem` puts in front of a
  pretrained stem, as an identity at initialisation (``act='identity'``, ``init='delta'``).
* ``to_gray``: luminance first (ITU-R BT.601 weights, which sum to 1, so a grey image repeated over
  RGB gives back its grey level), then the filter: one output channel. The registered
  ``lgn_v1net_*`` models use it.
* ``per_channel``: one filter per input channel (C s0^2 parameters).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['LGNPrefilter', 'ToGray', 'PREFILTER_MODES', 'LUMA_WEIGHTS']

PREFILTER_MODES = ('shared', 'to_gray', 'per_channel')
_ACTS = ('relu', 'identity')
_INITS = ('delta', 'kaiming')
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601


def _luma(in_chans: int) -> torch.Tensor:
    if in_chans == 3:
        weights = torch.tensor(LUMA_WEIGHTS)
    else:  # grey input (or an unusual channel count): the channels' mean
        weights = torch.full((in_chans,), 1.0 / in_chans)
    return weights.reshape(1, in_chans, 1, 1)


class ToGray(nn.Module):
    """Luminance of an image: (B, C, H, W) -> (B, 1, H, W); no parameters."""

    def __init__(self, in_chans: int = 3):
        super().__init__()
        self.in_chans = in_chans
        self.register_buffer('luma', _luma(in_chans), persistent=False)  # fixed: not a weight to save

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.luma.to(x.dtype))


class LGNPrefilter(nn.Module):
    """l0: ``act(Psi0 * x)`` with one learned ``kernel_size`` x ``kernel_size`` filter, 'same' zero padding.

    Args:
        kernel_size: s0 (odd, so that the output is centred on the input).
        in_chans: Input channels.
        mode: ``'shared'``, ``'to_gray'`` or ``'per_channel'`` (see the module docstring).
        act: ``'relu'`` (LGN-CNN's l0) or ``'identity'`` (a linear pre-filter, for wrapping pretrained stems).
        init: ``'delta'`` (the identity filter: the pre-filter is then exactly the identity map, or a
            ReLU) or ``'kaiming'`` (He-normal for a ReLU, fan-in s0^2).
        bias: Add a learned bias before the activation.
    """

    def __init__(self, kernel_size: int = 7, in_chans: int = 3, mode: str = 'shared', act: str = 'relu',
                 init: str = 'kaiming', bias: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f'the pre-filter kernel_size must be odd and >= 1 (centred), got {kernel_size}.')
        if mode not in PREFILTER_MODES:
            raise ValueError(f'pre-filter mode must be one of {list(PREFILTER_MODES)}, got {mode!r}.')
        if act not in _ACTS or init not in _INITS:
            raise ValueError(f'pre-filter act must be one of {list(_ACTS)} and init one of {list(_INITS)}, '
                             f'got act={act!r}, init={init!r}.')
        self.kernel_size = kernel_size
        self.in_chans = in_chans
        self.mode = mode
        self.act = act
        self.out_chans = 1 if mode == 'to_gray' else in_chans
        filters = in_chans if mode == 'per_channel' else 1
        self.weight = nn.Parameter(torch.empty(filters, 1, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(filters)) if bias else None
        self.register_buffer('luma', _luma(in_chans), persistent=False)
        self.reset_parameters(init)

    def reset_parameters(self, init: str = 'kaiming') -> None:
        with torch.no_grad():
            if init == 'delta':
                self.weight.zero_()
                self.weight[:, :, self.kernel_size // 2, self.kernel_size // 2] = 1.0
            else:
                self.weight.normal_(0.0, math.sqrt(2.0 / self.kernel_size ** 2))
            if self.bias is not None:
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        if self.mode == 'to_gray':
            x = F.conv2d(x, self.luma.to(x.dtype))
            y = F.conv2d(x, self.weight, self.bias, padding=pad)
        else:
            channels = x.shape[1]
            weight = self.weight if self.mode == 'per_channel' else self.weight.expand(channels, 1, -1, -1)
            bias = self.bias
            if bias is not None and self.mode == 'shared':
                bias = bias.expand(channels)
            y = F.conv2d(x, weight, bias, padding=pad, groups=channels)
        if self.act == 'relu':
            y = F.relu(y)
        return y

    def filters(self) -> torch.Tensor:
        """The learned filter(s), (filters, k, k)."""
        return self.weight.detach()[:, 0]

    def extra_repr(self) -> str:
        return f'kernel_size={self.kernel_size}, in_chans={self.in_chans}, mode={self.mode!r}, act={self.act!r}'
