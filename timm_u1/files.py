"""Atomic file writes (a reader, or a crash, never sees half a checkpoint, memory or report) and SHA-256."""
import errno
import glob
import hashlib
import json
import os
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

from .errors import OutputNotWritableError

__all__ = ['atomic_path', 'write_json', 'write_text', 'read_json', 'file_sha256']

PathLike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)

# errors that no retry fixes: the message says so instead of showing an errno
_NO_ROOM = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
            errno.EROFS: 'the file system is read-only'}


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On an exception (a full disk, an interrupt) the temporary file is removed and the previous
    ``path`` is left as it was. The temporary file's name carries this host and process id, so the
    temporary file of a killed writer is removed by the next write of ``path``. The result gets the
    usual permissions (umask), whatever the writer used (mkstemp and safetensors make 0600 files).
    A full disk or a read-only file system raises :class:`~timm_u1.errors.OutputNotWritableError`
    naming the file.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, name = tempfile.mkstemp(prefix=f'.{path.name}.{_owner()}.', suffix='.tmp', dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno not in _NO_ROOM:
            raise
        advice = 'write elsewhere' if e.errno == errno.EROFS else 'free some space or write elsewhere'
        raise OutputNotWritableError(
            f'cannot write {path}: {_NO_ROOM[e.errno]}; {advice}. The previous {path.name}, if any, is unchanged.'
        ) from e
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _owner() -> str:
    return f'{socket.gethostname()}-{os.getpid()}'


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files of earlier writes of ``path`` whose process on this host is gone."""
    host = socket.gethostname()
    prefix = f'.{path.name}.'
    for tmp in path.parent.glob(f'.{glob.escape(path.name)}.*.tmp'):
        owner = tmp.name[len(prefix):-len('.tmp')].rpartition('.')[0]  # 'host-pid' before mkstemp's random part
        owner_host, _, pid = owner.rpartition('-')
        if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def write_text(path: PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding='utf-8')


def write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + '\n')


def read_json(path: PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except json.JSONDecodeError as e:
        raise ValueError(f'{path} is not valid JSON ({e}); the file is corrupt or truncated.') from e


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()
