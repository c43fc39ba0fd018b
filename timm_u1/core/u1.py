""" ``u1_`` twins of every timm model.

``import timm_u1`` registers ``u1_<arch>`` for every architecture in ``timm.list_models()``, with
the base model's pretrained tags, so that::

    model = timm.create_model('u1_resnet18', num_classes=10)
    model = timm.create_model('u1_convnext_tiny.fb_in1k', pretrained=True)

A twin *is* the base model: the same modules, parameters and ``state_dict`` keys (base weights
load into it and back), the same ``forward`` / ``forward_features`` / ``forward_head`` /
``reset_classifier`` / ``forward_intermediates``. Its class is a subclass of the base class that
adds :meth:`U1ModelMixin.forward_u1`, which returns the logits with their activation hue and the
bottleneck map, and its U(1) settings travel in ``model.pretrained_cfg['u1']`` (and so in the
``config.json`` of a saved model). A twin scripts (``torch.jit.script``), traces, exports
(``torch.export``) and fx-traces wherever its base does, with the same outputs; ``forward_u1`` stays
Python-only. Twin classes (``timm_u1.core.u1.U1ResNet``) resolve by name once ``timm_u1`` is imported, so
a ``torch.save``-d twin loads in a fresh process.
"""
import math
import numbers
import sys
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple, Type, Union

import torch
from torch import nn

import timm
from timm.models import DefaultCfg, PretrainedCfg

from .hue import HueStats, activation_hue, energy
from .registry import register_wrapped_models

__all__ = [
    'U1Config', 'U1Output', 'U1ModelMixin', 'U1_PREFIX', 'register_u1_models', 'is_u1_model',
    'base_model_name', 'feature_map_nchw', 'get_u1_config',
]

U1_PREFIX = 'u1_'


@dataclass
class U1Config:
    """The U(1) settings, declared once: a model's (``model.pretrained_cfg['u1']``) and ``U1Loss``'s.

    Args:
        hue_weight: lambda, the weight of the hue term in ``U1Loss`` (0 = plain cross-entropy).
        hue_input: take the hue of the 'logits' or of the softmax 'probs'.
        spatial: use the spatial variant of the hue loss (classifier at every bottleneck location,
            weighted by the location's share of the energy).
        eps: the smallest smoothing of the hue near zero chroma, in the units of the hue input
            (docs/math.md, "Label hue and the U(1) loss").
    """
    hue_weight: float = 1.0
    hue_input: str = 'logits'
    spatial: bool = False
    eps: float = 1e-6

    def __post_init__(self):
        for name in ('hue_weight', 'eps'):
            value = getattr(self, name)
            # bool is an int to Python, never a weight; a str or None would fail later, far from here
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f'U1Config.{name} must be a finite number, got {value!r}.')
        if self.hue_input not in ('logits', 'probs'):
            raise ValueError(f"U1Config.hue_input must be 'logits' or 'probs', got {self.hue_input!r}.")
        if not isinstance(self.spatial, bool):
            raise ValueError(f'U1Config.spatial must be true or false, got {self.spatial!r}.')
        if self.hue_weight < 0:
            raise ValueError(f'U1Config.hue_weight must be >= 0, got {self.hue_weight}.')
        if self.eps <= 0:
            raise ValueError(f'U1Config.eps must be > 0, got {self.eps}.')

    @classmethod
    def from_dict(cls, cfg: Optional[Dict[str, Any]]) -> 'U1Config':
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ValueError(f'Unknown U(1) settings {sorted(unknown)}; valid keys: {sorted(known)}.')
        return cls(**cfg)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


class U1Output(NamedTuple):
    """What :meth:`U1ModelMixin.forward_u1` returns."""
    logits: torch.Tensor  # (B, C)
    hue: HueStats  # activation hue of the logits (angle NaN where chroma is zero)
    features: torch.Tensor  # bottleneck map, (B, N, H, W)
    spatial_logits: Optional[torch.Tensor] = None  # (B, C, H, W): the head at every location

    @property
    def angle(self) -> torch.Tensor:
        return self.hue.angle

    @property
    def chroma(self) -> torch.Tensor:
        return self.hue.chroma

    @property
    def energy_map(self) -> torch.Tensor:
        """E(x, y) = ||I(x, y)||^2 of the bottleneck map, (B, H, W)."""
        return energy(self.features, dim=1)


def _token_grids(model: nn.Module, input_size: Optional[Tuple[int, int]]) -> Iterator[Tuple[int, int]]:
    """Candidate (H, W) patch grids of a ViT-style model: the one its patch embedding makes of an input
    of ``input_size`` first, then its fixed ``grid_size``."""
    patch_embed = getattr(model, 'patch_embed', None)
    if patch_embed is None:
        return
    if input_size is not None:
        size = (int(input_size[0]), int(input_size[1]))
        if hasattr(patch_embed, 'dynamic_feat_size'):  # timm's own rule, dynamic padding included
            yield tuple(int(s) for s in patch_embed.dynamic_feat_size(size))
        elif getattr(patch_embed, 'patch_size', None) is not None:
            p = patch_embed.patch_size
            p = (p, p) if isinstance(p, int) else p
            yield size[0] // p[0], size[1] // p[1]
    grid = getattr(patch_embed, 'grid_size', None)
    if grid is not None:
        yield int(grid[0]), int(grid[1])


