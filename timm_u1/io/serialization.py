""" Save and load u1 models in the Hub layout.

A saved folder is what timm's ``create_model("hf-hub:...")`` and ``create_model("local-dir:...")``
read, so plain timm loads it as its base architecture::

    config.json        timm's format: "architecture" is the BASE architecture (e.g. "resnet10t"),
                       plus two top-level keys timm ignores: "u1" (the U(1) settings of the twin)
                       and "timm_u1" (SHA-256 and size of the weights, base model, model-card data)
    model.safetensors  the weights (the twin's weights are the base model's)
    README.md          the model card, rendered from config.json

:func:`from_pretrained` loads the same folder or repo as the ``u1_`` twin with its U(1) settings.
Folders written by timm_u1 0.1.0 (architecture ``u1_...``, settings in ``pretrained_cfg["u1"]``)
still load.
"""
import os
import re
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import timm

from ..core.u1 import U1_PREFIX, U1Config
from ..files import file_sha256, read_json, write_json, write_text
from .cards import render_model_card
from .hub import IntegrityError, _check_safetensors, download_folder, verify_folder
from .specs import HubRef, model_source

__all__ = [
    'save_pretrained', 'from_pretrained', 'read_config', 'check_model_folder', 'create_model_from_source',
    'render_card', 'UnsafeCheckpointError', 'WEIGHTS_NAME', 'CONFIG_NAME', 'CARD_NAME', 'PICKLE_WEIGHTS',
]

PathLike = Union[str, os.PathLike]

WEIGHTS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
CARD_NAME = 'README.md'
# checkpoints that need unpickling; refused unless the caller opts in (then weights_only=True)
PICKLE_WEIGHTS = ('pytorch_model.bin', 'pytorch_model.pth', 'model.pth')
# top-level config.json keys timm ignores: the twin's U(1) settings, and what timm_u1 records
U1_KEY = 'u1'
RECORD_KEY = 'timm_u1'
FORMAT_VERSION = 2  # 1: timm_u1 0.1.0 (architecture "u1_...", pretrained_cfg["u1"])
_PRETRAINED_CFG_FIELDS = None  # filled lazily: the keys timm's PretrainedCfg accepts


