"""Checkpoints of a training run: Accelerate's ``save_state`` folders, written atomically, with the run's
identity and progress beside them, kept N at a time.

``OUTPUT/checkpoints/step_00000042/`` holds what ``accelerator.save_state`` writes (model and EMA as
safetensors, optimizer, every process's RNG streams, the gradient scaler) and ``trainer_state.json``:
the run identity (checked before anything is restored) and the :class:`Progress` counters.
"""
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional

import torch

from ..errors import ResumeMismatchError
from ..files import write_json
from ..runs import check_same_run
from .metrics import METRICS_NAME, MetricsLog

__all__ = [
    'CHECKPOINTS_NAME', 'STATE_NAME', 'LEGACY_CHECKPOINT_NAME', 'Progress', 'checkpoint_folders', 'latest_checkpoint',
    'has_checkpoint', 'check_output', 'save_checkpoint', 'load_checkpoint',
]

_logger = logging.getLogger(__name__)

CHECKPOINTS_NAME = 'checkpoints'
STATE_NAME = 'trainer_state.json'
LEGACY_CHECKPOINT_NAME = 'checkpoint.pt'  # timm_u1 0.1's one-file checkpoint, refused
RUN_RESULTS = (METRICS_NAME, 'summary.json', 'export')
_FOLDER = re.compile(r'^step_(\d{8,})$')
_PARTIAL_PREFIX = '.partial_'
_FORMAT = 1


@dataclass
class Progress:
    """How far a run got: what a checkpoint adds to Accelerate's state (kept in ``trainer_state.json``)."""
    epoch: int = 0  # the epoch in progress; at an epoch boundary, the number of finished epochs
    batch: int = 0  # batches of that epoch already trained (0 at an epoch boundary)
    step: int = 0  # optimizer updates so far
    best_top1: Optional[float] = None  # the best eval top-1 so far, and the epoch that reached it
    best_epoch: Optional[int] = None
    # of the epoch in progress, over every process: loss, ce, hue sums and images; lr sum, updates, seconds
    sums: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    lr_sum: float = 0.0
    updates: int = 0
    seconds: float = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.batch, self.sums, self.lr_sum, self.updates, self.seconds = epoch, 0, [0.0] * 4, 0.0, 0, 0.0

    @classmethod
    def from_dict(cls, state: Mapping[str, Any], where: Path) -> 'Progress':
        """Every field checked: a one-line error names the first bad one."""
        def bad(name: str, wanted: str) -> ValueError:
            return ValueError(
                f'{where}: field {name!r} must be {wanted}, got {state.get(name)!r}; the checkpoint is damaged: '
                f'delete {where.parent.name} to resume from the one before it, or train into a new --output.')

        def count(name: str) -> int:
            value = state.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(name, 'an integer >= 0')
            return value

        def number(name: str, optional: bool = False) -> Optional[float]:
            value = state.get(name)
            if optional and value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad(name, 'a number' + (' or null' if optional else ''))
            return float(value)

        sums = state.get('sums')
        if not isinstance(sums, list) or len(sums) != 4 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums):
            raise bad('sums', 'a list of 4 numbers')
        best_epoch = state.get('best_epoch')
        if best_epoch is not None:
            count('best_epoch')
        return cls(epoch=count('epoch'), batch=count('batch'), step=count('step'),
                   best_top1=number('best_top1', optional=True), best_epoch=best_epoch, sums=[float(v) for v in sums],
                   lr_sum=number('lr_sum'), updates=count('updates'), seconds=number('seconds'))


