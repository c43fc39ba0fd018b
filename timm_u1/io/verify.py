""" Checks of a downloaded or saved folder: every missing or corrupt file is named in one ``IntegrityError``.

Everywhere: required files exist, JSON parses, safetensors files are whole (``safetensors.safe_open``
refuses truncated or extended files). In the Hugging Face cache, offline too: no folder of a snapshot
is a link (``snapshot_download`` links files only), and each link points to the blob named by its
content's hash (sha256 for LFS files, git blob id otherwise), which is how the cache names blobs. Online,
:func:`hub_problems` also compares the snapshot with the Hub's listing of that commit
(``HfApi.verify_repo_checksums``): a missing file, a file the commit does not hold, a wrong hash.
"""
import fnmatch
import json
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..files import file_sha256
from .errors import IntegrityError

__all__ = ['verify_folder', 'snapshot_of', 'hub_problems', 'git_blob_oid']

_logger = logging.getLogger(__name__)


def git_blob_oid(path: Path) -> str:
    """The git object id of a file, as the Hub names regular (non-LFS) files."""
    from huggingface_hub.utils.sha import git_hash

    return git_hash(path.read_bytes())


def snapshot_of(folder: Path) -> Optional[Tuple[Path, str, str]]:
    """``(storage folder, commit, sub-path)`` when ``folder`` is (inside) a Hub cache snapshot."""
    folder = folder.absolute()
    for parent in [folder, *folder.parents]:
        if parent.parent.name == 'snapshots':
            return parent.parent.parent, parent.name, folder.relative_to(parent).as_posix()
    return None


def _content_problem(path: Path) -> Optional[str]:
    """What is wrong with a JSON or safetensors file's content, or None."""
    if path.suffix == '.json':
        try:
            json.loads(path.read_text(encoding='utf-8'))
        except (ValueError, UnicodeDecodeError):
            return 'not valid JSON (corrupt or truncated)'
    elif path.suffix == '.safetensors':
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework='pt'):
                pass
        except Exception as e:  # SafetensorError: truncated, extended or malformed
            return f'not a whole safetensors file ({e})'
    return None


def _link_problems(folder: Path, storage: Path, commit: str) -> Dict[str, str]:
    """Snapshot links: no linked folder, each file a link to the blob its content hashes to."""
    problems: Dict[str, str] = {}
    root = storage / 'snapshots' / commit
    for part in [folder.absolute(), *folder.absolute().parents]:
        if part == root:
            break
        if part.is_symlink():
            problems[part.relative_to(root).as_posix() + '/'] = 'a link to another folder, not a Hub download'
    blobs = (storage / 'blobs').resolve()
    for path in sorted(p for p in folder.rglob('*') if p.is_file() or p.is_symlink()):
        name = path.relative_to(folder).as_posix()
        linked = [p for p in path.relative_to(folder).parents if p.name and (folder / p).is_symlink()]
        if linked:
            problems[linked[-1].as_posix() + '/'] = 'a link to another folder, not a Hub download'
        elif not path.exists():
            problems[name] = 'dangling link into the cache (blob missing)'
        elif not path.is_symlink():
            continue  # huggingface_hub copies files where it cannot link: their content is checked online
        elif path.resolve().parent != blobs:
            problems[name] = 'not a link to a blob of this repo in the cache (replaced or tampered)'
        else:
            blob = path.resolve().name
            digest = file_sha256(path) if len(blob) == 64 else git_blob_oid(path) if len(blob) == 40 else blob
            if digest != blob:
                problems[name] = 'content differs from its cache blob id (corrupt)'
    return problems


def verify_folder(folder, required: Sequence[str] = ()) -> Path:
    """Check a folder (see the module docstring); raise :class:`IntegrityError` naming every bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} does not exist.')
    problems = {name: 'missing' for name in required if not (folder / name).exists()}
    snapshot = snapshot_of(folder)
    if snapshot is not None:
        problems.update({k: v for k, v in _link_problems(folder, snapshot[0], snapshot[1]).items() if k not in problems})
    for path in sorted(p for p in folder.rglob('*') if p.is_file()):
        name = path.relative_to(folder).as_posix()
        if name not in problems and not any(part.startswith('.') for part in path.relative_to(folder).parts):
            problem = _content_problem(path)
            if problem:
                problems[name] = problem
    if problems:
        raise IntegrityError(folder, problems)
    return folder


def hub_problems(
        api, repo_id: str, snapshot: Path, sub: str = '', patterns: Optional[Sequence[str]] = None,
) -> Dict[str, str]:
    """``file -> problem`` for the files of ``snapshot`` (a commit's folder in the cache) under ``sub``,
    against the Hub's listing of that commit (``HfApi.verify_repo_checksums``); ``patterns`` are the
    repo paths that were downloaded."""
    result = api.verify_repo_checksums(repo_id, revision=snapshot.name, local_dir=snapshot)
    prefix = f'{sub.strip("/")}/' if sub.strip('/') else ''

    def ours(path: str) -> bool:
        return path.startswith(prefix) and (not patterns or any(fnmatch.fnmatch(path, p) for p in patterns))

    problems = {m['path']: f'content differs from the Hub listing ({m["algorithm"]}; corrupt)'
                for m in result.mismatches if ours(m['path'])}
    problems.update({p: 'missing (listed by the Hub for this commit)' for p in result.missing_paths if ours(p)})
    problems.update({p: 'not in the Hub listing of this commit (added or replaced)' for p in result.extra_paths
                     if ours(p)})
    _logger.debug('%s@%s: %d files checked against the Hub listing', repo_id, snapshot.name, result.checked_count)
    return {path[len(prefix):]: why for path, why in problems.items()}
