""" Pieces of a training run that ``scripts/train.py``, ``scripts/compare.py`` and the tests share.

* :func:`save_checkpoint` / :func:`load_checkpoint`: one atomic ``checkpoint.pt`` per run with the
  model, optimizer, scheduler, RNG states, epoch and step, plus the run's identity (model and
  dataset) so that a resume into another model or dataset fails with a clear error.
* :class:`MetricsLog`: the JSON-lines metrics log, cut back to the checkpoint on resume.
* :func:`evaluate`: top-1, top-5, the loss and its CE and hue parts, and the mean hue error.
"""
import hashlib
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ._files import atomic_path, write_text
from .hue import hue_angle, label_hue
from .loss import U1Loss
from .u1 import U1Output

__all__ = [
    'CHECKPOINT_NAME', 'METRICS_NAME', 'ResumeMismatchError', 'dataset_fingerprint', 'check_labels',
    'rng_state', 'set_rng_state', 'save_checkpoint', 'load_checkpoint', 'MetricsLog', 'evaluate',
]

CHECKPOINT_NAME = 'checkpoint.pt'
METRICS_NAME = 'metrics.jsonl'

PathLike = Union[str, os.PathLike]


class ResumeMismatchError(ValueError):
    """A checkpoint belongs to another model or dataset than the run resuming from it."""


def dataset_fingerprint(labels: Sequence[int], class_names: Optional[Sequence[str]] = None) -> str:
    """A short hash of a labelled dataset: its size, class names and every label in order.

    Cheap (no image is decoded) and enough to tell two datasets, or two splits, apart.
    """
    h = hashlib.sha256()
    h.update(json.dumps({'n': len(labels), 'classes': list(class_names or [])}).encode())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def check_labels(labels: Sequence[int], class_names: Optional[Sequence[str]], what: str = 'dataset') -> int:
    """The number of classes of a labelled dataset, or a clear error if the hue loss cannot use it."""
    if labels is not None and len(labels) == 0:
        raise ValueError(f'The {what} is empty.')
    # an image folder without class sub-folders comes with a "label" column of None
    if labels is None or all(label is None for label in labels):
        raise ValueError(
            f'The {what} has no "label" column; training needs labelled images (an image folder with '
            f'one sub-folder per class, or a dataset with a ClassLabel "label" column).')
    unlabelled = sum(label is None or label < 0 for label in labels)
    if unlabelled:
        raise ValueError(f'The {what} has {unlabelled} unlabelled rows (label None or < 0); drop them or label them.')
    labels = np.asarray(labels)
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise ValueError(f'The {what} has label {int(labels.max())} but only {num_classes} class names.')
    if num_classes < 3:
        raise ValueError(
            f'The {what} has {num_classes} classes; the U(1) hue of C classes needs C >= 3 (class c sits '
            f'at angle 2 pi c / C, and two classes only span a line). Use a dataset with >= 3 classes.')
    return num_classes


def rng_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators, as tensors and plain values.

    NumPy's state is stored as a tensor so that the checkpoint loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(
        path: PathLike,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epoch: int,
        step: int,
        identity: Dict[str, Any],
        args: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write the full training state to ``path`` atomically: a failed write keeps the previous file.

    Args:
        epoch: number of finished epochs (the resumed run starts at this epoch index).
        step: number of optimizer updates so far.
        identity: what the checkpoint may be resumed into (see :func:`load_checkpoint`).
        args: the run's settings, kept for the record.
    """
    state = {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict() if scheduler is not None else None,
        'rng': rng_state(),
        'epoch': epoch,
        'step': step,
        'identity': dict(identity),
        'args': json.loads(json.dumps(args or {}, default=str)),  # plain values only
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(
        path: PathLike,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Any = None,
        identity: Optional[Dict[str, Any]] = None,
        restore_rng: bool = True,
) -> Dict[str, Any]:
    """Load a :func:`save_checkpoint` file into the given objects; returns the checkpoint dict.

    Raises :class:`ResumeMismatchError` before touching anything if ``identity`` differs from the
    identity stored in the checkpoint (another model, head size or dataset).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}; start without --resume, or point --resume at a checkpoint.pt.')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} is not a readable training checkpoint ({type(e).__name__}: {e}).') from e
    if identity is not None:
        stored = state.get('identity', {})
        diffs = [
            f'{k}: checkpoint {stored.get(k)!r}, this run {identity.get(k)!r}'
            for k in sorted(set(stored) | set(identity)) if stored.get(k) != identity.get(k)]
        if diffs:
            raise ResumeMismatchError(
                f'Cannot resume from {path}: it was written by another run ({"; ".join(diffs)}). '
                f'Resume with the same --model and --data, or train into a new --output folder.')
    model.load_state_dict(state['model'])
    if optimizer is not None:
        optimizer.load_state_dict(state['optimizer'])
    if scheduler is not None and state.get('scheduler') is not None:
        scheduler.load_state_dict(state['scheduler'])
    if restore_rng:
        set_rng_state(state['rng'])
    return state


