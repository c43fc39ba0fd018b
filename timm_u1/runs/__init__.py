"""What a run is: its identity (settings, weights), its locked output folder, and its shards across processes."""
from .identity import backbone_fingerprint, check_same_run, settings_diff
from .folder import LOCK_NAME, RunFolder

__all__ = [
    'backbone_fingerprint', 'check_same_run', 'settings_diff', 'LOCK_NAME', 'RunFolder',
]
