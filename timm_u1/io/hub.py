""" Talking to the Hub: bounded requests, one-line errors, verified downloads, one-commit uploads.

Every Hub download of a model or a memory goes through :func:`download_folder`: ``snapshot_download``
with a bounded timeout (:func:`hub_timeout`), then :func:`verify_folder`, which checks each file
against the hashes the Hub listed for that commit. Uploads go through ``HfApi.create_commit`` (one
commit, :func:`push_folder_to_hub`). What is pushed (models, runs, memories) is decided in
:mod:`timm_u1.publish`; how a model folder is written and read, in :mod:`timm_u1.io.serialization`.
"""
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ..files import read_json
from .specs import HubRef, parse_hub_ref

__all__ = [
    'IntegrityError', 'MissingTokenError', 'PushError', 'HubUnavailableError', 'resolve_token',
    'push_folder_to_hub', 'verify_folder', 'download_folder', 'hub_timeout', 'HUB_TIMEOUT_ENV',
]

PathLike = Union[str, os.PathLike]

HUB_TIMEOUT_ENV = 'TIMM_U1_HUB_TIMEOUT'
DEFAULT_HUB_TIMEOUT = 30.0  # seconds without an answer from the Hub before a call fails


def hub_timeout() -> float:
    """Seconds a Hub request may wait for an answer: ``$TIMM_U1_HUB_TIMEOUT``, default 30."""
    value = os.environ.get(HUB_TIMEOUT_ENV)
    if not value:
        return DEFAULT_HUB_TIMEOUT
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise ValueError(f'{HUB_TIMEOUT_ENV}={value!r}: give a number of seconds > 0, e.g. {HUB_TIMEOUT_ENV}=30.')
    return timeout


def _bound_hub_calls() -> float:
    """Give huggingface_hub's shared HTTP client a timeout (its default client has none).

    A client factory the user set with ``huggingface_hub.set_client_factory`` is left alone.
    """
    import httpx2
    from huggingface_hub.utils import _http, set_client_factory

    timeout = hub_timeout()
    current = getattr(_http, '_GLOBAL_CLIENT_FACTORY', None)
    ours = getattr(current, 'timm_u1_timeout', None)
    if (current is _http.default_client_factory or ours is not None) and ours != timeout:
        def bound(request) -> None:
            # huggingface_hub passes timeout=None (wait forever) on several calls (repo_info, ...),
            # which overrides a client default: fill in every unset limit on the request itself
            limits = dict(request.extensions.get('timeout') or {})
            request.extensions['timeout'] = {
                k: timeout if limits.get(k) is None else limits[k] for k in ('connect', 'read', 'write', 'pool')}

        def factory():
            client = _http.default_client_factory()
            client.timeout = httpx2.Timeout(timeout)
            hooks = client.event_hooks
            client.event_hooks = {**hooks, 'request': [*hooks.get('request', []), bound]}
            return client
        factory.timm_u1_timeout = timeout
        set_client_factory(factory)
    return timeout


class HubUnavailableError(ConnectionError):
    """The Hub did not answer (in time, or at all) and the cache cannot stand in."""


def _endpoint(endpoint: Optional[str]) -> str:
    from huggingface_hub import constants

    return endpoint or constants.ENDPOINT


