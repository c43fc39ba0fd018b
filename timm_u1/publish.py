""" Publish u1 models, training runs and angle-prototype memories to the Hugging Face Hub.

What is pushed is decided here, in the layout that ``timm.create_model("hf-hub:ORG/NAME")`` and
:func:`timm_u1.from_pretrained` read: a model at the repo root (``config.json``, ``model.safetensors``,
``README.md``) and, optionally, an angle-prototype memory in a sub-folder (``memory/memory.safetensors``,
``memory/memory.json``). Everything is checked as a load would check it before anything is sent; how
it is sent (one commit, bounded in time) is :mod:`timm_u1.io.push`.
"""
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from .files import file_sha256, read_json, write_json, write_text
from .io.cards import check_license, render_card, render_memory_card
from .io.config import CARD_NAME, CONFIG_NAME, RECORD_KEY, WEIGHTS_NAME, base_name, is_u1_config
from .io.download import download_folder
from .io.limits import hub_call
from .io.load import check_model_folder
from .io.push import local_files, push_folder_to_hub, resolve_token
from .io.specs import parse_hub_ref
from .memory.memory import MEMORY_CONFIG, MEMORY_SUBFOLDER, MEMORY_WEIGHTS, _check_metadata

__all__ = [
    'MEMORY_FILES', 'push_to_hub', 'push_path', 'detect_folder', 'check_remote_architecture', 'download_memory',
]

_logger = logging.getLogger(__name__)

MEMORY_FILES = (MEMORY_WEIGHTS, MEMORY_CONFIG)
RUN_EXTRAS = ('metrics.jsonl',)  # besides *.png, what a training run adds to its exported model


def _remote_config(repo_id: str, revision: Optional[str], token, endpoint) -> Optional[Dict[str, Any]]:
    """The ``config.json`` at the repo root (a new branch: on the default branch, where it will start),
    or None when the repo, or a model in it, does not exist yet."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    with tempfile.TemporaryDirectory(prefix='timm_u1-check-') as tmp:
        for rev in dict.fromkeys([revision, None]):
            try:
                return read_json(hf_hub_download(
                    repo_id, CONFIG_NAME, revision=rev, token=token, endpoint=endpoint, local_dir=tmp))
            except RevisionNotFoundError:
                continue
            except (RepositoryNotFoundError, RemoteEntryNotFoundError):  # the Hub says: not there
                return None
    return None


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
    not exist yet, or holds no ``config.json``, passes. The call is bounded in time.
    """
    with hub_call(f'cannot check {repo_id}', endpoint):
        config = _remote_config(repo_id, revision, token, endpoint)
    remote = config.get('architecture') if isinstance(config, dict) else None
    if remote and base_name(str(remote)) != base_name(architecture):
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
        plots: Sequence = (),
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
        license: Optional[str] = None,
):
    """Save a u1 model in the Hub layout (with its model card and ``plots``) and push it to ``repo_id``.

    ``plots`` are PNG files; they are uploaded next to the card, which shows them. The token is
    checked before anything else, and an existing repo of another architecture is refused before
    anything is uploaded. See :func:`~timm_u1.io.push.push_folder_to_hub` for ``private``,
    ``revision``, ``create_pr`` and failures; ``license`` is a Hub licence id.
    """
    from .io.save import save_pretrained

    token = resolve_token(token)
    check_license(license)
    plots = [Path(p) for p in plots]
    for plot in plots:
        if not plot.is_file():
            raise FileNotFoundError(f'Plot {plot} does not exist.')
    with tempfile.TemporaryDirectory(prefix='timm_u1-push-') as tmp:
        for plot in plots:
            shutil.copy2(plot, Path(tmp) / plot.name)
        save_pretrained(  # checks the model is a u1 model and the label names fit
            model, tmp, label_names=label_names, repo_id=repo_id, metrics=metrics, dataset=dataset,
            training=training, plots=[p.name for p in plots], license=license)
        check_model_folder(tmp)
        architecture = model.pretrained_cfg['architecture']
        check_remote_architecture(repo_id, architecture, revision=revision, token=token, endpoint=endpoint)
        return push_folder_to_hub(
            tmp, repo_id, source=f'the {architecture} model', token=token, private=private, revision=revision,
            create_pr=create_pr, commit_message=commit_message or f'Upload {architecture} with timm_u1',
            endpoint=endpoint)


# ---------------------------------------------------------------------------------------------
# What a folder is: a trained run, an exported model, a memory

