"""Where models come from and go to: the model-spec grammar, saving and loading in the Hub layout, the Hub, cards."""
from .specs import HubRef, model_source, parse_hub_ref
from .hub import (
    HUB_TIMEOUT_ENV, HubUnavailableError, IntegrityError, MissingTokenError, PushError, download_folder,
    hub_timeout, push_folder_to_hub, resolve_token, verify_folder,
)
from .serialization import (
    CONFIG_NAME, WEIGHTS_NAME, UnsafeCheckpointError, check_model_folder, from_pretrained, read_config,
    save_pretrained,
)
from .factory import DEFAULT_MODEL, create_model_from_spec, default_pretrained

__all__ = [
    'HubRef', 'model_source', 'parse_hub_ref', 'HUB_TIMEOUT_ENV', 'HubUnavailableError', 'IntegrityError',
    'MissingTokenError', 'PushError', 'download_folder', 'hub_timeout', 'push_folder_to_hub', 'resolve_token',
    'verify_folder', 'CONFIG_NAME', 'WEIGHTS_NAME', 'UnsafeCheckpointError', 'check_model_folder',
    'from_pretrained', 'read_config', 'save_pretrained', 'DEFAULT_MODEL', 'create_model_from_spec',
    'default_pretrained',
]