def _hub_error(e: Exception, what: str, endpoint: Optional[str], timeout: float) -> Optional[Exception]:
    """A one-line user error for a failed Hub call, or None to let ``e`` through unchanged."""
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _endpoint(endpoint)
    cause = e
    while cause is not None and not isinstance(cause, httpx2.TimeoutException):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, httpx2.TimeoutException):
        return HubUnavailableError(
            f'{what}: the Hugging Face Hub at {where} did not answer within {timeout:g} s and the files are not '
            f'in the local cache. Retry later, raise the limit with {HUB_TIMEOUT_ENV}=SECONDS, or work offline '
            f'from the cache (HF_HUB_OFFLINE=1).')
    if isinstance(e, GatedRepoError):
        return PermissionError(f'{what}: {where} says the repo is gated; accept its terms and pass a token.')
    if isinstance(e, RepositoryNotFoundError):
        return FileNotFoundError(
            f'{what}: no such repo at {where} (or it is private: pass a token / set HF_TOKEN). Check the '
            f'ORG/NAME spelling; a local folder must exist.')
    if isinstance(e, RevisionNotFoundError):
        return FileNotFoundError(f'{what}: the repo has no such revision at {where}; check the branch, tag or commit.')
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        offline = isinstance(e, OfflineModeIsEnabled) or 'offline' in str(e).lower()
        return HubUnavailableError(
            f'{what}: it is not in the local Hugging Face cache and the Hub at {where} cannot be reached '
            f'({"offline mode" if offline else "no connection"}). '
            f'Download it once online, or use a local folder.')
    if isinstance(e, (httpx2.TransportError, ConnectionError)):
        return HubUnavailableError(
            f'{what}: the connection to the Hugging Face Hub at {where} failed ({type(e).__name__}).')
    if isinstance(e, HfHubHTTPError):
        status = getattr(getattr(e, 'response', None), 'status_code', None)
        return HubUnavailableError(f'{what}: the Hugging Face Hub at {where} answered HTTP {status}.')
    return None


# ---------------------------------------------------------------------------------------------
# Transfers: verified downloads, one-commit uploads

class MissingTokenError(RuntimeError):
    """No Hugging Face token was given or found; raised before any file is written or sent."""


class PushError(RuntimeError):
    """An upload failed. ``uploaded`` lists the repo paths the Hub holds with the local content
    at the target revision, ``not_uploaded`` the others."""

    def __init__(self, message: str, uploaded: Sequence[str] = (), not_uploaded: Sequence[str] = ()):
        super().__init__(message)
        self.uploaded = list(uploaded)
        self.not_uploaded = list(not_uploaded)


class IntegrityError(OSError):
    """A downloaded folder has missing or corrupt files; ``problems`` maps each file to what is wrong."""

    def __init__(self, folder: Path, problems: Dict[str, str]):
        lines = '\n'.join(f'  {name}: {why}' for name, why in sorted(problems.items()))
        super().__init__(
            f'{folder} is incomplete or corrupt:\n{lines}\nDelete the folder (or that revision from the '
            f'Hugging Face cache, e.g. with `hf cache rm`) and download it again.')
        self.folder = folder
        self.problems = problems


def resolve_token(token: Optional[str] = None) -> str:
    """``token``, else ``HF_TOKEN``, else the saved login; a clear error when there is none."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise MissingTokenError(
            'No Hugging Face token: pass token=... (--token), set the HF_TOKEN environment variable, or '
            'log in once with `hf auth login`. A token with write access is needed to push; nothing '
            'was written or uploaded.')
    return token


def _join(path_in_repo: Optional[str], name: str) -> str:
    prefix = (path_in_repo or '').strip('/')
    return f'{prefix}/{name}' if prefix else name


def _local_files(folder: Path) -> List[Path]:
    """Files to upload: everything under ``folder`` but hidden files and folders (caches, temps)."""
    files = [
        p for p in sorted(folder.rglob('*'))
        if p.is_file() and not any(part.startswith('.') for part in p.relative_to(folder).parts)]
    if not files:
        raise ValueError(f'{folder} holds no files to upload.')
    return files


def push_folder_to_hub(
        folder: PathLike,
        repo_id: str,
        path_in_repo: Optional[str] = None,
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
        source: Optional[str] = None,
):
    """Upload every (non-hidden) file of ``folder`` to ``repo_id`` in one commit.

    Creates the repo (``private`` applies only then) and the branch ``revision`` when they do not
    exist, then commits all files at once (``create_commit``, not ``upload_folder``, which may split
    a folder over several commits), so that a failure never leaves half a model at the revision.
    Files whose content is already on the Hub are skipped, which makes a failed push resumable by
    running it again. Local files are only read. ``source`` names what the user pushed in error
    messages (default: ``folder``; callers that push a staging copy pass the original).

    Returns:
        The ``huggingface_hub.CommitInfo`` (``.oid``, ``.commit_url``, ``.pr_url``).

    Raises:
        MissingTokenError: no token, before anything is sent.
        PushError: the upload failed; the message lists what was and was not uploaded.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    token = resolve_token(token)
    _bound_hub_calls()
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} is not a folder; push_folder_to_hub uploads a folder.')
    source = source or str(folder)
    files = _local_files(folder)
    api = HfApi(endpoint=endpoint, token=token)
    operations = [
        CommitOperationAdd(path_in_repo=_join(path_in_repo, p.relative_to(folder).as_posix()), path_or_fileobj=str(p))
        for p in files]
    where = f'{repo_id}' + (f'@{revision}' if revision else '')
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.create_commit(
            repo_id, operations, commit_message=commit_message or f'Upload {folder.name} with timm_u1',
            revision=revision, create_pr=create_pr)
    except Exception as e:
        remote = None if create_pr else _remote_content_ids(api, repo_id, revision)
        raise _push_error(e, where, source, folder, operations, remote) from e


