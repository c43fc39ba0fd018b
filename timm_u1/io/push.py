""" One-commit uploads of a local folder: :func:`push_folder_to_hub`. What is pushed (models, runs,
memories) is decided in :mod:`timm_u1.publish`. """
import os
from pathlib import Path
from typing import Dict, List, Optional

from ..files import file_sha256
from .errors import HubStopped, MissingTokenError, PushError, causes
from .limits import hub_call
from .verify import git_blob_oid

__all__ = ['resolve_token', 'local_files', 'push_folder_to_hub']


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


def local_files(folder: Path) -> List[Path]:
    """The files a push of ``folder`` uploads: all but hidden ones (caches, temps), links never followed
    out of the folder.

    A link to a file outside ``folder`` (``notes.txt -> /etc/hostname``) is refused, naming it: a push
    uploads what the folder holds, not what its links point to.
    """
    folder = Path(folder)
    root = folder.resolve()
    files, outside = [], []
    for directory, dirs, names in os.walk(folder):  # os.walk does not descend into linked folders
        here = Path(directory)
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        for name in sorted(names) + [d for d in dirs if (here / d).is_symlink()]:
            path = here / name
            if name.startswith('.'):
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                outside.append(f'{path.relative_to(folder)} -> {os.readlink(path)}')
            elif path.is_file():
                files.append(path)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    if outside:
        raise ValueError(
            f'{folder} holds links to files outside it ({", ".join(outside)}); a push uploads only what the '
            f'folder holds. Remove the links, or copy the files in (cp -L) if they are meant to be pushed.')
    if not files:
        raise ValueError(f'{folder} holds no files to upload.')
    return sorted(files)


def _join(path_in_repo: Optional[str], name: str) -> str:
    prefix = (path_in_repo or '').strip('/')
    return f'{prefix}/{name}' if prefix else name


def push_folder_to_hub(
        folder,
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
    """Upload every file of ``folder`` (:func:`local_files`) to ``repo_id`` in one commit.

    Creates the repo (``private`` applies only then) and the branch ``revision`` when they do not
    exist, then commits all files at once (``create_commit``, not ``upload_folder``, which may split
    a folder over several commits), so that a failure never leaves half a model at the revision.
    Files whose content is already on the Hub are skipped, which makes a failed push resumable by
    running it again. Local files are only read. The call is bounded in time
    (:mod:`timm_u1.io.limits`). ``source`` names what the user pushed in error messages (default:
    ``folder``; callers that push a staging copy pass the original).

    Returns:
        The ``huggingface_hub.CommitInfo`` (``.oid``, ``.commit_url``, ``.pr_url``).

    Raises:
        MissingTokenError: no token, before anything is sent.
        PushError: the upload failed; the message lists what was and was not uploaded.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    token = resolve_token(token)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} is not a folder; push_folder_to_hub uploads a folder.')
    source = source or str(folder)
    local = {_join(path_in_repo, p.relative_to(folder).as_posix()): p for p in local_files(folder)}
    where = f'{repo_id}' + (f'@{revision}' if revision else '')
    with hub_call(f'cannot push {source} to {where}', endpoint):
        api = HfApi(endpoint=endpoint, token=token)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in local.items()]
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and not create_pr:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.create_commit(
                repo_id, operations, commit_message=commit_message or f'Upload {folder.name} with timm_u1',
                revision=revision, create_pr=create_pr)
        except Exception as e:
            remote = None if create_pr else _remote_content_ids(api, repo_id, revision)
            raise _push_error(e, where, source, local, remote) from e


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
    except Exception:  # any failure to ask: the message says the Hub could not be asked
        return None


def _push_error(
        error: Exception, where: str, source: str, local: Dict[str, Path], remote: Optional[Dict[str, str]],
) -> PushError:
    """Say which files are at ``where`` with the local content and which are not, and that a re-run resumes."""
    reason = getattr(next((e for e in causes(error) if isinstance(e, HubStopped)), None), 'why', None)
    reason = f'the Hub {reason}' if reason else f'{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ""}'
    lines = [f'Push of {source} to {where} failed: {reason}']
    if remote is None:
        # the Hub cannot confirm; create_commit is atomic, so a failed commit committed nothing
        arrived = []
        lines.append('The Hub could not be asked what it holds now; as far as this client knows:')
    else:
        arrived = [p for p in local if p in remote
                   and remote[p] == (file_sha256(local[p]) if len(remote[p]) == 64 else git_blob_oid(local[p]))]
    missing = [p for p in local if p not in arrived]
    lines.append(f'Not uploaded ({len(missing)} of {len(local)} files): {", ".join(missing) or "none"}.')
    if arrived:
        lines.append(f'On the Hub with this content: {", ".join(arrived)}.')
    status = getattr(getattr(error, 'response', None), 'status_code', None)
    if status in (401, 403):
        lines.append(f'The Hub refused the token: check that it is valid and can write to {where.split("/")[0]}.')
    lines.append(f'The local files of {source} are unchanged; run the same push again to resume (content the Hub '
                 f'already stores is not sent again).')
    return PushError('\n'.join(lines), uploaded=arrived, not_uploaded=missing)