class MetricsLog:
    """Metrics as JSON lines, one record per evaluation, each flushed to disk when written."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding='utf-8').splitlines()
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # a crash during append can tear the last line only; anything else is corruption
                if n != len(lines):
                    raise ValueError(f'{self.path}:{n} is not valid JSON; the metrics log is corrupt.')
        return records

    def append(self, record: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def truncate(self, num_epochs: int) -> None:
        """Keep only the records of the first ``num_epochs`` epochs (those a checkpoint covers)."""
        kept = [r for r in self.read() if r.get('epoch', 0) < num_epochs]
        write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))


def _angle_error(angle: torch.Tensor, target_angle: torch.Tensor) -> torch.Tensor:
    """|angle - target| wrapped to [0, pi]."""
    d = torch.remainder(angle - target_angle + math.pi, 2 * math.pi) - math.pi
    return d.abs()


@torch.no_grad()
def evaluate(
        forward: Callable[[torch.Tensor], Union[torch.Tensor, U1Output]],
        loader: Iterable,
        loss_fn: U1Loss,
        gather: Optional[Callable[[Any], Any]] = None,
        progress: bool = False,
) -> Dict[str, float]:
    """Top-1 and top-5 accuracy (%), the loss and its parts, and the mean hue error (degrees).

    Args:
        forward: the model call, returning logits or a :class:`~timm_u1.u1.U1Output` (the spatial
            loss needs the latter).
        loader: batches of (images, class indices); the model is expected in eval mode.
        loss_fn: the training loss, evaluated on hard labels.
        gather: collects per-sample tensors from every process (``accelerator.gather_for_metrics``);
            None on one process.

    The hue error of an image is the angle between the hue of its logits and its label hue
    2 pi c / C; images whose logits have zero chroma (no hue) are left out of its mean.
    """
    from tqdm.auto import tqdm

    columns: Dict[str, List[torch.Tensor]] = {k: [] for k in ('top1', 'top5', 'loss', 'ce', 'hue', 'hue_error')}
    for images, target in tqdm(loader, desc='eval', leave=False, disable=not progress):
        out = forward(images)
        logits = (out.logits if isinstance(out, U1Output) else out).float()
        parts = loss_fn.parts(out, target)
        num_classes = logits.shape[1]
        top = logits.topk(min(5, num_classes), dim=1).indices
        hit = top == target[:, None]
        err = _angle_error(hue_angle(logits, dim=1), label_hue(num_classes).to(logits.device)[target])
        # the loss comes as a batch mean: repeating it per sample makes the gathered mean the
        # sample-weighted mean, with gather_for_metrics dropping the padding of the last batch
        per_batch = {k: getattr(parts, k).detach().float().expand(len(target)) for k in ('ce', 'hue')}
        per_batch['loss'] = parts.total.detach().float().expand(len(target))
        row = {'top1': hit[:, 0].float(), 'top5': hit.any(dim=1).float(), 'hue_error': err, **per_batch}
        if gather is not None:
            row = gather(row)
        for k, v in row.items():
            columns[k].append(v.cpu())
    if not columns['top1']:
        raise ValueError('The evaluation loader yielded no batches; the evaluation split is empty.')
    cat = {k: torch.cat(v) for k, v in columns.items()}
    return {
        'top1': 100.0 * cat['top1'].mean().item(),
        'top5': 100.0 * cat['top5'].mean().item(),
        'loss': cat['loss'].mean().item(),
        'ce': cat['ce'].mean().item(),
        'hue': cat['hue'].mean().item(),
        'hue_error_deg': math.degrees(cat['hue_error'].nanmean().item()),
        'num_samples': len(cat['top1']),
    }