def _remote_content_ids(api, repo_id: str, revision: Optional[str]) -> Optional[Dict[str, str]]:
    """``path -> content id`` (sha256 for LFS files, git blob oid otherwise) at ``revision``, or None
    when the Hub cannot be asked (it is down, the token is refused)."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFile

    try:
        return {
            f.path: f.lfs.sha256 if f.lfs else f.blob_id
            for f in api.list_repo_tree(repo_id, revision=revision, recursive=True) if isinstance(f, RepoFile)}
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return {}
    except Exception:
        return None


def _push_error(
        error: Exception, where: str, source: str, folder: Path, operations, remote: Optional[Dict[str, str]],
) -> PushError:
    """Say which files are at ``where`` with the local content and which are not, and that a re-run resumes."""
    reason = str(error).splitlines()[0] if str(error) else ''
    lines = [f'Push of {source} to {where} failed: {type(error).__name__}: {reason}']
    paths = [op.path_in_repo for op in operations]
    if remote is None:
        # the Hub cannot confirm; create_commit is atomic, so a failed commit committed nothing
        arrived = []
        lines.append('The Hub could not be asked what it holds now; as far as this client knows:')
    else:
        local = {op.path_in_repo: Path(op.path_or_fileobj) for op in operations}
        arrived = [
            p for p in paths if p in remote
            and remote[p] == (_sha256(local[p]) if len(remote[p]) == 64 else _git_blob_oid(local[p]))]
    missing = [p for p in paths if p not in arrived]
    lines.append(f'Not uploaded ({len(missing)} of {len(paths)} files): {", ".join(missing) or "none"}.')
    if arrived:
        lines.append(f'On the Hub with this content: {", ".join(arrived)}.')
    # git-LFS content sent before the failed commit stays on the Hub's storage and is not re-sent
    stored = [op.path_in_repo for op in operations if op._is_uploaded and op.path_in_repo in missing]
    if stored:
        lines.append(f'Content uploaded but not committed (will not be re-sent): {", ".join(stored)}.')
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    if status in (401, 403):
        lines.append(f'The Hub refused the token: check that it is valid and can write to {where.split("/")[0]}.')
    lines.append(f'The local files of {source} are unchanged; run the same push again to resume.')
    return PushError('\n'.join(lines), uploaded=arrived, not_uploaded=missing)


def _git_blob_oid(path: Path) -> str:
    """The git object id of a file, as the Hub lists regular (non-LFS) files."""
    from huggingface_hub.utils.sha import git_hash

    return git_hash(path.read_bytes())


def _sha256(path: Path) -> str:
    from huggingface_hub.utils.sha import sha_fileobj

    with open(path, 'rb') as f:
        return sha_fileobj(f).hex()


def _snapshot_of(folder: Path) -> Optional[Tuple[Path, str, str]]:
    """``(storage folder, commit, sub-path)`` when ``folder`` is (inside) a Hub cache snapshot."""
    folder = folder.absolute()
    for parent in [folder, *folder.parents]:
        if parent.parent.name == 'snapshots':
            return parent.parent.parent, parent.name, folder.relative_to(parent).as_posix()
    return None


def _check_safetensors(path: Path) -> Optional[str]:
    """What is wrong with a safetensors file's header and length, or None."""
    import json
    import struct

    size = path.stat().st_size
    with open(path, 'rb') as f:
        head = f.read(8)
        if len(head) < 8:
            return f'truncated ({size} bytes)'
        (n,) = struct.unpack('<Q', head)
        if n > size - 8:
            return f'truncated (header of {n} bytes in a {size}-byte file)'
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return 'corrupt safetensors header'
    end = max((v['data_offsets'][1] for k, v in header.items() if k != '__metadata__'), default=0)
    if 8 + n + end != size:
        return f'wrong length ({size} bytes, the header describes {8 + n + end})'
    return None


