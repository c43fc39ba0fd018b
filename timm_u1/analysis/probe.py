"""Capture the activation map of one layer of a timm model as an NCHW tensor: the bottleneck
(``forward_features``) by default, or any ``feature_info`` layer or submodule (docs/analysis.md, "Use")::

    fmap = capture(model, images, layer='blocks.4')   # (B, C, H, W), no hook left behind
"""
from typing import List, Optional, Union

import torch
from torch import nn

from ..core.u1 import feature_map_nchw

__all__ = ['BOTTLENECK', 'ActivationProbe', 'capture', 'layer_names', 'resolve_layer']

BOTTLENECK = 'bottleneck'

LayerSpec = Union[None, int, str]


def _feature_modules(model: nn.Module) -> List[str]:
    info = getattr(model, 'feature_info', None) or []
    return [f['module'] for f in info if isinstance(f, dict) and f.get('module')]


def layer_names(model: nn.Module) -> List[str]:
    """Layer choices of ``model``: ``'bottleneck'`` then its ``feature_info`` modules, shallow to deep.

    :func:`resolve_layer` also accepts an index into ``feature_info`` and any submodule name.
    """
    return [BOTTLENECK] + _feature_modules(model)


def resolve_layer(model: nn.Module, layer: LayerSpec = None) -> Optional[str]:
    """The submodule name that ``layer`` designates, or None for the bottleneck.

    Raises:
        ValueError: the layer does not exist; the message lists the valid choices.
    """
    if layer is None or layer == BOTTLENECK:
        return None
    feature_modules = _feature_modules(model)
    if isinstance(layer, str) and layer.lstrip('-').isdigit():
        layer = int(layer)  # from a command line
    if isinstance(layer, int):
        if not -len(feature_modules) <= layer < len(feature_modules):
            raise ValueError(
                f'Layer index {layer} is out of range for {type(model).__name__}, which has '
                f'{len(feature_modules)} feature_info layers: {_choices(model)}.')
        return feature_modules[layer]
    if layer in dict(model.named_modules()) and layer != '':
        return layer
    raise ValueError(f"{type(model).__name__} has no layer {layer!r}. Valid layers: {_choices(model)}.")


def _choices(model: nn.Module) -> str:
    names = layer_names(model)
    indices = f', or an index 0..{len(names) - 2} into feature_info' if len(names) > 1 else ''
    return f"{', '.join(names)}{indices}, or any name in model.named_modules()"


class _Captured(Exception):
    """Raised by the hook to stop the forward pass once the probed layer has run."""


class ActivationProbe:
    """Context manager that captures one layer's activation map; its hook is removed on exit.

    Calling the probe runs the model just far enough to produce the map (the rest of the network
    is skipped) and returns it as (B, C, H, W). When you run the model yourself inside the
    ``with`` block, the latest map is in :attr:`output`.

    Args:
        model: Any timm model (or ``u1_`` twin).
        layer: None / ``'bottleneck'``, a ``feature_info`` index or name, or a submodule name.
    """

    def __init__(self, model: nn.Module, layer: LayerSpec = None):
        self.model = model
        self.layer = resolve_layer(model, layer)
        self.output: Optional[torch.Tensor] = None
        self.features: Optional[torch.Tensor] = None  # forward_features' own output, when the bottleneck is probed
        self._handle = None
        self._stop = False
        self._input_size = None  # (H, W) of the images being probed: the token grid of a dynamic-size ViT

    @property
    def layer_name(self) -> str:
        return self.layer or BOTTLENECK

    def __enter__(self) -> 'ActivationProbe':
        if self.layer is not None:
            module = self.model.get_submodule(self.layer)
            self._handle = module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _hook(self, module: nn.Module, args, output) -> None:
        if isinstance(output, (tuple, list)):
            output = output[0]  # blocks that also return attention or state
        if not isinstance(output, torch.Tensor) or output.dim() not in (3, 4):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f'Layer {self.layer!r} outputs {shape}, which is no activation map (B, C, H, W) or token '
                f'grid (B, L, D); choose one of: {_choices(self.model)}.')
        self.output = feature_map_nchw(self.model, output, input_size=self._input_size)
        if self._stop:
            raise _Captured

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model on ``x`` and return the probed layer's map, (B, C, H, W)."""
        if self.layer is None:
            self.features = self.model.forward_features(x)
            self.output = feature_map_nchw(self.model, self.features, input_size=x.shape[-2:])
            return self.output
        if self._handle is None:
            raise RuntimeError('ActivationProbe is not active; use it as `with ActivationProbe(...) as probe:`.')
        self.output = None
        self._stop = True
        self._input_size = tuple(x.shape[-2:])
        try:
            # feature_info layers run inside forward_features; a layer of the head needs the full forward
            for run in (self.model.forward_features, self.model):
                try:
                    run(x)
                except _Captured:
                    return self.output
        finally:
            self._stop = False
            self._input_size = None
        raise RuntimeError(
            f'Layer {self.layer!r} of {type(self.model).__name__} did not run during the forward pass; '
            f'choose one of: {_choices(self.model)}.')


def capture(model: nn.Module, x: torch.Tensor, layer: LayerSpec = None) -> torch.Tensor:
    """Activation map of ``layer`` (default: the bottleneck) for images ``x``, as (B, C, H, W).

    No hook is left on the model afterwards, even if the forward pass fails.
    """
    with ActivationProbe(model, layer) as probe:
        return probe(x)