def feature_map_nchw(
        model: nn.Module,
        features: torch.Tensor,
        input_size: Optional[Tuple[int, int]] = None,
) -> torch.Tensor:
    """Bring ``forward_features`` output of a timm model to an NCHW map.

    CNN maps are NCHW already; NHWC maps (``model.output_fmt == 'NHWC'``, e.g. Swin) are permuted;
    ViT-style token sequences (B, L, D) lose their class/register tokens and become a (B, D, H, W)
    grid of patch tokens.

    Args:
        model: The model that computed ``features``.
        features: Its ``forward_features`` output.
        input_size: (H, W) of the input images. Needed for the token grid of models with
            ``dynamic_img_size=True`` fed other sizes than their ``img_size``: a 128x32 input gives an
            8x2 grid of 16 px patches, which the token count alone (16) cannot tell from 4x4.
    """
    if features.dim() == 4:
        if getattr(model, 'output_fmt', 'NCHW') == 'NHWC':
            return features.permute(0, 3, 1, 2)
        return features
    if features.dim() == 3:
        num_prefix = int(getattr(model, 'num_prefix_tokens', 0) or 0)
        tokens = features[:, num_prefix:]
        length = tokens.shape[1]
        grid = next((g for g in _token_grids(model, input_size) if g[0] * g[1] == length), None)
        if grid is None:
            side = int(round(length ** 0.5))
            if side * side != length:
                raise ValueError(
                    f'Cannot arrange {length} tokens of {type(model).__name__} as a 2-D grid '
                    f'({num_prefix} prefix tokens dropped); use a model with an NCHW feature map.')
            grid = (side, side)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid[0], grid[1])
    raise ValueError(
        f'{type(model).__name__}.forward_features returned shape {tuple(features.shape)}, which has '
        f'no spatial map; U(1) analysis needs (B, C, H, W) maps or (B, L, D) token grids.')


