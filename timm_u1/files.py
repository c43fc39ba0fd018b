"""Atomic file writes: a reader (or a crash) never sees half a checkpoint, memory or report."""
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

__all__ = ['atomic_path', 'write_json', 'write_text', 'read_json', 'file_sha256']

PathLike = Union[str, os.PathLike]

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On an exception (a full disk, an interrupt) the temporary file is removed and the previous
    ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
