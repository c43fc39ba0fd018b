""" What a run is, and the one resume rule of analysis, memory building and training.

* :func:`backbone_fingerprint`: SHA-256 of a model's weights, the identity of a backbone.
* :func:`check_same_run`: a run folder that holds an unfinished run is resumed only by a run with
  the same settings; otherwise it is refused, naming every setting that differs and how to start
  over. No command silently starts afresh over a half-done run, and none silently drops a changed
  argument.
"""
import hashlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from ..errors import ResumeMismatchError

__all__ = ['backbone_fingerprint', 'settings_diff', 'check_same_run']

PathLike = Union[str, os.PathLike]


def backbone_fingerprint(model: nn.Module, include_head: bool = False) -> str:
    """SHA-256 over the names, shapes and float32 bytes of the backbone's floating-point tensors.

    The classifier is left out unless ``include_head`` (a memory never uses it, and a headless
    model or a model with another head shares the backbone), as are integer buffers such as
    BatchNorm's ``num_batches_tracked``, which change without changing any feature. Safetensors
    round trips keep the bytes, so the fingerprint survives save and load; any changed weight
    changes it.
    """
    classifier = model.get_classifier() if hasattr(model, 'get_classifier') and not include_head else None
    head_prefixes = tuple(
        name + '.' for name, module in model.named_modules()
        if classifier is not None and module is classifier and name)
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if name.startswith(head_prefixes) or not tensor.is_floating_point():
            continue
        digest.update(f'{name}:{tuple(tensor.shape)};'.encode())
        digest.update(tensor.detach().to('cpu', torch.float32).contiguous().numpy().tobytes())
    return 'sha256:' + digest.hexdigest()


def _plain(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """JSON values only (tuples become lists, paths strings), as they are once stored."""
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def settings_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> Dict[str, tuple]:
    """``{key: (stored value, current value)}`` for every setting that differs."""
    stored, current = _plain(stored), _plain(current)
    return {k: (stored.get(k), current.get(k)) for k in sorted(set(stored) | set(current))
            if stored.get(k) != current.get(k)}


def check_same_run(
        stored: Optional[Mapping[str, Any]],
        current: Mapping[str, Any],
        where: PathLike,
        start_over: str,
        state: str = 'an unfinished run',
) -> None:
    """Refuse to resume (or reuse) the run at ``where`` with other settings.

    Args:
        stored: the settings the unfinished run recorded (None: it recorded none, which is refused too).
        current: the settings of the run that would resume it.
        where: the file or folder holding the unfinished run, for the message.
        start_over: how to start over instead, e.g. "pass --overwrite, or choose another --output".
        state: what ``where`` holds, for the message ("an unfinished run", "a finished run", ...).

    Raises:
        ResumeMismatchError: naming every setting that differs, with both values.
    """
    if stored is None:
        raise ResumeMismatchError(
            f'{where} holds {state} that recorded no settings, so it cannot be resumed safely; '
            f'{start_over}.')
    diffs = settings_diff(stored, current)
    if diffs:
        listed = '; '.join(f'{k}: {a!r} there, {b!r} now' for k, (a, b) in diffs.items())
        raise ResumeMismatchError(
            f'{where} holds {state} with other settings ({listed}). Rerun with the same settings '
            f'to resume it, or {start_over}.')
