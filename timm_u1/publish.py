""" Publish u1 models and angle-prototype memories to the Hugging Face Hub, and fetch them back.

Uploads go through ``huggingface_hub.HfApi`` (``create_repo`` then ONE ``create_commit``), in the
layout that ``timm.create_model("hf-hub:ORG/NAME")`` and :func:`timm_u1.from_pretrained` read: a
model at the repo root (``config.json``, ``model.safetensors``, ``README.md``) and, optionally, an
angle-prototype memory in a sub-folder (``memory/memory.safetensors``, ``memory/memory.json``).

Downloads go through ``snapshot_download``: pinned to a revision when asked, stored in the
Hugging Face cache, served from it offline (``HF_HUB_OFFLINE=1``), and checked file by file
against the hashes the Hub listed for that commit (:func:`verify_folder`).
"""
import argparse
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from ._files import file_sha256, read_json, write_text
from .hub import CONFIG_NAME, WEIGHTS_NAME, UnsafeCheckpointError
from .memory import MEMORY_CONFIG, MEMORY_SUBFOLDER, MEMORY_WEIGHTS

__all__ = [
    'PushError', 'MissingTokenError', 'IntegrityError', 'UnsafeCheckpointError', 'MEMORY_FILES',
    'resolve_token', 'push_to_hub', 'push_folder_to_hub', 'push_path', 'detect_folder',
    'check_remote_architecture', 'download_folder', 'download_memory', 'verify_folder',
    'add_commands',
]

PathLike = Union[str, os.PathLike]

MEMORY_FILES = (MEMORY_WEIGHTS, MEMORY_CONFIG)
RUN_EXTRAS = ('metrics.jsonl',)  # besides *.png, what a training run adds to its exported model


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
):
    """Upload every (non-hidden) file of ``folder`` to ``repo_id`` in one commit.

    Creates the repo (``private`` applies only then) and the branch ``revision`` when they do not
    exist, then commits all files at once (``create_commit``, not ``upload_folder``, which may split
    a folder over several commits), so that a failure never leaves half a model at the revision.
    Files whose content is already on the Hub are skipped, which makes a failed push resumable by
    running it again. Local files are only read.

    Returns:
        The ``huggingface_hub.CommitInfo`` (``.oid``, ``.commit_url``, ``.pr_url``).

    Raises:
        MissingTokenError: no token, before anything is sent.
        PushError: the upload failed; the message lists what was and was not uploaded.
    """
    return _push_folder(
        folder, repo_id, path_in_repo=path_in_repo, token=token, private=private, revision=revision,
        create_pr=create_pr, commit_message=commit_message, endpoint=endpoint, source=str(folder))


def _push_folder(
        folder: PathLike,
        repo_id: str,
        source: str,
        path_in_repo: Optional[str] = None,
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
):
    """:func:`push_folder_to_hub`; ``source`` names what the user pushed (``folder`` may be a staging copy)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    token = resolve_token(token)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{folder} is not a folder; push_folder_to_hub uploads a folder.')
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
            and remote[p] == (file_sha256(local[p]) if len(remote[p]) == 64 else _git_blob_oid(local[p]))]
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


def check_remote_architecture(
        repo_id: str,
        architecture: str,
        revision: Optional[str] = None,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
) -> None:
    """Refuse to push ``architecture`` over a model of another architecture at ``repo_id``.

    u1 twins and their base models count as the same architecture (same weights layout). A branch
    that does not exist yet is checked on the default branch, where it will start; a repo that does
    not exist yet, or holds no ``config.json``, passes.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    from .u1 import U1_PREFIX

    with tempfile.TemporaryDirectory(prefix='timm_u1-check-') as tmp:
        try:
            path = hf_hub_download(
                repo_id, CONFIG_NAME, revision=revision, token=token, endpoint=endpoint, local_dir=tmp)
        except RevisionNotFoundError:
            if revision is None:
                return
            return check_remote_architecture(repo_id, architecture, token=token, endpoint=endpoint)
        except (RepositoryNotFoundError, EntryNotFoundError):
            return
        remote = read_json(path).get('architecture', '')

    def base(name: str) -> str:
        return name[len(U1_PREFIX):] if name.startswith(U1_PREFIX) else name

    if base(remote) != base(architecture):
        raise ValueError(
            f"{repo_id}{'@' + revision if revision else ''} already holds a '{remote}' model; refusing to "
            f"push a '{architecture}' over it (the card, config and weights would no longer match its "
            f'history). Push to another repo id, or delete the repo first if replacing it is intended.')


