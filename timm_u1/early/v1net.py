""" ``lgn_v1net_s`` / ``lgn_v1net_m``: a small CNN after Bertoni et al. (arXiv 2104.08537), registered in timm.

    image -> l0 (LGNPrefilter: luminance, one 7x7 filter, ReLU) -> l1 (V1Layer: conv, lateral propagation
    h_{t+1} = ReLU(u + K * h_t)) -> 2 x (max-pool 2, conv 3x3 + BN + ReLU) -> global average pool -> linear

The paper's own sizes and hyperparameters could not be read (../shared/SPEC-early-layers.md); these
are the defaults chosen for this project (docs/early.md): ``_s`` for a CPU (32 px input, 16 l1
filters of 7x7, lateral kernel 7x7 over T = 2 steps), ``_m`` for a GPU (64 px, 64 filters, 9x9, T = 4).
Ablations are model arguments: ``lateral_steps=0`` (no lateral propagation: l1 is ReLU(u)),
``prefilter=False`` (luminance only, no l0 filter), ``lateral_mode='filter_correlation'`` (the
parameter-free KerCNN kernel instead of a learned one)::

    model = timm.create_model('lgn_v1net_s', num_classes=26, lateral_steps=0)

The models take RGB input (timm's data pipeline), normalised with mean 0.5 and std 0.25 per channel
(a global offset, no per-crop standardisation: contrast is l0's work), and convert it to luminance.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from timm.layers import ClassifierHead, ConvNormAct
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model

from .lateral import LATERAL_KERNELS, LateralPropagation
from .lgn import LGNPrefilter, PREFILTER_MODES, ToGray

__all__ = ['V1Layer', 'V1Net', 'V1NET_MODELS']

V1NET_MODELS = ('lgn_v1net_s', 'lgn_v1net_m')


class V1Layer(nn.Module):
    """l1: a feed-forward conv ``u = Psi1 * x + b1`` and lateral propagation of u (the 'recurrent' rule)."""

    def __init__(self, in_chans: int, width: int, kernel_size: int = 7, lateral_steps: int = 2,
                 lateral_kernel: int = 7, lateral_mode: str = 'learned', lateral_init_std: float = 1e-3):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, kernel_size, padding=kernel_size // 2)
        self.lateral = LateralPropagation(width, lateral_kernel, lateral_steps, rule='recurrent', kernel=lateral_mode,
                                          init_std=lateral_init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lateral(self.conv(x), self.conv.weight)


class V1Net(nn.Module):
    """The network of the module docstring; a timm model (forward_features / forward_head,
    reset_classifier, forward_intermediates, features_only)."""

    def __init__(
            self,
            num_classes: int = 1000,
            in_chans: int = 3,
            prefilter: bool = True,
            prefilter_kernel: int = 7,
            prefilter_mode: str = 'to_gray',
            width: int = 32,
            kernel_size: int = 7,
            lateral_steps: int = 2,
            lateral_kernel: int = 7,
            lateral_mode: str = 'learned',
            widths: Tuple[int, ...] = (64, 128),
            drop_rate: float = 0.0,
            global_pool: str = 'avg',
            **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            raise TypeError(f'V1Net got unknown arguments {sorted(kwargs)}.')
        if prefilter_mode not in PREFILTER_MODES:
            raise ValueError(f'prefilter_mode must be one of {list(PREFILTER_MODES)}, got {prefilter_mode!r}.')
        if lateral_mode not in LATERAL_KERNELS:
            raise ValueError(f'lateral_mode must be one of {list(LATERAL_KERNELS)}, got {lateral_mode!r}.')
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        if prefilter:
            self.lgn: nn.Module = LGNPrefilter(prefilter_kernel, in_chans, mode=prefilter_mode, act='relu')
            chans = self.lgn.out_chans
        elif prefilter_mode == 'to_gray':
            self.lgn, chans = ToGray(in_chans), 1  # the ablation keeps the input the full model's l0 sees
        else:
            self.lgn, chans = nn.Identity(), in_chans
        self.v1 = V1Layer(chans, width, kernel_size, lateral_steps, lateral_kernel, lateral_mode)
        stages, prev = [], width
        self.feature_info: List[Dict[str, Any]] = [dict(num_chs=width, reduction=1, module='v1')]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(nn.MaxPool2d(2), ConvNormAct(prev, w, 3, padding=1)))
            self.feature_info.append(dict(num_chs=w, reduction=2 ** (i + 1), module=f'stages.{i}'))
            prev = w
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head = ClassifierHead(prev, num_classes, pool_type=global_pool, drop_rate=drop_rate)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^lgn|^v1', blocks=r'^stages\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.v1(self.lgn(x))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def _take(self, indices: Optional[Union[int, List[int]]]) -> Tuple[List[int], int]:
        count = len(self.stages) + 1  # l1, then each stage
        if indices is None:
            take = list(range(count))
        elif isinstance(indices, int):
            take = list(range(count - indices, count))
        else:
            take = [count + i if i < 0 else i for i in indices]
        if not take or min(take) < 0 or max(take) >= count:
            raise ValueError(f'feature indices must lie in [0, {count}), got {indices!r}.')
        return take, max(take)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """timm's forward_intermediates: the l1 output (index 0) and each stage's (1, 2, ...)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}.")
        take, last = self._take(indices)
        intermediates = []
        x = self.v1(self.lgn(x))
        if 0 in take:
            intermediates.append(x)
        stages = self.stages if not stop_early else self.stages[:last]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i + 1 in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take, last = self._take(indices)
        self.stages = self.stages[:last]
        if prune_head:
            self.reset_classifier(0, '')
        return take


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> V1Net:
    return build_model_with_cfg(V1Net, variant, pretrained, feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2)),
                                **kwargs)


def _cfg(size: int, pool: int) -> Dict[str, Any]:
    return dict(
        url='', num_classes=1000, input_size=(3, size, size), pool_size=(pool, pool), crop_pct=1.0,
        interpolation='bilinear', mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), first_conv='v1.conv',
        classifier='head.fc', license='apache-2.0')


default_cfgs = generate_default_cfgs({
    'lgn_v1net_s': _cfg(32, 8),
    'lgn_v1net_m': _cfg(64, 16),
})


@register_model
def lgn_v1net_s(pretrained: bool = False, **kwargs: Any) -> V1Net:
    """CPU size: 16 l1 filters of 7x7, lateral kernel 7x7 over 2 steps, stages of 64 and 128 channels."""
    args = dict(width=16, kernel_size=7, lateral_steps=2, lateral_kernel=7, widths=(64, 128))
    return _create('lgn_v1net_s', pretrained, **dict(args, **kwargs))


@register_model
def lgn_v1net_m(pretrained: bool = False, **kwargs: Any) -> V1Net:
    """GPU size: 64 l1 filters of 7x7, lateral kernel 9x9 over 4 steps, stages of 128 and 256 channels."""
    args = dict(width=64, kernel_size=7, lateral_steps=4, lateral_kernel=9, widths=(128, 256))
    return _create('lgn_v1net_m', pretrained, **dict(args, **kwargs))