def detect_folder(path) -> Tuple[str, Path]:
    """``("run" | "model" | "memory", folder)`` for a training run dir, a Hub-layout model dir or a memory dir.

    A run directory (``timm-u1 train``) holds the exported model in ``export/``; the returned folder is
    then that ``export/``.
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


def _copy_files(source: Path, staging: Path) -> None:
    """The files of ``source`` (top level, no link out of it: :func:`~timm_u1.io.push.local_files`) into ``staging``."""
    for p in local_files(source):
        if p.parent == source:
            shutil.copyfile(p, staging / p.name)


def _stage_model(export_dir: Path, staging: Path, repo_id: str, run_dir: Optional[Path], license: Optional[str]) -> None:
    """Copy an exported model (and its run's plots and metrics log) for one commit, its card re-rendered
    for ``repo_id`` from the data ``config.json`` keeps. A twin folder plain timm cannot load (timm_u1
    0.1.0's, or timm's own ``save_for_hf`` on a twin: architecture ``u1_...``) is saved again in the
    layout plain timm loads."""
    from .io.load import from_pretrained
    from .io.save import save_pretrained

    config = read_json(export_dir / CONFIG_NAME)
    if RECORD_KEY not in config and is_u1_config(config):
        _logger.warning('%s: written by timm_u1 0.1.0 or timm on a twin; pushed in the layout plain timm loads.',
                        export_dir)
        save_pretrained(from_pretrained(export_dir), staging, label_names=config.get('label_names'),
                        repo_id=repo_id, license=license)
    else:
        _copy_files(export_dir, staging)
    if run_dir is not None:
        for p in sorted(run_dir.glob('*.png')) + [run_dir / n for n in RUN_EXTRAS]:
            if p.is_file() and not p.is_symlink() and not (staging / p.name).exists():
                shutil.copyfile(p, staging / p.name)
    config = read_json(staging / CONFIG_NAME)
    if RECORD_KEY in config:
        if license:
            config[RECORD_KEY]['card']['license'] = license
            write_json(staging / CONFIG_NAME, config)
        write_text(staging / CARD_NAME, render_card(config, repo_id))


def _check_memory(memory_dir: Path) -> Dict[str, Any]:
    """A finished, intact memory's metadata, or an error naming what is wrong."""
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
    return metadata


def _memory_card(metadata: Dict[str, Any], memory_dir: Path, repo_id: str, path_in_repo: str, license) -> str:
    backbone = metadata.get('backbone') if isinstance(metadata.get('backbone'), str) else None
    try:
        base = parse_hub_ref(backbone) if backbone else None
    except ValueError:
        base = None
    return render_memory_card(
        metadata, repo_id=repo_id, path_in_repo=path_in_repo, backbone=backbone,
        base_model=base.repo_id if base else None, class_names=metadata.get('class_names') or (),
        metrics=metadata.get('metrics'), dataset=metadata.get('dataset'), license=license,
        plots=[p.name for p in sorted(memory_dir.glob('*.png'))])


def _stage_memory(memory_dir: Path, staging: Path, repo_id: str, path_in_repo: str, root_card: bool, license) -> None:
    """Stage a finished, intact memory in ``staging/path_in_repo`` with its card, and the same card at
    ``staging/README.md`` when ``root_card`` (the Hub reads a repo's metadata from its root card only)."""
    metadata = _check_memory(memory_dir)
    target = staging / path_in_repo if path_in_repo else staging
    target.mkdir(parents=True, exist_ok=True)
    _copy_files(memory_dir, target)
    card = _memory_card(metadata, memory_dir, repo_id, path_in_repo, license)
    write_text(target / CARD_NAME, card)
    if root_card and path_in_repo:
        write_text(staging / CARD_NAME, card)


def _has_root_model(repo_id: str, revision: Optional[str], token, endpoint) -> bool:
    with hub_call(f'cannot check {repo_id}', endpoint):
        return _remote_config(repo_id, revision, token, endpoint) is not None


def push_path(
        path,
        repo_id: str,
        path_in_repo: Optional[str] = None,
        token: Optional[str] = None,
        private: Optional[bool] = None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        commit_message: Optional[str] = None,
        endpoint: Optional[str] = None,
        license: Optional[str] = None,
):
    """Push a training run dir, an exported model dir or a memory dir (see :func:`detect_folder`).

    Models are checked as a load checks them (files, config fields, recorded SHA-256, weights that fit
    the architecture) and go to the repo root (or ``path_in_repo``), after the architecture check,
    with their card re-rendered for ``repo_id``; a run also uploads its PNG plots and
    ``metrics.jsonl``. Memories go to ``path_in_repo`` (default ``"memory"``) with a memory card,
    which is also the repo's root card when no model is at the root. ``license`` (a Hub licence id)
    goes into the card. Links to files outside the folder are refused.
    """
    token = resolve_token(token)
    license = check_license(license)
    kind, folder = detect_folder(path)
    with tempfile.TemporaryDirectory(prefix='timm_u1-push-') as tmp:
        staging = Path(tmp)
        if kind == 'memory':
            path_in_repo = MEMORY_SUBFOLDER if path_in_repo is None else path_in_repo.strip('/')
            root_card = not path_in_repo or not _has_root_model(repo_id, revision, token, endpoint)
            _stage_memory(folder, staging, repo_id, path_in_repo, root_card, license)
            target = None
        else:
            if not (folder / WEIGHTS_NAME).is_file():
                raise FileNotFoundError(
                    f'{folder} has config.json but no {WEIGHTS_NAME}; only safetensors weights are pushed. '
                    f'Save the model with timm_u1.save_pretrained(model, folder).')
            config = check_model_folder(folder)
            check_remote_architecture(repo_id, config['architecture'], revision=revision, token=token, endpoint=endpoint)
            _stage_model(folder, staging, repo_id, Path(path) if kind == 'run' else None, license)
            check_model_folder(staging)
            target = path_in_repo
        return push_folder_to_hub(
            staging, repo_id, source=str(path), path_in_repo=target, token=token, private=private,
            revision=revision, create_pr=create_pr, endpoint=endpoint,
            commit_message=commit_message or f'Upload {kind} {Path(path).resolve().name} with timm_u1')


# ---------------------------------------------------------------------------------------------
# Downloads

def download_memory(
        repo_id: str,
        revision: Optional[str] = None,
        path_in_repo: Optional[str] = MEMORY_SUBFOLDER,
        **kwargs,
):
    """The verified folder of an angle-prototype memory pushed with :func:`push_path` or ``push_folder_to_hub``."""
    return download_folder(repo_id, revision=revision, path_in_repo=path_in_repo, required=MEMORY_FILES, **kwargs)
