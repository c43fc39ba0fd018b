"""The CE vs CE + U(1) studies: one protocol (:mod:`.protocol`) with two back-ends, from scratch (:mod:`.scratch`)
and on a frozen backbone's cached features (:mod:`.frozen`), with paired statistics (:mod:`.paired`)."""
from .paired import MARGIN, summarize_family, summarize_task
from .protocol import Backend, Design, run_protocol
from .scratch import ScratchBackend, run_study
from .frozen import FinetuneConfig, FrozenBackend, run_finetune_study

__all__ = [
    'MARGIN', 'summarize_family', 'summarize_task', 'Backend', 'Design', 'run_protocol', 'ScratchBackend', 'run_study',
    'FinetuneConfig', 'FrozenBackend', 'run_finetune_study',
]
