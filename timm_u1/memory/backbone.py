""" The frozen backbone of a memory: what another machine loads it by, its check, and its features.

A memory is only usable with the very weights it was built with, so ``memory.json`` records:

* ``backbone``: the spec another machine can load (``hf-hub:ORG/NAME``, or the offline Lite0 name),
  or, when nothing else is known, the local spec it was built from (with a warning);
* ``backbone_local``: the local folder it was built from on this machine (None for a Hub or
  registry spec), which commands here prefer (no download);
* ``base_model``: the Hub repo the weights came from, when known;
* ``fingerprint``: :func:`timm_u1.runs.identity.backbone_fingerprint` of the weights, which refuses
  any other backbone wherever the memory is loaded.
"""
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..analysis.probe import capture
from ..core.lite0 import OFFLINE_TAG
from ..io.specs import HubRef, model_source, parse_hub_ref
from ..runs.identity import backbone_fingerprint

__all__ = ['BackboneRecord', 'describe_backbone', 'default_spec', 'check_fingerprint', 'extract_features']

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneRecord:
    """Where a memory's backbone can be loaded from (see the module docstring)."""
    backbone: str
    backbone_local: Optional[str] = None
    base_model: Optional[str] = None

    @property
    def portable(self) -> bool:
        """Whether another machine can load ``backbone`` (it is not just this machine's folder)."""
        return self.backbone != self.backbone_local


def describe_backbone(spec: str, model: Optional[nn.Module] = None, hub_id: Optional[str] = None) -> BackboneRecord:
    """The :class:`BackboneRecord` of a backbone created from ``spec`` (``model``, when given, may
    name the Hub repo its weights came from), or published as ``hub_id`` (``ORG/NAME``).

    Logs a warning when only a local path (or randomly initialised registry weights) is known.
    """
    source = model_source(spec)
    published = _hub_ref(hub_id) if hub_id else None
    if isinstance(source, HubRef):
        if published is not None and published.repo_id != source.repo_id:
            raise ValueError(f'--backbone-id {hub_id} names another repo than --model {spec}; give one of them.')
        return BackboneRecord(f'hf-hub:{source}', None, source.repo_id)
    local = _local_spec(source.resolve()) if isinstance(source, Path) else None
    if published is not None:
        return BackboneRecord(f'hf-hub:{published}', local, published.repo_id)
    base_model = (getattr(model, 'pretrained_cfg', None) or {}).get('base_model')
    if local is not None:
        _logger.warning(
            'the backbone is known only by the local path %s: another machine cannot load this memory. Push it '
            '(timm-u1 push %s --repo-id ORG/NAME) and rebuild with --backbone-id ORG/NAME (Python: '
            'backbone_id=); its fingerprint is checked wherever the memory is loaded.', source, source)
        return BackboneRecord(local, local, base_model)
    if spec.partition('.')[2] != OFFLINE_TAG and not base_model:
        _logger.warning(
            'the backbone %r has randomly initialised weights here (only local), which no other process can '
            'create again: save it (timm.models.save_for_hf), push it, and build with --model hf-hub:ORG/NAME.',
            spec)
    return BackboneRecord(spec, None, base_model)


def _local_spec(path: Path) -> str:
    """The spec that loads a local backbone again: timm's ``local-dir:`` for a saved folder, the path
    itself for a file (a timm training checkpoint, which ``local-dir:`` does not read)."""
    return f'local-dir:{path}' if path.is_dir() else str(path)


def _hub_ref(hub_id: str) -> HubRef:
    ref = parse_hub_ref(hub_id if hub_id.startswith('hf-hub:') else f'hf-hub:{hub_id}')
    if ref is None:
        raise ValueError(f'backbone id {hub_id!r} is not a Hub repo id; use ORG/NAME.')
    return ref


def default_spec(model: nn.Module) -> str:
    """A spec for a model given without one: the Hub repo its weights came from, else ``arch.tag``."""
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    hub = cfg.get('base_model') or cfg.get('hf_hub_id')
    if hub:
        return f'hf-hub:{hub}'
    arch, tag = cfg.get('architecture', type(model).__name__), cfg.get('tag')
    return f'{arch}.{tag}' if tag else arch


def check_fingerprint(model: nn.Module, fingerprint: Optional[str], backbone: Optional[str]) -> None:
    """Raise if ``model`` is not the backbone of ``fingerprint``."""
    if fingerprint is None:
        raise ValueError(
            'This memory records no backbone fingerprint (it was made from raw features); use '
            'the *_from_features methods, or create it with AnglePrototypeMemory.for_model.')
    found = backbone_fingerprint(model)
    if found != fingerprint:
        raise ValueError(
            f"Backbone mismatch: this memory was built with '{backbone}' (fingerprint "
            f'{fingerprint[:19]}...), but the model given has fingerprint {found[:19]}.... '
            f"Its features are not comparable. Load the memory's backbone "
            f'(timm_u1.io.factory.create_model_from_spec(memory.backbone)) or build a new memory with '
            f'this model.')


def extract_features(
        model: nn.Module, images: torch.Tensor, layer: Union[None, int, str] = None) -> torch.Tensor:
    """(B, D, H, W) float32 feature maps of transformed ``images`` at ``layer`` (None: the bottleneck),
    on the CPU, with the model frozen (eval mode, no gradients)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # the backbone is frozen: no dropout, BatchNorm running stats
    try:
        with torch.inference_mode():
            return capture(model, images.to(device), layer).float().cpu()
    finally:
        model.train(was_training)
