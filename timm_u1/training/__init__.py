"""Training and fine-tuning timm / ``u1_`` models with CE or CE + U(1), with Accelerate.

One concept per module: :mod:`.config` (the settings), :mod:`.inputs` (data and loaders), :mod:`.model`
(the twin, its EMA), :mod:`.launch` (the Accelerator and what it runs), :mod:`.checkpoint`,
:mod:`.metrics` (the metrics log and trackers), :mod:`.evaluate`, :mod:`.export`, :mod:`.loop` (the
loop itself) and :mod:`.plots`; timm's own train.py with ``U1Loss`` is :mod:`.timm_train` (imported on
use: it needs ``timm.task``).
"""
from .checkpoint import CHECKPOINTS_NAME, LEGACY_CHECKPOINT_NAME, has_checkpoint, latest_checkpoint
from .config import RESUMABLE_SETTINGS, TrainConfig
from .evaluate import evaluate
from .loop import train, train_step
from .metrics import METRICS_NAME, MetricsLog

__all__ = [
    'CHECKPOINTS_NAME', 'METRICS_NAME', 'RESUMABLE_SETTINGS', 'MetricsLog', 'TrainConfig', 'evaluate', 'train',
    'train_step', 'has_checkpoint', 'latest_checkpoint',
]


def __getattr__(name: str):
    if name == 'CHECKPOINT_NAME':  # timm_u1 0.1's one-file checkpoint, no longer written
        import warnings

        warnings.warn('timm_u1.training.CHECKPOINT_NAME names the checkpoint.pt of timm_u1 0.1, which is no longer '
                      'written; use has_checkpoint(output) / latest_checkpoint(output) (it goes in timm_u1 0.3).',
                      DeprecationWarning, stacklevel=2)
        return LEGACY_CHECKPOINT_NAME
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