def checkpoint_folders(out: Path) -> List[Path]:
    """The complete checkpoints of a run folder, oldest first (a partial one is never listed)."""
    root = Path(out) / CHECKPOINTS_NAME
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _FOLDER.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: Path) -> Optional[Path]:
    folders = checkpoint_folders(out)
    return folders[-1] if folders else None


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint that ``--resume`` continues from."""
    return latest_checkpoint(out) is not None


def check_output(out: Path, resume: bool) -> None:
    """Refuse to write over another run: a checkpoint without --resume, 0.1's checkpoint.pt, or the results
    of a run that can no longer be resumed (its checkpoint is gone)."""
    legacy = out / LEGACY_CHECKPOINT_NAME
    if legacy.exists():
        raise ResumeMismatchError(
            f'{legacy} was written by timm_u1 0.1, whose checkpoints do not record what the images hold, so it '
            f'cannot be resumed safely; start the run again with a new --output (or delete {legacy.name}).')
    latest = latest_checkpoint(out)
    if latest is not None:
        if not resume:
            raise ResumeMismatchError(f'{latest} exists: pass --resume to continue that run, or choose a new --output.')
        return
    present = [name for name in RUN_RESULTS if (out / name).exists()
               and (name != METRICS_NAME or MetricsLog(out / name).read())]  # an empty log holds no result
    # a metrics log alone, under --resume, is a run stopped before its first checkpoint: it restarts
    if any(name != METRICS_NAME for name in present) or (present and not resume):
        raise ResumeMismatchError(
            f'{out} holds {", ".join(present)} of an earlier run but no {CHECKPOINTS_NAME}/, so that run cannot '
            f'be resumed, and training here would replace them. Choose a new --output, or delete them first.')


def save_checkpoint(accelerator: Any, out: Path, progress: Progress, identity: Mapping[str, Any], keep: int) -> Path:
    """Write ``OUTPUT/checkpoints/step_<step>``, then remove all but the newest ``keep``; every process calls it.

    ``accelerator.save_state`` writes into a partial folder that one rename completes, so a crash at any
    point leaves the previous checkpoints intact. (Accelerate's automatic_checkpoint_naming writes in
    place and its total_limit deletes the oldest checkpoint before the new one is written, which
    with keep 1 leaves no whole checkpoint after a crash mid-save.)
    """
    root = Path(out) / CHECKPOINTS_NAME
    final = root / f'step_{progress.step:08d}'
    partial = root / (_PARTIAL_PREFIX + final.name)  # the same path on every process
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(_PARTIAL_PREFIX + '*'):  # of a killed save; the run folder's lock is ours
            shutil.rmtree(stale)
        partial.mkdir()
    accelerator.wait_for_everyone()
    accelerator.save_state(output_dir=str(partial))  # the main process writes the weights, each its RNG
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(partial / STATE_NAME, dict(format=_FORMAT, identity=dict(identity), **asdict(progress)))
        _fsync_folder(partial)
        if final.exists():  # a run resumed before this step and stopped again after writing it
            shutil.rmtree(final)
        os.replace(partial, final)
        _fsync_folder(root, files=False)
        for old in checkpoint_folders(out)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, folder: Path, identity: Mapping[str, Any]) -> Progress:
    """Restore a :func:`save_checkpoint` folder into the prepared objects; returns its progress.

    The identity is compared before anything is restored: another model, dataset, image content or
    run-changing setting is refused, naming each difference with both values.
    """
    path = folder / STATE_NAME
    try:
        state = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as e:
        raise ValueError(f'{path} cannot be read ({type(e).__name__}: {e}); delete {folder.name} to resume from '
                         f'the checkpoint before it, or train into a new --output.') from e
    if not isinstance(state, dict) or state.get('format') != _FORMAT or not isinstance(state.get('identity'), dict):
        raise ValueError(f'{path}: fields "format" ({_FORMAT}) and "identity" (an object) are missing or wrong; '
                         f'delete {folder.name} to resume from the checkpoint before it, or train into a new --output.')
    check_same_run(state['identity'], identity, folder, 'train into a new --output folder')
    progress = Progress.from_dict(state, path)
    accelerator.load_state(str(folder))
    _check_rng_restored(folder, accelerator.process_index)
    return progress


def _check_rng_restored(folder: Path, process_index: int) -> None:
    """Accelerate logs and carries on when it cannot restore the RNG streams; a resumed run must not."""
    from accelerate.utils import load

    path = folder / f'random_states_{process_index}.pkl'
    try:
        saved = load(path)['torch_manual_seed']
    except Exception as e:  # any failure here is the one Accelerate swallowed
        raise ValueError(f'{path} cannot be read ({type(e).__name__}: {e}); the checkpoint is damaged: delete '
                         f'{folder.name} to resume from the one before it, or train into a new --output.') from e
    if not torch.equal(saved, torch.get_rng_state()):
        raise RuntimeError(f'The RNG streams of {path} were not restored; the resumed run would not continue exactly.')


def _fsync_folder(folder: Path, files: bool = True) -> None:
    """Flush a folder's files and entries to disk before the rename that publishes them."""
    if files:
        for p in folder.iterdir():
            if p.is_file():
                with open(p, 'rb') as f:
                    os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
