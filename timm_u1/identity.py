""" What a run is, and the one resume rule of analysis, memory building and training.

* :func:`backbone_fingerprint`: SHA-256 of a model's weights, the identity of a backbone.
* :func:`check_same_run`: a run folder that holds an unfinished run is resumed only by a run with
  the same settings; otherwise it is refused, naming every setting that differs and how to start
  over. No command silently starts afresh over a half-done run, and none silently drops a changed
  argument.
* :class:`RunFolder`: an output folder checked for writability before any work starts and locked
  while a process writes to it, so that two runs into one folder never race.
"""
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .errors import OutputNotWritableError, ResumeMismatchError, RunLockedError

__all__ = ['backbone_fingerprint', 'settings_diff', 'check_same_run', 'RunFolder', 'LOCK_NAME']

PathLike = Union[str, os.PathLike]
LOCK_NAME = '.timm_u1.lock'


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
        start_over: how to start over instead, e.g. "pass --overwrite, or choose another --out".
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class RunFolder:
    """An output folder that one process writes at a time.

    ``RunFolder(path)`` checks at once that ``path`` is, or can become, a writable folder, so a bad
    ``--out`` fails before the first image is read, not after an hour's work. Used as a context
    manager it holds ``path/.timm_u1.lock`` (the owner's pid and host); a second process is
    refused with :class:`RunLockedError`. A lock whose process is gone (killed, crashed) is stale
    and taken over.

    Args:
        path: the folder.
        what: what the folder is for, named in errors ("--out", "--output").
    """

    def __init__(self, path: PathLike, what: str = 'output folder'):
        self.path = Path(path).expanduser()
        self.what = what
        self._held = False
        self._check_writable()

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def _check_writable(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise OutputNotWritableError(
                f'{self.what} {self.path} is a file, not a folder; pass a folder path (it is created if missing).')
        existing = next((p for p in (self.path, *self.path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise OutputNotWritableError(
                f'{self.what} {self.path} cannot be written ({existing} is not a writable folder); '
                f'choose a folder you can write to.')
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f'.timm_u1.write-test.{os.getpid()}'
            probe.write_bytes(b'')
            probe.unlink()
        except OSError as e:
            raise OutputNotWritableError(
                f'{self.what} {self.path} cannot be written ({e.strerror or e}); choose a folder you can write to.'
            ) from e

    def acquire(self) -> 'RunFolder':
        owner = {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and self._is_live(holder):
                    raise RunLockedError(
                        f'{self.path} is in use by process {holder.get("pid")} on {holder.get("host")}; wait for '
                        f'it to finish, or write to another {self.what}. (If no such process runs, delete '
                        f'{self.lock_path}.)') from None
                self.lock_path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, 'w') as f:
                json.dump(owner, f)
            self._held = True
            return self
        raise RunLockedError(f'Could not take the lock {self.lock_path}; another process keeps creating it.')

    def _holder(self) -> Optional[Dict[str, Any]]:
        try:
            holder = json.loads(self.lock_path.read_text())
            return holder if isinstance(holder, dict) else None
        except (OSError, ValueError):
            return None  # a lock torn by a crash while it was written

    @staticmethod
    def _is_live(holder: Mapping[str, Any]) -> bool:
        pid = holder.get('pid')
        if not isinstance(pid, int):
            return False
        if holder.get('host') != socket.gethostname():
            return True  # cannot tell from here: assume alive
        return _pid_alive(pid)

    def release(self) -> None:
        if self._held:
            self.lock_path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> 'RunFolder':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
