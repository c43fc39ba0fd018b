""" The one Hub layer: model specs and repo ids, verified downloads, atomic saves and pushes.

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

Every spec (``hf-hub:ORG/NAME@REV``, ``ORG/NAME``, ``local-dir:PATH``, a folder) is parsed here
(:func:`parse_hub_ref`, :func:`model_source`), and every Hub download of a model or a memory goes
through :func:`download_folder`: ``snapshot_download`` with a bounded timeout
(:func:`hub_timeout`), then :func:`verify_folder`, which checks each file against the hashes the Hub
listed for that commit (huggingface_hub's ``trees/<commit>.json`` cache). Uploads go through
``HfApi.create_commit`` (one commit, :func:`push_folder_to_hub`). What is pushed (models, runs,
memories) is decided in :mod:`timm_u1.publish`.
"""
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

import timm

from ._files import file_sha256, read_json, write_json, write_text
from .cards import render_model_card
from .u1 import U1_PREFIX, U1Config

__all__ = [
    'save_pretrained', 'from_pretrained', 'read_config', 'UnsafeCheckpointError', 'WEIGHTS_NAME',
    'CONFIG_NAME', 'PICKLE_WEIGHTS', 'IntegrityError', 'MissingTokenError', 'PushError', 'HubUnavailableError',
    'resolve_token', 'push_folder_to_hub', 'verify_folder', 'download_folder', 'check_model_folder',
    'HubRef', 'parse_hub_ref', 'model_source', 'create_model_from_source', 'hub_timeout', 'HUB_TIMEOUT_ENV',
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
HUB_TIMEOUT_ENV = 'TIMM_U1_HUB_TIMEOUT'
DEFAULT_HUB_TIMEOUT = 30.0  # seconds without an answer from the Hub before a call fails
_PRETRAINED_CFG_FIELDS = None  # filled lazily: the keys timm's PretrainedCfg accepts


class UnsafeCheckpointError(ValueError):
    """A checkpoint that needs unpickling, refused because the caller did not opt in."""


# ---------------------------------------------------------------------------------------------
# Specs: where a model or memory comes from

@dataclass(frozen=True)
class HubRef:
    """A Hub repo (``ORG/NAME``) at an optional revision."""
    repo_id: str
    revision: Optional[str] = None

    def __str__(self) -> str:
        return self.repo_id + (f'@{self.revision}' if self.revision else '')


_HUB_PREFIXES = ('hf-hub:', 'hf_hub:')


def parse_hub_ref(spec: str, revision: Optional[str] = None) -> Optional[HubRef]:
    """The Hub repo a spec names (``hf-hub:ORG/NAME[@REV]`` or ``ORG/NAME[@REV]``), else None.

    An existing local path is never a repo id. ``hf-hub:`` specs that are not valid repo ids raise
    (checked with ``huggingface_hub.utils.validate_repo_id``); bare strings that are not just say None.
    """
    from huggingface_hub.utils import validate_repo_id
    from huggingface_hub.errors import HFValidationError

    spec = str(spec).strip()
    explicit = spec.lower().startswith(_HUB_PREFIXES)
    if explicit:
        spec = spec[len('hf-hub:'):]
    elif Path(spec).expanduser().exists() or spec.startswith(('local-dir:', '/', '.', '~')):
        return None
    repo_id, _, rev = spec.partition('@')
    try:
        if repo_id.count('/') != 1:
            raise HFValidationError(f'{repo_id!r} is not of the form ORG/NAME')
        validate_repo_id(repo_id)
    except HFValidationError as e:
        if explicit:
            raise ValueError(f'hf-hub:{spec} does not name a Hub repo: {e}. Use hf-hub:ORG/NAME[@REVISION].') from e
        return None
    if rev and revision and rev != revision:
        raise ValueError(f'{spec} pins revision {rev!r}, and revision={revision!r} was also given; give one.')
    return HubRef(repo_id, rev or revision or None)


def model_source(spec: PathLike, revision: Optional[str] = None) -> Union[HubRef, Path, None]:
    """``HubRef`` for a Hub spec, the folder of a ``local-dir:`` spec or existing folder, None for a
    timm registry name."""
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else spec
    if not isinstance(text, str) or not text:
        raise ValueError(f'a model spec must be a non-empty string or path, got {spec!r}')
    if text.lower().startswith('local-dir:'):
        return Path(text.partition(':')[2]).expanduser()
    if Path(text).expanduser().is_dir():
        return Path(text).expanduser()
    ref = parse_hub_ref(text, revision)
    if ref is not None:
        return ref
    if isinstance(spec, os.PathLike) or '/' in text or text.startswith(('.', '~')):
        raise ValueError(f"'{text}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
    return None


# ---------------------------------------------------------------------------------------------
# Timeouts: no Hub call waits forever

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
    from ._files import _UMASK

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
