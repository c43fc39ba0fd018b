""" The LGN pre-filter and V1 lateral connections added to the stem of any timm model, and the
``v1_`` models that do it through ``timm.create_model``.

:func:`add_v1_stem` finds a model's first conv through ``pretrained_cfg["first_conv"]`` (timm's own
metadata; the first ``nn.Conv2d`` where timm names none) and turns it, in place, into a V1 stem::

    x -> LGNPrefilter (shared over channels, linear, delta init) -> the conv -> LateralPropagation ('linear' rule, K = 0)

At initialisation the pre-filter is the identity and K = 0, so the model computes exactly what it
computed before, pretrained weights included, and the normalisation after the stem sees the same
statistics. The conv keeps its module, class behaviour, name and parameters (its class becomes a
subclass, as the ``u1_`` twins' classes do), so every ``state_dict`` key of the base model is
unchanged and ``pretrained_cfg["first_conv"]`` still names the feed-forward filters; the stem adds
``<first_conv>.prefilter.weight`` and ``<first_conv>.lateral.weight``.

``import timm_u1`` registers ``v1_<arch>`` for every timm architecture (pretrained tags included),
so that::

    model = timm.create_model('v1_resnet18', pretrained=True, lateral_steps=2, lateral_kernel=7)

builds the base (loading its pretrained weights), then adds the stem. The stem settings are model
arguments (:data:`STEM_ARGS`), which timm records and saves in ``config.json``, so saved models
round-trip through ``timm_u1.save_pretrained`` / ``from_pretrained`` / ``local-dir:``. A ``u1_v1_<arch>``
twin exists too (what ``timm-u1 train --model v1_<arch>`` trains).
"""
import sys
import types
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Dict, Optional, Tuple, Type, Union

import torch
from torch import nn

import timm
from timm.models import DefaultCfg, PretrainedCfg, load_pretrained

from ..core.registry import register_wrapped_models
from ..core.u1 import U1_PREFIX
from .lateral import LATERAL_KERNELS, LateralPropagation
from .lgn import LGNPrefilter

__all__ = [
    'V1_PREFIX', 'StemSettings', 'STEM_ARGS', 'V1StemMixin', 'add_v1_stem', 'is_v1_stem', 'find_v1_stem',
    'register_v1_models',
]

V1_PREFIX = 'v1_'


