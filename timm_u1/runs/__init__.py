"""What a run is: its identity (settings, weights), its locked output folder, its shards across processes,
and the one resumable, locked, shardable pass over a dataset."""
from .identity import backbone_fingerprint, check_same_run, settings_diff
from .folder import LOCK_NAME, RunFolder
from .stream import StreamPass, pass_identity

__all__ = [
    'backbone_fingerprint', 'check_same_run', 'settings_diff', 'LOCK_NAME', 'RunFolder', 'StreamPass', 'pass_identity',
]