def push_to_hub(
        model,
        repo_id: str,
        label_names: Optional[Sequence[str]] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[PathLike] = (),
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
):
    """Save a u1 model in the Hub layout (with its model card and ``plots``) and push it to ``repo_id``.

    ``plots`` are PNG files; they are uploaded next to the card, which shows them. The token is
    checked before anything else, and an existing repo of another architecture is refused before
    anything is uploaded. See :func:`push_folder_to_hub` for ``private``, ``revision``,
    ``create_pr`` and failures.
    """
    from .hub import save_pretrained

    token = resolve_token(token)
    plots = [Path(p) for p in plots]
    for plot in plots:
        if not plot.is_file():
            raise FileNotFoundError(f'Plot {plot} does not exist.')
    with tempfile.TemporaryDirectory(prefix='timm_u1-push-') as tmp:
        for plot in plots:
            shutil.copy2(plot, Path(tmp) / plot.name)
        save_pretrained(  # checks the model is a u1 model and the label names fit
            model, tmp, label_names=label_names, repo_id=repo_id, metrics=metrics, dataset=dataset,
            training=training, plots=[p.name for p in plots])
        architecture = model.pretrained_cfg['architecture']
        check_remote_architecture(repo_id, architecture, revision=revision, token=token, endpoint=endpoint)
        return _push_folder(
            tmp, repo_id, source=f'the {architecture} model', token=token, private=private, revision=revision,
            create_pr=create_pr, commit_message=commit_message or f'Upload {architecture} with timm_u1',
            endpoint=endpoint)


# ---------------------------------------------------------------------------------------------
# What a folder is: a trained run, an exported model, a memory

