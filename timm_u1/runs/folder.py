""" An output folder checked for writability before any work starts and locked while a process writes
to it, so that two runs into one folder never race.
"""
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

from filelock import FileLock, Timeout

from ..errors import OutputNotWritableError, RunLockedError
from ..files import write_json

__all__ = ['RunFolder', 'LOCK_NAME', 'OWNER_NAME']

PathLike = Union[str, os.PathLike]
LOCK_NAME = '.timm_u1.lock'
OWNER_NAME = '.timm_u1.owner.json'  # who holds the lock, for the message of the next process


class RunFolder:
    """An output folder that one process writes at a time.

    ``RunFolder(path)`` checks at once that ``path`` is, or can become, a writable folder, so a bad
    ``--output`` fails before the first image is read, not after an hour's work. Used as a context
    manager it holds an operating-system lock on ``path/.timm_u1.lock`` (``filelock``); a second
    process is refused with :class:`RunLockedError` naming the holder. The operating system drops
    the lock when its process ends, however it ends, so a killed run never leaves a stale lock
    and no lock is ever taken over.

    Args:
        path: the folder.
        what: what the folder is for, named in errors ("--out", "--output").
    """

    def __init__(self, path: PathLike, what: str = 'output folder'):
        self.path = Path(path).expanduser()
        self.what = what
        self._lock: Optional[FileLock] = None
        self._check_writable()

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.is_locked

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
            raise _not_writable(self.what, self.path, e) from e

    def acquire(self) -> 'RunFolder':
        lock = FileLock(str(self.lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunLockedError(
                f'{self.path} is in use by {self._holder()}; wait for it to finish, or write to another '
                f'{self.what}.') from None
        except OSError as e:  # the folder turned read-only or full since it was checked
            raise _not_writable(self.what, self.path, e) from e
        self._lock = lock
        try:
            write_json(self.path / OWNER_NAME, {'pid': os.getpid(), 'host': socket.gethostname(), 'since': time.time()})
        except OSError as e:
            self.release()
            raise _not_writable(self.what, self.path, e) from e
        return self

    def _holder(self) -> str:
        try:
            owner: Dict[str, Any] = json.loads((self.path / OWNER_NAME).read_text())
            return f'process {owner["pid"]} on {owner["host"]}'
        except (OSError, ValueError, KeyError, TypeError):  # written between lock and owner file, or by hand
            return 'another process'

    def release(self) -> None:
        if self._lock is not None:
            # the lock file stays: removing it while another process waits on it would let a third
            # process lock a new file of the same name beside the first
            self._lock.release()
            self._lock = None

    def __enter__(self) -> 'RunFolder':
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _not_writable(what: str, path: Path, error: OSError) -> OutputNotWritableError:
    reason = {errno.ENOSPC: 'the disk is full', errno.EROFS: 'the file system is read-only',
              errno.EDQUOT: 'the disk quota is exceeded'}.get(error.errno, error.strerror or str(error))
    return OutputNotWritableError(f'{what} {path} cannot be written ({reason}); choose a folder you can write to.')
