"""Training and fine-tuning timm / ``u1_`` models with CE or CE + U(1), with Accelerate."""
from .trainer import (
    CHECKPOINT_NAME, METRICS_NAME, RESUMABLE_SETTINGS, MetricsLog, TrainConfig, evaluate, train,
)

__all__ = [
    'CHECKPOINT_NAME', 'METRICS_NAME', 'RESUMABLE_SETTINGS', 'MetricsLog', 'TrainConfig', 'evaluate', 'train',
]
