"""Training and fine-tuning timm / ``u1_`` models with CE or CE + U(1), with Accelerate (:mod:`.trainer`) or
timm's own train.py (:mod:`.timm_train`, imported on use: it needs ``timm.task``)."""
from .trainer import (
    CHECKPOINT_NAME, METRICS_NAME, RESUMABLE_SETTINGS, MetricsLog, TrainConfig, evaluate, train,
)

__all__ = [
    'CHECKPOINT_NAME', 'METRICS_NAME', 'RESUMABLE_SETTINGS', 'MetricsLog', 'TrainConfig', 'evaluate', 'train',
]
