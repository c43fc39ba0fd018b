""" An output folder checked for writability before any work starts and locked while a process writes to
it, so that two runs into one folder never race.
"""
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..errors import OutputNotWritableError, RunLockedError

__all__ = ['RunFolder', 'LOCK_NAME']

PathLike = Union[str, os.PathLike]
LOCK_NAME = '.timm_u1.lock'


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
