"""The CE vs CE + U(1) studies: from scratch, and on a frozen backbone's cached features, with paired statistics."""
from .paired import MARGIN, summarize_task
from .scratch import run_study
from .frozen import FinetuneConfig, run_finetune_study

__all__ = [
    'MARGIN', 'summarize_task', 'run_study', 'FinetuneConfig', 'run_finetune_study',
]
