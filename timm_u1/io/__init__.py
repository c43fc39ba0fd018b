"""Where models come from and go to: model specs, the Hub layout (save, load, config, cards), the Hub
(time limits, verified downloads, one-commit pushes) and timm's training checkpoints."""
from .errors import HubUnavailableError, IntegrityError, MissingTokenError, PushError, UnsafeCheckpointError
from .specs import HubRef, model_source, parse_hub_ref
from .limits import HUB_TIMEOUT_ENV, hub_call, hub_timeout
from .verify import verify_folder
from .download import download_folder
from .push import push_folder_to_hub, resolve_token
from .config import CONFIG_NAME, WEIGHTS_NAME, read_config
from .save import save_pretrained
from .load import check_model_folder, from_pretrained
from .checkpoints import load_timm_checkpoint
from .factory import DEFAULT_MODEL, create_model_from_spec, default_pretrained

__all__ = [
    'HubRef', 'model_source', 'parse_hub_ref', 'HUB_TIMEOUT_ENV', 'HubUnavailableError', 'IntegrityError',
    'MissingTokenError', 'PushError', 'download_folder', 'hub_call', 'hub_timeout', 'push_folder_to_hub',
    'resolve_token', 'verify_folder', 'CONFIG_NAME', 'WEIGHTS_NAME', 'UnsafeCheckpointError', 'check_model_folder',
    'from_pretrained', 'read_config', 'save_pretrained', 'load_timm_checkpoint', 'DEFAULT_MODEL',
    'create_model_from_spec', 'default_pretrained',
]
