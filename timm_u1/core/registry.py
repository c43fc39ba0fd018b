"""Registering a family of wrapped timm models: ``PREFIX<arch>`` for every architecture timm lists."""
import sys
from collections import deque
from typing import Callable, Tuple

import timm
from timm.models import DefaultCfg, register_model
from torch import nn

__all__ = ['register_wrapped_models']


def _entrypoint(module_name: str, name: str, base_arch: str, create: Callable[..., nn.Module], doc: str):
    def entrypoint(pretrained: bool = False, **kwargs) -> nn.Module:
        return create(base_arch, pretrained=pretrained, **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name
    entrypoint.__module__ = module_name
    entrypoint.__doc__ = doc
    return entrypoint


def register_wrapped_models(
        module_name: str,
        prefix: str,
        create: Callable[..., nn.Module],
        doc: str,
        skip: Tuple[str, ...] = (),
) -> int:
    """Register ``prefix + arch`` for every timm architecture not registered yet (nor itself named with
    ``prefix`` or a prefix in ``skip``); returns how many were added.

    Each entrypoint calls ``create(arch, pretrained=..., **kwargs)``, is set on the module ``module_name``
    and carries its name, because timm's ``register_model`` finds a model's pretrained tags in the
    ``default_cfgs`` of the entrypoint's module: the base's tags are put there. ``doc`` is formatted
    with ``base_arch``.
    """
    module = sys.modules[module_name]
    added = 0
    for base_arch in timm.list_models():
        name = prefix + base_arch
        if base_arch.startswith((prefix,) + skip) or timm.models.is_model(name):
            continue
        # the base's registered cfgs, hf_hub_id already completed by timm, keyed 'arch.tag'
        cfgs = timm.models.get_arch_pretrained_cfgs(base_arch)
        if cfgs:
            tags = [n.partition('.')[2] for n in cfgs]
            module.default_cfgs[name] = DefaultCfg(tags=deque(tags), cfgs=dict(zip(tags, cfgs.values())))
        fn = _entrypoint(module_name, name, base_arch, create, doc.format(base_arch=base_arch))
        setattr(module, name, fn)
        register_model(fn)
        added += 1
    return added