def detect_folder(path: PathLike) -> Tuple[str, Path]:
    """``("run" | "model" | "memory", folder)`` for a training run dir, a Hub-layout model dir or a memory dir.

    A run directory (``scripts/train.py``) holds the exported model in ``export/``; the returned
    folder is then that ``export/``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f'{path} is not a folder.')
    if all((path / name).is_file() for name in MEMORY_FILES):
        return 'memory', path
    if (path / CONFIG_NAME).is_file():
        return 'model', path
    if (path / 'export' / CONFIG_NAME).is_file():
        return 'run', path / 'export'
    raise ValueError(
        f'{path} is neither a training run (export/config.json), an exported model (config.json + '
        f'{WEIGHTS_NAME}) nor an angle-prototype memory ({" + ".join(MEMORY_FILES)}).')


def _stage_model(export_dir: Path, staging: Path, repo_id: str, run_dir: Optional[Path] = None) -> None:
    """Copy an exported model (and its run's plots and metrics log) for one commit, its card
    retargeted to ``repo_id``."""
    from .cards import retarget_model_card

    for p in sorted(export_dir.iterdir()):
        if p.is_file() and not p.name.startswith('.'):
            shutil.copy2(p, staging / p.name)
    if run_dir is not None:
        for p in sorted(run_dir.glob('*.png')) + [run_dir / n for n in RUN_EXTRAS]:
            if p.is_file() and not (staging / p.name).exists():
                shutil.copy2(p, staging / p.name)
    card = staging / 'README.md'
    if card.is_file():
        config = read_json(staging / CONFIG_NAME)
        write_text(card, retarget_model_card(card.read_text(encoding='utf-8'), config, repo_id))


def _stage_memory(memory_dir: Path, staging: Path, repo_id: str, path_in_repo: Optional[str]) -> None:
    """Copy a finished, intact memory and, when it has none, write its model card next to it."""
    from .cards import render_memory_card

    metadata = read_json(memory_dir / MEMORY_CONFIG)
    if not metadata.get('complete', True):
        raise ValueError(
            f'{memory_dir} holds a memory whose build did not finish; rerun `timm-u1 memory build` with '
            f'the same arguments to complete it, then push.')
    checksum = metadata.get('safetensors_sha256')  # 'sha256:<hex>'
    if checksum and file_sha256(memory_dir / MEMORY_WEIGHTS) != checksum.split(':')[-1]:
        raise ValueError(
            f'{memory_dir / MEMORY_WEIGHTS} does not match the SHA-256 in {MEMORY_CONFIG}; the memory is '
            f'corrupt or half-written. Rebuild or re-save it before pushing.')
    for p in sorted(memory_dir.iterdir()):
        if p.is_file() and not p.name.startswith('.'):
            shutil.copy2(p, staging / p.name)
    if not (staging / 'README.md').exists():
        backbone = metadata.get('backbone')
        write_text(staging / 'README.md', render_memory_card(
            metadata, repo_id=repo_id, path_in_repo=path_in_repo,
            backbone=backbone if isinstance(backbone, str) else None,
            class_names=metadata.get('class_names') or (), metrics=metadata.get('metrics'),
            dataset=metadata.get('dataset'), plots=[p.name for p in sorted(memory_dir.glob('*.png'))]))


def _check_weights(folder: Path) -> None:
    config = read_json(folder / CONFIG_NAME)
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f'{folder} has config.json but no {WEIGHTS_NAME}; only safetensors weights are pushed. '
            f'Save the model with timm_u1.save_pretrained(model, folder).')
    if 'architecture' not in config:
        raise ValueError(f'{folder / CONFIG_NAME} names no architecture; it is not a timm model config.')


def push_path(
        path: PathLike,
        repo_id: str,
        path_in_repo: Optional[str] = None,
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
):
    """Push a training run dir, an exported model dir or a memory dir (see :func:`detect_folder`).

    Models go to the repo root (or ``path_in_repo``), after the architecture check, with their card
    retargeted to ``repo_id``; a run also uploads its PNG plots and ``metrics.jsonl``. Memories go
    to ``path_in_repo`` (default ``"memory"``) with a rendered memory card, so one repo holds a
    model and its memory.
    """
    token = resolve_token(token)
    kind, folder = detect_folder(path)
    if kind == 'memory':
        path_in_repo = MEMORY_SUBFOLDER if path_in_repo is None else path_in_repo
    else:
        _check_weights(folder)
        check_remote_architecture(
            repo_id, read_json(folder / CONFIG_NAME)['architecture'], revision=revision, token=token,
            endpoint=endpoint)
    with tempfile.TemporaryDirectory(prefix='timm_u1-push-') as tmp:
        staging = Path(tmp)
        if kind == 'memory':
            _stage_memory(folder, staging, repo_id, path_in_repo)
        else:
            _stage_model(folder, staging, repo_id, run_dir=Path(path) if kind == 'run' else None)
        return _push_folder(
            staging, repo_id, source=str(path), path_in_repo=path_in_repo, token=token, private=private,
            revision=revision, create_pr=create_pr, endpoint=endpoint,
            commit_message=commit_message or f'Upload {kind} {Path(path).resolve().name} with timm_u1')


# ---------------------------------------------------------------------------------------------
# Downloads

def _git_blob_oid(path: Path) -> str:
    h = hashlib.sha1(b'blob %d\0' % path.stat().st_size)
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


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


def verify_folder(folder: PathLike, required: Sequence[str] = ()) -> Path:
    """Check a downloaded folder; raise :class:`IntegrityError` naming every missing or corrupt file.

    In the Hub cache, every file of the commit's tree listing (``trees/<commit>.json``, written by
    ``snapshot_download``) under ``folder`` (a repo or one of its sub-folders, downloaded whole by
    :func:`download_folder`) must exist with the listed size and hash (git blob oid,
    or sha256 for LFS files), and every file's content must match the blob it links to. Everywhere,
    ``required`` files must exist, JSON files must parse and safetensors files must have a whole
    header and the length it describes.
    """
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
        listing = storage / 'trees' / f'{commit}.json'
        entries = read_json(listing).get('files', {}) if listing.is_file() else {}
        prefix = '' if sub == '.' else sub + '/'
        for repo_path, entry in entries.items():
            if not repo_path.startswith(prefix):
                continue
            name = repo_path[len(prefix):]
            path = folder / name
            if not path.exists():
                problems[name] = 'missing (listed by the Hub for this commit)'
                continue
            size = entry.get('lfs_size') or entry['size']
            if path.stat().st_size != size:
                problems[name] = f'{path.stat().st_size} bytes, the Hub lists {size}'
            elif entry.get('lfs_sha256'):
                if file_sha256(path) != entry['lfs_sha256']:
                    problems[name] = 'content differs from the Hub listing (sha256; corrupt)'
            elif _git_blob_oid(path) != entry['blob_id']:
                problems[name] = 'content differs from the Hub listing (git oid; corrupt)'
    for path in sorted(p for p in folder.rglob('*') if p.is_file() or p.is_symlink()):
        name = path.relative_to(folder).as_posix()
        if name in problems or any(part.startswith('.') for part in path.relative_to(folder).parts):
            continue
        if not path.exists():
            problems[name] = 'dangling link into the cache (blob missing)'
            continue
        if path.is_symlink() and snapshot is not None:
            etag = Path(os.readlink(path)).name
            digest = file_sha256(path) if len(etag) == 64 else _git_blob_oid(path) if len(etag) == 40 else etag
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
) -> Path:
    """Download (or find in the Hugging Face cache) a repo, or its ``path_in_repo`` sub-folder, and verify it.

    ``revision`` (branch, tag or commit) pins what is fetched. Offline (``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True``) the folder comes from the cache, which must hold that revision.
    Returns the folder inside the cache snapshot; see :func:`verify_folder` for the checks.
    """
    from huggingface_hub import snapshot_download

    patterns = [f'{path_in_repo.strip("/")}/*'] if path_in_repo else None
    snapshot = Path(snapshot_download(
        repo_id, revision=revision, cache_dir=cache_dir, token=token, endpoint=endpoint,
        allow_patterns=patterns, local_files_only=local_files_only))
    folder = snapshot / path_in_repo.strip('/') if path_in_repo else snapshot
    if not folder.is_dir():
        raise FileNotFoundError(f'{repo_id}@{revision or "main"} has no folder {path_in_repo!r}.')
    return verify_folder(folder, required=required)


def download_memory(
        repo_id: str,
        revision: Optional[str] = None,
        path_in_repo: Optional[str] = MEMORY_SUBFOLDER,
        **kwargs,
) -> Path:
    """The verified folder of an angle-prototype memory pushed with :func:`push_path` or ``push_folder_to_hub``."""
    return download_folder(repo_id, revision=revision, path_in_repo=path_in_repo, required=MEMORY_FILES, **kwargs)


# ---------------------------------------------------------------------------------------------
# timm-u1 push

def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        'push', help='Push a training run, an exported model or a memory to the Hugging Face Hub.',
        description='Push a training run directory (its export/, plots and metrics.jsonl), an exported '
                    'model directory (config.json + model.safetensors) or an angle-prototype memory '
                    'directory (memory.safetensors + memory.json, pushed to memory/ by default).')
    parser.add_argument('path', help='run directory, export directory or memory directory')
    parser.add_argument('--repo-id', required=True, help='ORG/NAME on the Hub')
    parser.add_argument('--path-in-repo', default=None, help='sub-folder in the repo (memories: memory)')
    parser.add_argument('--revision', default=None, help='branch to push to (created if missing)')
    parser.add_argument('--private', action='store_true', default=None, help='create the repo private')
    parser.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing')
    parser.add_argument('--commit-message', default=None)
    parser.add_argument('--token', default=None, help='Hub token (default: HF_TOKEN or the saved login)')
    parser.add_argument('--endpoint', default=None, help='Hub endpoint (default: HF_ENDPOINT or huggingface.co)')
    parser.set_defaults(func=_run_push)


def _run_push(args: argparse.Namespace) -> int:
    import sys

    try:
        info = push_path(
            args.path, args.repo_id, path_in_repo=args.path_in_repo, token=args.token, private=args.private,
            revision=args.revision, create_pr=args.create_pr, commit_message=args.commit_message,
            endpoint=args.endpoint)
    except (MissingTokenError, PushError, FileNotFoundError, ValueError) as e:
        print(f'timm-u1 push: {e}', file=sys.stderr)
        return 1
    print(f'Pushed {args.path} to {args.repo_id}: {info.pr_url or info.commit_url}')
    return 0
