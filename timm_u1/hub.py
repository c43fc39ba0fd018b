""" The one Hub layer: Hub-layout save and load of u1 models, verified downloads, atomic pushes.

A saved folder is what timm's ``create_model("hf-hub:...")`` and ``create_model("local-dir:...")``
read: ``config.json`` (timm's format; architecture ``u1_...``, label names, the U(1) settings in
``pretrained_cfg['u1']``), ``model.safetensors`` and a ``README.md`` model card.

Downloads go through ``snapshot_download``: pinned to a revision when asked, stored in the
Hugging Face cache, served from it offline (``HF_HUB_OFFLINE=1``), and checked file by file
against the hashes the Hub listed for that commit (:func:`verify_folder`). Uploads go through
``huggingface_hub.HfApi`` (``create_repo`` then ONE ``create_commit``, :func:`push_folder_to_hub`).
What is pushed (models, runs, memories) is decided in :mod:`timm_u1.publish`.
"""
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import timm

from ._files import file_sha256, read_json, write_text
from .cards import render_model_card
from .u1 import U1_PREFIX

__all__ = [
    'save_pretrained', 'from_pretrained', 'read_config', 'UnsafeCheckpointError', 'WEIGHTS_NAME',
    'CONFIG_NAME', 'PICKLE_WEIGHTS', 'IntegrityError', 'MissingTokenError', 'PushError', 'resolve_token',
    'push_folder_to_hub', 'verify_folder', 'download_folder',
]

PathLike = Union[str, os.PathLike]

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
# checkpoints that need unpickling; refused unless the caller opts in (then weights_only=True)
PICKLE_WEIGHTS = ('pytorch_model.bin', 'pytorch_model.pth', 'model.pth')


class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs unpickling, refused because the caller did not opt in."""


def save_pretrained(
        model: nn.Module,
        save_directory: Union[str, os.PathLike],
        label_names: Optional[Sequence[str]] = None,
        repo_id: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        model_card: bool = True,
) -> Path:
    """Save a u1 model in the Hub layout (weights as safetensors, timm config, model card).

    Files are written to a temporary folder first and moved in one by one with ``os.replace``,
    weights before config, so an interrupted save never leaves a config pointing at missing
    weights. ``metrics``, ``dataset``, ``training`` and ``plots`` (paths relative to the folder)
    go into the model card.
    """
    architecture = model.pretrained_cfg.get('architecture', '')
    if not architecture.startswith(U1_PREFIX):
        raise ValueError(
            f"save_pretrained saves u1 models; this model's architecture is '{architecture}'. "
            f"Create it as timm.create_model('{U1_PREFIX}{architecture}', ...) (same weights) "
            f'or use timm.models.save_for_hf for plain timm models.')
    if label_names is not None and len(label_names) != model.num_classes:
        raise ValueError(f'{len(label_names)} label names for a model with {model.num_classes} classes.')
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)

    model_config = {'label_names': list(label_names)} if label_names is not None else None
    with tempfile.TemporaryDirectory(prefix='.save-', dir=save_directory) as tmp:
        tmp = Path(tmp)
        timm.models.save_for_hf(model, tmp, model_config=model_config, safe_serialization=True)
        names = [WEIGHTS_NAME]
        if model_card:
            config = read_config(tmp)
            cfg = dict(config['pretrained_cfg'], architecture=config['architecture'])
            if config.get('label_names'):
                cfg['label_names'] = config['label_names']
            card = render_model_card(
                cfg, num_features=config.get('num_features', model.num_features),
                repo_id=repo_id or f'ORG/{save_directory.resolve().name}', metrics=metrics,
                dataset=dataset, training=training, plots=plots)
            write_text(tmp / CARD_NAME, card)
            names.append(CARD_NAME)
        names.append(CONFIG_NAME)
        for name in names:
            os.replace(tmp / name, save_directory / name)
    return save_directory


def read_config(folder: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The ``config.json`` of a saved model folder, checked to be a timm config."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.')
    config = read_json(path)
    if not isinstance(config, dict) or 'architecture' not in config:
        raise ValueError(f'{path} names no architecture; it is not a timm model config.')
    return config


def from_pretrained(
        name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        cache_dir: Optional[Union[str, os.PathLike]] = None,
        as_u1: bool = False,
        allow_pickle: bool = False,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        **kwargs,
) -> nn.Module:
    """Load a u1 model, with its weights, from a local folder or a Hub repo id (``ORG/NAME``).

    Hub repos are fetched with ``snapshot_download`` (pinned to ``revision`` when given, kept in the
    Hugging Face cache, read from it offline with ``HF_HUB_OFFLINE=1``). Every folder is checked
    first (:func:`verify_folder`): a missing or corrupt file is named. The config
    must name a ``u1_`` architecture; ``as_u1=True`` loads a plain timm checkpoint (e.g. one saved
    by ``timm.models.save_for_hf``) into its u1 twin. Weights come from ``model.safetensors``; a
    folder with pickle weights only is refused unless ``allow_pickle=True``, and then read with
    ``torch.load(..., weights_only=True)``. ``kwargs`` go to ``timm.create_model``. The result is
    the model ``timm.create_model("local-dir:FOLDER", pretrained=True)`` builds.
    """
    path = Path(name_or_path)
    if path.is_dir():
        folder = verify_folder(path, required=(CONFIG_NAME,))
    else:
        repo_id = str(name_or_path)
        if repo_id.count('/') != 1:
            raise ValueError(
                f"'{repo_id}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
        folder = download_folder(
            repo_id, revision=revision, required=(CONFIG_NAME,), cache_dir=cache_dir, token=token,
            endpoint=endpoint, local_files_only=local_files_only)

    architecture = read_config(folder)['architecture']
    if not architecture.startswith(U1_PREFIX) and not as_u1:
        raise ValueError(
            f"{name_or_path}: config.json names architecture '{architecture}', not a u1_ "
            f'architecture. Load it with timm.create_model, or pass as_u1=True to load these '
            f'weights into its u1 twin.')
    if (folder / WEIGHTS_NAME).is_file():
        if architecture.startswith(U1_PREFIX):
            return timm.create_model(f'local-dir:{folder}', pretrained=True, **kwargs)
        return _create_from_folder(folder, pretrained=True, **kwargs)

    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if not pickles:
        raise FileNotFoundError(f'{folder} has no weights ({WEIGHTS_NAME} or one of {", ".join(PICKLE_WEIGHTS)}).')
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f'{name_or_path} has pickle weights only ({pickles[0]}), no {WEIGHTS_NAME}. Unpickling can run '
            f'code; pass allow_pickle=True if you trust the source (it is then loaded with '
            f'torch.load(weights_only=True)), or convert it to safetensors.')
    model = _create_from_folder(folder, pretrained=False, **kwargs)
    state_dict = torch.load(folder / pickles[0], map_location='cpu', weights_only=True)
    model.load_state_dict(state_dict.get('state_dict', state_dict))
    return model


def _create_from_folder(folder: Path, pretrained: bool, **kwargs) -> nn.Module:
    """The u1 model a saved folder describes (the twin of a plain timm architecture), as timm builds it."""
    from timm.models._hub import load_model_config_from_path

    pretrained_cfg, name, model_args = load_model_config_from_path(folder)
    if not name.startswith(U1_PREFIX):
        name = U1_PREFIX + name
    return timm.create_model(name, pretrained=pretrained, pretrained_cfg=pretrained_cfg, **{**model_args, **kwargs})


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