class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs unpickling, refused because the caller did not opt in."""


# ---------------------------------------------------------------------------------------------
# Save

def _pretrained_cfg_fields() -> frozenset:
    global _PRETRAINED_CFG_FIELDS
    if _PRETRAINED_CFG_FIELDS is None:
        from timm.models._pretrained import PretrainedCfg

        _PRETRAINED_CFG_FIELDS = frozenset(f.name for f in fields(PretrainedCfg))
    return _PRETRAINED_CFG_FIELDS


def _stale_temps(folder: Path) -> None:
    """Remove temp folders of saves into ``folder`` whose process is gone (killed mid-save)."""
    for tmp in folder.glob('.save-*'):
        match = re.fullmatch(r'\.save-(\d+)-.*', tmp.name)
        if tmp.is_dir() and match and not _pid_alive(int(match.group(1))):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_pretrained(
        model: nn.Module,
        save_directory: PathLike,
        label_names: Optional[Sequence[str]] = None,
        repo_id: Optional[str] = None,
        metrics: Optional[Dict[str, Any]] = None,
        dataset: Optional[str] = None,
        training: Optional[str] = None,
        plots: Sequence[str] = (),
        model_card: bool = True,
        eval_split: Optional[str] = None,
        base_model: Optional[str] = None,
        license: Optional[str] = None,
) -> Path:
    """Save a u1 model in the Hub layout (weights as safetensors, timm config, model card).

    ``config.json`` names the base architecture, so plain timm loads the folder (see the module
    docstring). ``metrics`` (evaluated on ``dataset``, split ``eval_split``), ``training`` and
    ``plots`` (paths relative to the folder) are kept in ``config.json`` and rendered into the card,
    so pushing under another repo id re-renders it from data. ``base_model`` is the Hub repo the
    weights started from; by default the one the model was loaded from (``pretrained_cfg["base_model"]``,
    set by timm_u1's loaders).

    Files are written to a temporary folder, then moved in with ``os.replace``, weights first and
    ``config.json`` (with the weights' SHA-256) last: a folder caught between two saves has a config
    whose recorded hash names the mismatch, and :func:`from_pretrained` refuses it. On an error the
    previous files are restored; the temp folder of a killed save is removed by the next save.
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
    _stale_temps(save_directory)
    pretrained_cfg = dict(model.pretrained_cfg)
    base_model = base_model or pretrained_cfg.get('base_model')
    card = dict(metrics=dict(metrics) if metrics else None, dataset=dataset, eval_split=eval_split,
                training=training, plots=list(plots), license=license)

    tmp = Path(tempfile.mkdtemp(prefix=f'.save-{os.getpid()}-', dir=save_directory))
    try:
        model_config = {'label_names': list(label_names)} if label_names is not None else None
        timm.models.save_for_hf(model, tmp, model_config=model_config, safe_serialization=True)
        _fix_mode(tmp / WEIGHTS_NAME)  # safetensors writes 0600; the project means the usual umask
        config = read_json(tmp / CONFIG_NAME)
        config['architecture'] = architecture[len(U1_PREFIX):]
        settings = config['pretrained_cfg'].get(U1_KEY) or {}
        allowed = _pretrained_cfg_fields()
        config['pretrained_cfg'] = {k: v for k, v in config['pretrained_cfg'].items() if k in allowed}
        config[U1_KEY] = U1Config.from_dict(settings).to_dict()
        config[RECORD_KEY] = {
            'format_version': FORMAT_VERSION,
            'weights_sha256': file_sha256(tmp / WEIGHTS_NAME),
            'weights_size': (tmp / WEIGHTS_NAME).stat().st_size,
            'base_model': base_model,
            'card': card,
        }
        write_json(tmp / CONFIG_NAME, config)
        names = [WEIGHTS_NAME]
        if model_card:
            write_text(tmp / CARD_NAME, render_card(config, repo_id or f'ORG/{save_directory.resolve().name}'))
            names.append(CARD_NAME)
        names.append(CONFIG_NAME)
        _move_in(tmp, save_directory, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return save_directory


def _fix_mode(path: Path) -> None:
    from ..files import _UMASK

    os.chmod(path, 0o666 & ~_UMASK)


def _move_in(tmp: Path, folder: Path, names: Sequence[str]) -> None:
    """Replace ``folder``'s ``names`` with ``tmp``'s; on an error put the previous files back."""
    backup = tmp / '.previous'
    backup.mkdir()
    moved: List[str] = []
    try:
        for name in names:
            if (folder / name).exists():
                try:
                    os.link(folder / name, backup / name)
                except OSError:  # no hard links on this file system
                    shutil.copy2(folder / name, backup / name)
            os.replace(tmp / name, folder / name)
            moved.append(name)
    except BaseException:
        for name in reversed(moved):
            if (backup / name).exists():
                os.replace(backup / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)
        raise


def render_card(config: Mapping[str, Any], repo_id: str) -> str:
    """The model card of a saved folder, rendered from its ``config.json`` alone."""
    record = config.get(RECORD_KEY) or {}
    card = record.get('card') or {}
    cfg = dict(config.get('pretrained_cfg') or {}, architecture=_twin_name(config))
    cfg['num_classes'] = config.get('num_classes', cfg.get('num_classes'))
    if config.get('label_names'):
        cfg['label_names'] = config['label_names']
    cfg['u1'] = _settings(config, Path('.'))
    return render_model_card(
        cfg, num_features=config.get('num_features'), repo_id=repo_id, metrics=card.get('metrics'),
        dataset=card.get('dataset'), training=card.get('training'), plots=card.get('plots') or (),
        license=card.get('license'), eval_split=card.get('eval_split'), base_model=record.get('base_model'))


# ---------------------------------------------------------------------------------------------
# Load

def read_config(folder: PathLike) -> Dict[str, Any]:
    """The ``config.json`` of a saved model folder, checked to be a timm config whose fields fit together."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} does not exist; a saved model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.')
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get('architecture'), str) or not config['architecture']:
        raise ValueError(f'{path} names no architecture; it is not a timm model config.')
    _check_config(config, path)
    return config


def _check_config(config: Dict[str, Any], path: Path) -> None:
    def bad(what: str) -> ValueError:
        return ValueError(f'{path}: {what}. The file is damaged or was edited by hand; save the model again.')

    for key in ('pretrained_cfg', 'model_args', RECORD_KEY):
        if key in config and not isinstance(config[key], dict):
            raise bad(f'"{key}" must be a mapping, got {type(config[key]).__name__}')
    num_classes = config.get('num_classes')
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0):
        raise bad(f'"num_classes" must be an integer >= 0, got {num_classes!r}')
    labels = config.get('label_names')
    if labels is not None:
        if not isinstance(labels, list) or not all(isinstance(n, str) for n in labels):
            raise bad('"label_names" must be a list of strings')
        if num_classes is not None and len(labels) != num_classes:
            raise bad(f'{len(labels)} label names for num_classes={num_classes}')
    _settings(config, path)


def _twin_name(config: Mapping[str, Any]) -> str:
    arch = config['architecture']
    return arch if arch.startswith(U1_PREFIX) else U1_PREFIX + arch


def _is_u1_config(config: Mapping[str, Any]) -> bool:
    """A folder saved by timm_u1: the ``u1`` key (format 2), or a ``u1_`` architecture (0.1.0)."""
    return U1_KEY in config or config['architecture'].startswith(U1_PREFIX)


def _settings(config: Mapping[str, Any], path: Path) -> Dict[str, Any]:
    """The twin's U(1) settings in a config (top-level ``u1``, or 0.1.0's ``pretrained_cfg["u1"]``), checked."""
    raw = config[U1_KEY] if U1_KEY in config else (config.get('pretrained_cfg') or {}).get(U1_KEY)
    if raw is None:
        return U1Config().to_dict()
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: "u1" must be a mapping of U(1) settings, got {type(raw).__name__} {raw!r}.')
    try:
        return U1Config.from_dict(raw).to_dict()
    except (TypeError, ValueError) as e:
        raise ValueError(f'{path}: bad U(1) settings {raw!r}: {e}') from e


def _weights_header(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Tensor name -> shape, from a safetensors header (no tensor data is read)."""
    from safetensors import safe_open

    problem = _check_safetensors(path)
    if problem:
        raise IntegrityError(path.parent, {path.name: problem})
    try:
        with safe_open(str(path), framework='pt') as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a malformed header
        raise IntegrityError(path.parent, {path.name: f'not a readable safetensors file ({e})'}) from e


def _classifier_keys(model: nn.Module) -> List[str]:
    names = model.pretrained_cfg.get('classifier') or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return [f'{n}.{p}' for n in names for p in ('weight', 'bias')]


def _check_fit(
        model: nn.Module, shapes: Dict[str, Tuple[int, ...]], config: Mapping[str, Any], where: str, skip: Sequence[str],
) -> None:
    """Refuse weights that do not fit the config's model: nothing is re-initialised in silence."""
    num_classes = config.get('num_classes')
    for key in _classifier_keys(model):
        if key.endswith('.weight') and key in shapes and num_classes is not None and shapes[key][0] != num_classes:
            raise ValueError(
                f'{where}: config.json says num_classes={num_classes} but the weights\' classifier ({key}) has '
                f'{shapes[key][0]} outputs. Fix num_classes in config.json (to {shapes[key][0]}), or pass '
                f'num_classes=N to load the backbone with a new N-class head.')
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k not in skip}
    found = {k: v for k, v in shapes.items() if k not in skip}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or wrong:
        def some(keys):
            return ', '.join(keys[:4]) + (f' (+{len(keys) - 4} more)' if len(keys) > 4 else '')
        parts = []
        if missing:
            parts.append(f'{len(missing)} tensors missing ({some(missing)})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected ({some(unexpected)})')
        if wrong:
            parts.append('shapes differ: ' + '; '.join(
                f'{k} {found[k]} in the file, {expected[k]} in the model' for k in wrong[:3]))
        raise ValueError(
            f"{where}: {WEIGHTS_NAME} does not fit architecture '{config['architecture']}' of config.json: "
            f"{', '.join(parts)}. The config names another architecture than the weights were saved from.")


def _load_folder(
        folder: Path,
        twin: bool,
        pretrained: bool = True,
        hub_ref: Optional[HubRef] = None,
        allow_pickle: bool = False,
        **kwargs,
) -> nn.Module:
    """The model a saved folder describes, as its twin or as plain timm builds it, weights checked and loaded."""
    from timm.models._hub import load_model_config_from_path

    config = read_config(folder)
    where = str(hub_ref) if hub_ref else str(folder)
    pretrained_cfg, _, model_args = load_model_config_from_path(folder)
    arch = config['architecture']
    base = arch[len(U1_PREFIX):] if arch.startswith(U1_PREFIX) else arch
    pretrained_cfg = {k: v for k, v in pretrained_cfg.items() if k in _pretrained_cfg_fields()}
    pretrained_cfg['architecture'] = base
    if hub_ref:
        pretrained_cfg.update(hf_hub_id=hub_ref.repo_id, source='hf-hub', file=None)
    if twin:
        pretrained_cfg[U1_KEY] = _settings(config, folder / CONFIG_NAME)
    name = U1_PREFIX + base if twin else base
    if not timm.is_model(name):
        raise ValueError(
            f"{where}: config.json names architecture '{arch}', which this timm ({timm.__version__}) does not know.")
    model = timm.create_model(name, pretrained=False, pretrained_cfg=pretrained_cfg, **{**model_args, **kwargs})
    record = config.get(RECORD_KEY) or {}
    base_model = hub_ref.repo_id if hub_ref else record.get('base_model')
    if base_model:
        model.pretrained_cfg['base_model'] = base_model
    if not pretrained:
        return model

    weights = folder / WEIGHTS_NAME
    new_head = 'num_classes' in kwargs and kwargs['num_classes'] != config.get('num_classes', kwargs['num_classes'])
    skip = _classifier_keys(model) if new_head else []
    if weights.is_file():
        shapes = _weights_header(weights)
        _check_fit(model, shapes, config, where, skip)
        if record.get('weights_sha256') and not hub_ref:  # the Hub listing already vouched for hub files
            size, digest = weights.stat().st_size, file_sha256(weights)
            if digest != record['weights_sha256'] or size != record.get('weights_size', size):
                raise IntegrityError(folder, {WEIGHTS_NAME: (
                    f'SHA-256 {digest[:12]}... ({size} bytes) differs from the {record["weights_sha256"][:12]}... '
                    f'recorded in config.json (corrupt, or a save was interrupted)')})
        from safetensors.torch import load_file
        state_dict = load_file(str(weights))
    else:
        state_dict = _pickle_state_dict(folder, where, allow_pickle)
        _check_fit(model, {k: tuple(v.shape) for k, v in state_dict.items()}, config, where, skip)
    for key in skip:
        state_dict.pop(key, None)
    model.load_state_dict(state_dict, strict=not skip)
    return model


def _pickle_state_dict(folder: Path, where: str, allow_pickle: bool) -> Dict[str, torch.Tensor]:
    pickles = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
    if not pickles:
        raise FileNotFoundError(f'{folder} has no weights ({WEIGHTS_NAME} or one of {", ".join(PICKLE_WEIGHTS)}).')
    if not allow_pickle:
        raise UnsafeCheckpointError(
            f'{where} has pickle weights only ({pickles[0]}), no {WEIGHTS_NAME}. Unpickling can run '
            f'code; pass allow_pickle=True if you trust the source (it is then loaded with '
            f'torch.load(weights_only=True)), or convert it to safetensors.')
    state_dict = torch.load(folder / pickles[0], map_location='cpu', weights_only=True)
    return state_dict.get('state_dict', state_dict)


def _fetch(
        source: Union[HubRef, Path], required: Sequence[str], cache_dir=None, token=None, endpoint=None,
        local_files_only: bool = False, patterns: Optional[Sequence[str]] = None,
) -> Path:
    if isinstance(source, HubRef):
        return download_folder(
            source.repo_id, revision=source.revision, required=required, cache_dir=cache_dir, token=token,
            endpoint=endpoint, local_files_only=local_files_only, allow_patterns=patterns)
    if not source.is_dir():
        raise FileNotFoundError(f'{source} is not a folder.')
    return verify_folder(source, required=required)


def from_pretrained(
        name_or_path: PathLike,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
        as_u1: bool = False,
        allow_pickle: bool = False,
        token: Optional[str] = None,
        endpoint: Optional[str] = None,
        local_files_only: bool = False,
        **kwargs,
) -> nn.Module:
    """Load a u1 model, with its weights, from a local folder or a Hub repo (``ORG/NAME[@REV]``, ``hf-hub:...``).

    Hub repos are fetched with :func:`download_folder` (pinned to ``revision`` when given, kept in
    the Hugging Face cache, read from it offline with ``HF_HUB_OFFLINE=1``, each file checked
    against the Hub's hashes); local folders are checked by :func:`verify_folder` and against the
    weights' SHA-256 that ``config.json`` records. The weights must fit the config (number of
    classes, architecture): nothing is re-initialised unless ``num_classes`` asks for a new head.
    The folder must be saved by timm_u1; ``as_u1=True`` loads a plain timm checkpoint (e.g. one
    saved by ``timm.models.save_for_hf``) into its u1 twin. Weights come from ``model.safetensors``;
    a folder with pickle weights only is refused unless ``allow_pickle=True``, and then read with
    ``torch.load(..., weights_only=True)``. ``kwargs`` go to ``timm.create_model``.
    """
    source = model_source(name_or_path, revision)
    if source is None:
        raise ValueError(f"'{name_or_path}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
    folder = _fetch(source, (CONFIG_NAME,), cache_dir, token, endpoint, local_files_only)
    config = read_config(folder)
    if not _is_u1_config(config) and not as_u1:
        raise ValueError(
            f"{name_or_path}: config.json names architecture '{config['architecture']}', not a u1_ "
            f'architecture. Load it with timm.create_model, or pass as_u1=True to load these '
            f'weights into its u1 twin.')
    return _load_folder(folder, twin=True, hub_ref=source if isinstance(source, HubRef) else None,
                        allow_pickle=allow_pickle, **kwargs)


def create_model_from_source(source: Union[HubRef, Path], pretrained: bool = True, **kwargs) -> nn.Module:
    """The model a Hub repo or a local folder holds: the u1 twin when timm_u1 saved it, the plain timm
    model otherwise. Downloads and checks as :func:`from_pretrained` does."""
    folder = _fetch(source, (CONFIG_NAME,))
    config = read_config(folder)
    return _load_folder(
        folder, twin=_is_u1_config(config), pretrained=pretrained,
        hub_ref=source if isinstance(source, HubRef) else None, **kwargs)


def check_model_folder(folder: PathLike) -> Dict[str, Any]:
    """Everything a load would check, without building the model: config fields, the weights file
    whole, and its recorded SHA-256. Returns the config. Used before a push."""
    folder = verify_folder(folder, required=(CONFIG_NAME, WEIGHTS_NAME))
    config = read_config(folder)
    record = config.get(RECORD_KEY) or {}
    if record.get('weights_sha256') and file_sha256(folder / WEIGHTS_NAME) != record['weights_sha256']:
        raise IntegrityError(folder, {WEIGHTS_NAME: 'SHA-256 differs from the one recorded in config.json (corrupt)'})
    _weights_header(folder / WEIGHTS_NAME)
    return config