@dataclass
class StemSettings:
    """What :func:`add_v1_stem` adds; the field names are the ``v1_<arch>`` model arguments.

    Args:
        prefilter: Add the LGN pre-filter (one s0 x s0 filter shared over the input channels).
        prefilter_kernel: s0.
        lateral_steps: T; 0 adds no lateral propagation.
        lateral_kernel: k of the lateral kernel (on the stem's output grid).
        lateral_mode: ``'learned'`` or ``'filter_correlation'`` (see :mod:`timm_u1.early.lateral`).
    """
    prefilter: bool = True
    prefilter_kernel: int = 7
    lateral_steps: int = 1
    lateral_kernel: int = 5
    lateral_mode: str = 'learned'

    def __post_init__(self):
        if not isinstance(self.prefilter, bool):
            raise ValueError(f'prefilter must be True or False, got {self.prefilter!r}.')
        for name in ('prefilter_kernel', 'lateral_kernel'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
                raise ValueError(f'{name} must be an odd integer >= 1 (a centred kernel), got {value!r}.')
        if isinstance(self.lateral_steps, bool) or not isinstance(self.lateral_steps, int) or self.lateral_steps < 0:
            raise ValueError(f'lateral_steps must be an integer >= 0, got {self.lateral_steps!r}.')
        if self.lateral_mode not in LATERAL_KERNELS:
            raise ValueError(f'lateral_mode must be one of {list(LATERAL_KERNELS)}, got {self.lateral_mode!r}.')

    @classmethod
    def pop_from(cls, kwargs: Dict[str, Any]) -> 'StemSettings':
        """The settings among a model's kwargs, removed from them."""
        return cls(**{f.name: kwargs.pop(f.name) for f in fields(cls) if f.name in kwargs})


STEM_ARGS = tuple(f.name for f in fields(StemSettings))


class V1StemMixin:
    """Mixed in front of a conv class: pre-filter, the conv's own forward (``conv_forward``), lateral.
    Its ``prefilter`` and ``lateral`` are modules or None."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.prefilter is not None:
            x = self.prefilter(x)
        u = self.conv_forward(x)
        if self.lateral is not None:
            u = self.lateral(u, self.weight)
        return u


_V1_CLASSES: Dict[type, type] = {}


def _renamed(fn: Callable, name: str) -> Callable:
    """``fn`` under another ``__name__``: TorchScript compiles a method called from forward under its
    function's ``__name__``, so the conv's own forward, kept beside the stem's, must not be called 'forward'."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__, copy.__doc__, copy.__module__ = name, fn.__doc__, fn.__module__
    copy.__kwdefaults__, copy.__annotations__ = fn.__kwdefaults__, dict(fn.__annotations__)
    return copy


def _v1_class(base_cls: Type[nn.Module]) -> type:
    """The V1-stem class of a conv class, made once and importable from this module by name (pickle)."""
    cls = _V1_CLASSES.get(base_cls)
    if cls is None:
        name = 'V1' + base_cls.__name__
        cls = type(name, (V1StemMixin, base_cls), {
            '__module__': __name__,
            '__qualname__': name,
            '__doc__': f'{base_cls.__name__} with the LGN pre-filter before it and lateral propagation after it.',
            'conv_forward': _renamed(base_cls.forward, 'conv_forward'),
        })
        _V1_CLASSES[base_cls] = cls
        setattr(sys.modules[__name__], name, cls)
    return cls


def __getattr__(name: str) -> type:
    """V1-stem classes by name (``V1Conv2d``), so that a pickled model loads in a fresh process."""
    if name.startswith('V1') and len(name) > 2:
        for module in (nn, timm.layers):
            base = vars(module).get(name[2:])
            if isinstance(base, type) and issubclass(base, nn.Conv2d):
                return _v1_class(base)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def is_v1_stem(module: nn.Module) -> bool:
    return isinstance(module, V1StemMixin)


def _first_conv_names(model: nn.Module) -> Tuple[str, ...]:
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    names = cfg.get('first_conv')
    names = (names,) if isinstance(names, str) else tuple(names or ())
    # a features_only model (timm's FeatureListNet) flattens nn.Sequential parents into 'a_b' names
    return tuple(dict.fromkeys(n for name in names for n in (name, name.replace('.', '_'))))


def _stem_conv(model: nn.Module) -> Tuple[str, nn.Module]:
    """(name, module) of the first conv: ``pretrained_cfg["first_conv"]``, else the first nn.Conv2d."""
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or type(model).__name__
    modules = dict(model.named_modules())
    name = next((n for n in _first_conv_names(model) if n in modules), None)
    if name is None:
        name = next((n for n, m in modules.items() if isinstance(m, nn.Conv2d)), None)
    if name is None:
        raise ValueError(f'{arch} has no pretrained_cfg["first_conv"] and no nn.Conv2d: no stem to add the V1 '
                         f'pre-filter and lateral connections to.')
    conv = modules[name]
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(f'{arch}: its first conv {name!r} is a {type(conv).__name__}, not an nn.Conv2d; '
                         f'the V1 stem wraps a 2-D convolution.')
    return name, conv


def find_v1_stem(model: nn.Module) -> Tuple[str, nn.Module]:
    """(name, module) of the V1 stem :func:`add_v1_stem` added to ``model``."""
    name, conv = _stem_conv(model)
    if not is_v1_stem(conv):
        found = next(((n, m) for n, m in model.named_modules() if is_v1_stem(m)), None)
        if found is None:
            raise ValueError(f'{type(model).__name__} has no V1 stem; add one with timm_u1.early.add_v1_stem(model) '
                             f'or create the model as v1_<arch>.')
        return found
    return name, conv


def add_v1_stem(model: nn.Module, settings: Optional[StemSettings] = None, **kwargs: Any) -> nn.Module:
    """Add the LGN pre-filter and lateral propagation to ``model``'s first conv, in place; returns ``model``.

    ``settings`` or keyword arguments (:class:`StemSettings`' fields). The model computes exactly what it
    did before (see the module docstring) until the new parameters are trained.
    """
    settings = StemSettings(**{**(asdict(settings) if settings is not None else {}), **kwargs})
    name, conv = _stem_conv(model)
    if is_v1_stem(conv):
        raise ValueError(f'{name!r} is already a V1 stem; add_v1_stem wraps a model once.')
    if conv.groups != 1:
        raise ValueError(f'the first conv {name!r} is grouped (groups={conv.groups}); the V1 stem wraps a dense conv.')
    like = dict(device=conv.weight.device, dtype=conv.weight.dtype)
    conv.__class__ = _v1_class(type(conv))
    conv.prefilter = LGNPrefilter(settings.prefilter_kernel, conv.in_channels, mode='shared', act='identity',
                                  init='delta').to(**like) if settings.prefilter else None
    conv.lateral = LateralPropagation(
        conv.out_channels, settings.lateral_kernel, settings.lateral_steps, rule='linear',
        kernel=settings.lateral_mode, init_std=0.0, stride=conv.stride).to(**like) if settings.lateral_steps else None
    cfg = getattr(model, 'pretrained_cfg', None)
    if isinstance(cfg, dict):
        arch = cfg.get('architecture') or ''
        if not _base_arch(arch)[1]:
            twin = arch.startswith(U1_PREFIX)
            cfg['architecture'] = (U1_PREFIX if twin else '') + V1_PREFIX + (arch[len(U1_PREFIX):] if twin else arch)
    # timm saves a model's construction arguments from this attribute (timm.models.get_model_args reads it);
    # timm has no public setter (update_model_args is in timm.models._input), so it is updated here
    model._model_args = {**getattr(model, '_model_args', {}), **asdict(settings)}
    return model


def _base_arch(arch: str) -> Tuple[str, bool]:
    """('resnet18', True) for 'v1_resnet18' and 'u1_v1_resnet18'; (arch, False) otherwise."""
    plain = arch[len(U1_PREFIX):] if arch.startswith(U1_PREFIX) else arch
    return (plain[len(V1_PREFIX):], True) if plain.startswith(V1_PREFIX) else (arch, False)


def _split_cfg(cfg: Union[None, str, Dict[str, Any], PretrainedCfg], base_arch: str):
    if isinstance(cfg, PretrainedCfg):
        cfg = cfg.to_dict(remove_null=False)
    if isinstance(cfg, dict):
        cfg = dict(cfg, architecture=base_arch)
    return cfg


def _create_v1(base_arch: str, pretrained: bool = False,
               pretrained_cfg: Union[None, str, Dict[str, Any], PretrainedCfg] = None,
               pretrained_cfg_overlay: Optional[Dict[str, Any]] = None, **kwargs) -> nn.Module:
    settings = StemSettings.pop_from(kwargs)
    pretrained_cfg = _split_cfg(pretrained_cfg, base_arch)
    # A tag (or None) names the base's weights: the base loads them before the stem exists. A cfg dict is
    # what timm's local-dir: / hf-hub: loaders pass for a saved model of this architecture: its weights
    # include the stem's, so they are loaded once the stem is there.
    own_weights = pretrained and isinstance(pretrained_cfg, dict)
    base_fn = timm.models.model_entrypoint(base_arch)
    model = base_fn(pretrained=pretrained and not own_weights, pretrained_cfg=pretrained_cfg,
                    pretrained_cfg_overlay=pretrained_cfg_overlay, **kwargs)
    add_v1_stem(model, settings)
    model.pretrained_cfg['architecture'] = V1_PREFIX + base_arch
    model.default_cfg = model.pretrained_cfg
    if own_weights:
        load_pretrained(model, pretrained_cfg=model.pretrained_cfg, num_classes=model.num_classes,
                        in_chans=kwargs.get('in_chans', 3))
    return model


# filled by register_v1_models; read by timm's register_model to register the models' pretrained tags
default_cfgs: Dict[str, DefaultCfg] = {}
_NOT_WRAPPED = ('lgn_v1net',)  # the V1 networks have their pre-filter and lateral layer already


def register_v1_models() -> int:
    """Register ``v1_<arch>`` for every timm architecture not registered yet; returns how many were added.

    Called on ``import timm_u1`` before the ``u1_`` twins are registered, so ``u1_v1_<arch>`` exists too.
    """
    return register_wrapped_models(
        __name__, V1_PREFIX, _create_v1,
        "timm's ``{base_arch}`` with the LGN pre-filter and lateral connections in its stem.",
        skip=(U1_PREFIX,) + _NOT_WRAPPED)
