""" Publish u1 models, training runs and angle-prototype memories to the Hugging Face Hub.

What is pushed is decided here, in the layout that ``timm.create_model("hf-hub:ORG/NAME")`` and
:func:`timm_u1.from_pretrained` read: a model at the repo root (``config.json``,
``model.safetensors``, ``README.md``) and, optionally, an angle-prototype memory in a sub-folder
(``memory/memory.safetensors``, ``memory/memory.json``). How it is sent and fetched (one commit,
verified downloads) is :mod:`timm_u1.io.hub`.
"""
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from .files import file_sha256, read_json, write_text
from .io.hub import download_folder, push_folder_to_hub, resolve_token
from .io.serialization import CONFIG_NAME, RECORD_KEY, WEIGHTS_NAME, check_model_folder, render_card
from .io.specs import parse_hub_ref
from .memory.memory import MEMORY_CONFIG, MEMORY_SUBFOLDER, MEMORY_WEIGHTS, _check_metadata

__all__ = [
    'MEMORY_FILES', 'push_to_hub', 'push_path', 'detect_folder', 'check_remote_architecture', 'download_memory',
]

PathLike = Union[str, os.PathLike]

MEMORY_FILES = (MEMORY_WEIGHTS, MEMORY_CONFIG)
RUN_EXTRAS = ('metrics.jsonl',)  # besides *.png, what a training run adds to its exported model


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

    from .io.hub import _bound_hub_calls, _hub_error
    from .core.u1 import U1_PREFIX

    timeout = _bound_hub_calls()
    with tempfile.TemporaryDirectory(prefix='timm_u1-check-') as tmp:
        try:
            path = hf_hub_download(
                repo_id, CONFIG_NAME, revision=revision, token=token, endpoint=endpoint, local_dir=tmp,
                etag_timeout=timeout)
        except RevisionNotFoundError:
            if revision is None:
                return
            return check_remote_architecture(repo_id, architecture, token=token, endpoint=endpoint)
        except (RepositoryNotFoundError, EntryNotFoundError):
            return
        except Exception as e:
            error = _hub_error(e, f'cannot check {repo_id}', endpoint, timeout)
            if error is None:
                raise
            raise error from e
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
    from .io.serialization import save_pretrained

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
        check_model_folder(tmp)
        architecture = model.pretrained_cfg['architecture']
        check_remote_architecture(repo_id, architecture, revision=revision, token=token, endpoint=endpoint)
        return push_folder_to_hub(
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
    re-rendered for ``repo_id`` from the data ``config.json`` keeps (folders of timm_u1 0.1.0 keep
    their card as it is)."""
    for p in sorted(export_dir.iterdir()):
        if p.is_file() and not p.name.startswith('.'):
            shutil.copy2(p, staging / p.name)
    if run_dir is not None:
        for p in sorted(run_dir.glob('*.png')) + [run_dir / n for n in RUN_EXTRAS]:
            if p.is_file() and not (staging / p.name).exists():
                shutil.copy2(p, staging / p.name)
    config = read_json(staging / CONFIG_NAME)
    if (staging / 'README.md').is_file() and RECORD_KEY in config:
        write_text(staging / 'README.md', render_card(config, repo_id))


def _stage_memory(memory_dir: Path, staging: Path, repo_id: str, path_in_repo: Optional[str]) -> None:
    """Copy a finished, intact memory and, when it has none, write its model card next to it."""
    from .io.cards import render_memory_card

    metadata = read_json(memory_dir / MEMORY_CONFIG)
    _check_metadata(metadata, memory_dir)  # every field of the right type: "complete": "false" is no finished build
    if not metadata['complete']:
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
        backbone = metadata.get('backbone') if isinstance(metadata.get('backbone'), str) else None
        try:
            base = parse_hub_ref(backbone) if backbone else None
        except ValueError:
            base = None
        write_text(staging / 'README.md', render_memory_card(
            metadata, repo_id=repo_id, path_in_repo=path_in_repo, backbone=backbone,
            base_model=base.repo_id if base else None,
            class_names=metadata.get('class_names') or (), metrics=metadata.get('metrics'),
            dataset=metadata.get('dataset'), plots=[p.name for p in sorted(memory_dir.glob('*.png'))]))


def _check_weights(folder: Path) -> None:
    """A model is checked before upload as a load would check it (whole weights, recorded SHA-256)."""
    if not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f'{folder} has config.json but no {WEIGHTS_NAME}; only safetensors weights are pushed. '
            f'Save the model with timm_u1.save_pretrained(model, folder).')
    check_model_folder(folder)


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
        return push_folder_to_hub(
            staging, repo_id, source=str(path), path_in_repo=path_in_repo, token=token, private=private,
            revision=revision, create_pr=create_pr, endpoint=endpoint,
            commit_message=commit_message or f'Upload {kind} {Path(path).resolve().name} with timm_u1')


# ---------------------------------------------------------------------------------------------
# Downloads

def download_memory(
        repo_id: str,
        revision: Optional[str] = None,
        path_in_repo: Optional[str] = MEMORY_SUBFOLDER,
        **kwargs,
) -> Path:
    """The verified folder of an angle-prototype memory pushed with :func:`push_path` or ``push_folder_to_hub``."""
    return download_folder(repo_id, revision=revision, path_in_repo=path_in_repo, required=MEMORY_FILES, **kwargs)