def _cached_listing(storage: Path, commit: str) -> Optional[Dict[str, Any]]:
    """``repo path -> entry`` (size, blob_id, lfs_sha256, lfs_size) that ``snapshot_download`` cached for
    ``commit``, or None when it cached none.

    Read with huggingface_hub's own tree-cache reader: the public ``get_cached_repo_tree`` returns
    ``RepoFile`` objects without the LFS sha256, which is what checks an LFS file's content.
    """
    try:
        from huggingface_hub._tree_cache import read_tree_cache
    except ImportError:  # another huggingface_hub layout: read the same JSON file
        listing = storage / 'trees' / f'{commit}.json'
        if not listing.is_file():
            return None
        from types import SimpleNamespace

        return {k: SimpleNamespace(size=v['size'], blob_id=v['blob_id'], lfs_sha256=v.get('lfs_sha256'),
                                   lfs_size=v.get('lfs_size')) for k, v in read_json(listing)['files'].items()}
    return read_tree_cache(str(storage), commit)


def verify_folder(folder: PathLike, required: Sequence[str] = (), patterns: Optional[Sequence[str]] = None) -> Path:
    """Check a downloaded or saved folder; raise :class:`IntegrityError` naming every missing or corrupt file.

    In the Hub cache, every file of the commit's tree listing (cached by ``snapshot_download`` in
    ``trees/<commit>.json``, read with huggingface_hub's tree-cache reader) under ``folder`` (and matching ``patterns``, the
    files that were downloaded) must exist with the listed size and hash (git blob oid, or sha256
    for LFS files); every file must be a link to the blob named by its hash, and no folder of the
    snapshot may be a link (a snapshot holds file links only). Everywhere, ``required`` files must
    exist, JSON files must parse and safetensors files must have a whole header and the length it
    describes.
    """
    import fnmatch
    import json

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} does not exist.')
    problems: Dict[str, str] = {}
    for name in required:
        if not (folder / name).exists():
            problems[name] = 'missing'
    snapshot = _snapshot_of(folder)
    if snapshot is not None:
        storage, commit, sub = snapshot
        root = storage / 'snapshots' / commit
        for part in [folder.absolute(), *folder.absolute().parents]:
            if part == root:
                break
            if part.is_symlink():  # snapshot_download never links folders: this one was swapped
                problems[part.relative_to(root).as_posix() + '/'] = 'a link to another folder, not a Hub download'
        listing = _cached_listing(storage, commit)
        prefix = '' if sub == '.' else sub + '/'
        for repo_path, entry in (listing or {}).items():
            if not repo_path.startswith(prefix) or (patterns and not any(fnmatch.fnmatch(repo_path, p) for p in patterns)):
                continue
            name = repo_path[len(prefix):]
            path = folder / name
            if not path.exists():
                problems[name] = 'missing (listed by the Hub for this commit)'
                continue
            size = entry.lfs_size or entry.size
            if path.stat().st_size != size:
                problems[name] = f'{path.stat().st_size} bytes, the Hub lists {size}'
            elif entry.lfs_sha256:
                if _sha256(path) != entry.lfs_sha256:
                    problems[name] = 'content differs from the Hub listing (sha256; corrupt)'
            elif _git_blob_oid(path) != entry.blob_id:
                problems[name] = 'content differs from the Hub listing (git oid; corrupt)'
    for path in sorted(p for p in folder.rglob('*') if p.is_file() or p.is_symlink()):
        name = path.relative_to(folder).as_posix()
        if name in problems or any(part.startswith('.') for part in path.relative_to(folder).parts):
            continue
        if not path.exists():
            problems[name] = 'dangling link into the cache (blob missing)'
            continue
        linked = [p for p in path.relative_to(folder).parents if p.name and (folder / p).is_symlink()]
        if linked and snapshot is not None:  # snapshot_download never links folders: this one was swapped
            problems[linked[-1].as_posix() + '/'] = 'a link to another folder, not a Hub download'
            continue
        if snapshot is not None and path.is_symlink():
            if path.resolve().parent != (storage / 'blobs').resolve():
                problems[name] = 'not a link to a blob of this repo in the cache (replaced or tampered)'
                continue
            etag = path.resolve().name
            digest = _sha256(path) if len(etag) == 64 else _git_blob_oid(path) if len(etag) == 40 else etag
            if digest != etag:
                problems[name] = 'content differs from its cache blob id (corrupt)'
                continue
        if path.suffix == '.json':
            try:
                json.loads(path.read_text(encoding='utf-8'))
            except (ValueError, UnicodeDecodeError):
                problems[name] = 'not valid JSON (corrupt or truncated)'
        elif path.suffix == '.safetensors':
            problem = _check_safetensors(path)
            if problem:
                problems[name] = problem
    if problems:
        raise IntegrityError(folder, problems)
    return folder