class U1ModelMixin:
    """Adds the U(1) call to a timm model class. Mixed in front of the base class."""

    @property
    def u1_cfg(self) -> U1Config:
        return U1Config.from_dict(self.pretrained_cfg.get('u1'))

    def forward_u1(self, x: torch.Tensor, spatial: Optional[bool] = None) -> U1Output:
        """Logits with their hue angle and chroma, and the bottleneck map.

        Args:
            x: Input images.
            spatial: Also apply the head at every bottleneck location (CAM-style) and return those
                logits as ``spatial_logits``; defaults to the model's ``u1_cfg.spatial``.
        """
        num_classes = self.num_classes
        if num_classes < 3:
            raise ValueError(
                f'forward_u1 needs a classifier with >= 3 classes for a hue angle, this model has '
                f'num_classes={num_classes}. Use reset_classifier(num_classes) with C >= 3.')
        spatial = self.u1_cfg.spatial if spatial is None else spatial
        features = self.forward_features(x)
        logits = self.forward_head(features)
        spatial_logits = self._spatial_logits(features) if spatial else None
        feature_map = feature_map_nchw(self, features, input_size=x.shape[-2:])
        return U1Output(logits, activation_hue(logits, dim=-1), feature_map, spatial_logits)

    def _spatial_logits(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4:
            raise ValueError(
                f'The spatial U(1) loss applies the head at every location of a (B, C, H, W) feature '
                f'map; {type(self).__name__} gives {tuple(features.shape)} features. Use spatial=False.')
        nhwc = getattr(self, 'output_fmt', 'NCHW') == 'NHWC'
        b, h, w = (features.shape[0], features.shape[1], features.shape[2]) if nhwc else (
            features.shape[0], features.shape[2], features.shape[3])
        # every location becomes a 1x1 map: global pooling is then the identity and the head is
        # exactly the class activation map's per-location classifier
        if nhwc:
            cells = features.reshape(b * h * w, 1, 1, features.shape[3])
        else:
            cells = features.permute(0, 2, 3, 1).reshape(b * h * w, features.shape[1], 1, 1)
        logits = self.forward_head(cells)
        return logits.reshape(b, h, w, -1).permute(0, 3, 1, 2)


_U1_CLASSES: Dict[type, type] = {}


def _u1_class(base_cls: Type[nn.Module]) -> type:
    """The twin class of a timm model class, made once and kept importable from this module."""
    cls = _U1_CLASSES.get(base_cls)
    if cls is None:
        name = 'U1' + base_cls.__name__
        cls = type(name, (U1ModelMixin, base_cls), {
            '__module__': __name__,
            '__qualname__': name,
            '__doc__': f'U(1) twin of :class:`{base_cls.__module__}.{base_cls.__qualname__}`.',
            # torch.jit.script compiles every property; u1_cfg is Python-side metadata (a dataclass
            # TorchScript cannot compile), so the twin scripts exactly as its base does
            '__jit_unused_properties__': [*getattr(base_cls, '__jit_unused_properties__', ()), 'u1_cfg'],
        })
        _U1_CLASSES[base_cls] = cls
        setattr(sys.modules[__name__], name, cls)
    return cls


def _find_model_class(name: str) -> Optional[Type[nn.Module]]:
    """The timm model class called ``name``, looked up among the loaded modules (timm's first)."""
    found = {}
    for module_name, module in list(sys.modules.items()):
        # vars(), not getattr(): a lookup must not trigger other modules' lazy __getattr__ imports
        obj = vars(module).get(name) if module is not None and hasattr(module, '__dict__') else None
        if isinstance(obj, type) and issubclass(obj, nn.Module) and obj.__name__ == name \
                and not issubclass(obj, U1ModelMixin):
            found[obj] = obj.__module__
    if len(found) > 1:  # a model class defined by timm wins over other modules' classes of that name
        found = {c: m for c, m in found.items() if m.startswith('timm.models.')} or found
    if len(found) > 1:
        raise AttributeError(
            f'Twin class U1{name} is ambiguous: {sorted(m + "." + name for m in found.values())} are all '
            f'called {name}; build the twin with timm.create_model("u1_<arch>") first.')
    return next(iter(found), None)


def __getattr__(name: str) -> type:
    """Twin classes by name (``U1ResNet``), so that pickles of twins load in a fresh process.

    A twin class is made on first use, so a process that unpickles ``torch.save(model)`` has not
    made it yet; pickle looks it up here by its name.
    """
    if name.startswith('U1') and len(name) > 2 and not name.startswith('U1_'):
        base_cls = _find_model_class(name[2:])
        if base_cls is not None:
            return _u1_class(base_cls)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def is_u1_model(model: nn.Module) -> bool:
    return isinstance(model, U1ModelMixin)


def get_u1_config(model: nn.Module) -> U1Config:
    """U(1) settings of a model: its own for a twin, the defaults for any other timm model."""
    return U1Config.from_dict(getattr(model, 'pretrained_cfg', {}).get('u1'))


def base_model_name(name: str) -> str:
    """'u1_resnet18.a1_in1k' -> 'resnet18.a1_in1k'."""
    if not name.startswith(U1_PREFIX):
        raise ValueError(f"'{name}' is not a u1_ model name.")
    return name[len(U1_PREFIX):]


def _split_u1(cfg: Union[None, str, Dict[str, Any], PretrainedCfg], base_arch: str):
    """Take the 'u1' entry out of a pretrained_cfg dict, since timm's PretrainedCfg has no such field."""
    if isinstance(cfg, PretrainedCfg):
        cfg = cfg.to_dict(remove_null=False)
    if not isinstance(cfg, dict):
        return cfg, None
    cfg = dict(cfg)
    u1 = cfg.pop('u1', None)
    if cfg.get('architecture', '').startswith(U1_PREFIX):
        cfg['architecture'] = base_arch
    return cfg, u1


def _create_u1(
        base_arch: str,
        pretrained: bool = False,
        pretrained_cfg: Union[None, str, Dict[str, Any], PretrainedCfg] = None,
        pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
        **kwargs,
) -> nn.Module:
    pretrained_cfg, u1_from_cfg = _split_u1(pretrained_cfg, base_arch)
    overlay, u1_from_overlay = _split_u1(pretrained_cfg_overlay, base_arch)
    settings = U1Config.from_dict({**(u1_from_cfg or {}), **(u1_from_overlay or {})})
    # any num_classes builds (binary heads are common); only the hue, forward_u1 and U1Loss, needs C >= 3
    base_fn = timm.models.model_entrypoint(base_arch)
    model = base_fn(pretrained=pretrained, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay, **kwargs)

    if not kwargs.get('features_only'):
        model.__class__ = _u1_class(type(model))
    model.pretrained_cfg['architecture'] = U1_PREFIX + base_arch
    model.pretrained_cfg['u1'] = settings.to_dict()
    model.default_cfg = model.pretrained_cfg
    return model


# filled by register_u1_models; read by timm's register_model to register the twins' pretrained tags
default_cfgs: Dict[str, DefaultCfg] = {}


def register_u1_models() -> int:
    """Register a ``u1_`` twin for every timm architecture not twinned yet; returns how many were added.

    Called on ``import timm_u1``. Call it again after registering new timm models of your own.
    """
    return register_wrapped_models(__name__, U1_PREFIX, _create_u1,
                                   "U(1) twin of timm's ``{base_arch}`` (same weights and state_dict keys).")