def download_folder(
        repo_id: str,
        revision: Optional[str] = None,
        path_in_repo: Optional[str] = None,
        required: Sequence[str] = (),
        cache_dir: Optional[PathLike] = None,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        allow_patterns: Optional[Sequence[str]] = None,
) -> Path:
    """Download (or find in the Hugging Face cache) a repo, or its ``path_in_repo`` sub-folder, and verify it.

    ``revision`` (branch, tag or commit) pins what is fetched; ``allow_patterns`` (repo paths)
    narrows it. Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) the folder comes from
    the cache, which must hold that revision. Every request waits at most :func:`hub_timeout`
    seconds for an answer. Returns the folder inside the cache snapshot; see :func:`verify_folder`
    for the checks. Hub failures become one-line errors naming the repo and the endpoint
    (``FileNotFoundError`` for a missing repo or revision, :class:`HubUnavailableError` otherwise).
    """
    from huggingface_hub import snapshot_download

    ref = HubRef(repo_id, revision)
    if parse_hub_ref(f'hf-hub:{repo_id}') is None:  # validates the id (raises ValueError)
        raise ValueError(f'{repo_id!r} is not a Hub repo id')
    patterns = list(allow_patterns) if allow_patterns else None
    if path_in_repo:
        patterns = [f'{path_in_repo.strip("/")}/{p}' for p in (patterns or ['*'])]
    timeout = _bound_hub_calls()
    try:
        snapshot = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint,
            allow_patterns=patterns, local_files_only=local_files_only, etag_timeout=timeout))
    except Exception as e:
        error = _hub_error(e, f'cannot download {ref}', endpoint, timeout)
        if error is None:
            raise
        raise error from e
    folder = snapshot / path_in_repo.strip('/') if path_in_repo else snapshot
    if not folder.is_dir():
        raise FileNotFoundError(f'{ref} has no folder {path_in_repo!r}.')
    return verify_folder(folder, required=required, patterns=patterns)
