"""Evaluation of a classifier on a loader: top-1 / top-5, the loss and its parts, the mean hue error."""
import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import torch

from ..core.hue import hue_angle, label_hue
from ..core.loss import U1Loss
from ..core.u1 import U1Output

__all__ = ['evaluate']


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
        per_sample: bool = False,
) -> Dict[str, Any]:
    """Top-1 and top-5 accuracy (%), the loss and its parts, and the mean hue error (degrees).

    Args:
        forward: the model call, returning logits or a :class:`~timm_u1.core.u1.U1Output` (the spatial
            loss needs the latter).
        loader: batches of (images, class indices); the model is expected in eval mode.
        loss_fn: the training loss, evaluated on hard labels.
        gather: collects per-sample tensors from every process (``accelerator.gather_for_metrics``);
            None on one process.
        per_sample: also return ``'correct'``, a bool list: whether each image's top-1 is right, in
            the order the (gathered) loader yields the images. That is the dataset's order for an
            unshuffled loader, including Accelerate's, which deals whole batches to the processes
            in turn and gathers them back in turn (the paired bootstrap of :mod:`timm_u1.studies.scratch`).

    The hue error of an image is the angle between the hue of its logits and its label hue
    2 pi c / C; images whose logits have zero chroma (no hue) are left out of its mean.
    """
    from timm.utils import accuracy
    from tqdm.auto import tqdm

    columns: Dict[str, List[torch.Tensor]] = {k: [] for k in ('top1', 'top5', 'loss', 'ce', 'hue', 'hue_error')}
    correct: List[torch.Tensor] = []
    for images, target in tqdm(loader, desc='eval', leave=False, disable=not progress):
        out = forward(images)
        logits = (out.logits if isinstance(out, U1Output) else out).float()
        parts = loss_fn.parts(out, target)
        num_classes = logits.shape[1]
        err = _angle_error(hue_angle(logits, dim=1), label_hue(num_classes).to(logits.device)[target])
        # the loss comes as a batch mean: repeating it per sample makes the gathered mean the
        # sample-weighted mean, with gather_for_metrics dropping the padding of the last batch
        per_batch = {k: getattr(parts, k).detach().float().expand(len(target)) for k in ('ce', 'hue')}
        per_batch['loss'] = parts.total.detach().float().expand(len(target))
        row = {'logits': logits, 'target': target, 'hue_error': err, **per_batch}
        if gather is not None:
            row = gather(row)
        # timm's top-k on the gathered batch (padding already dropped), as sums of hits
        top1, top5 = accuracy(row['logits'], row['target'], topk=(1, min(5, num_classes)))
        n = len(row['target'])
        if per_sample:  # the top-1 of timm's accuracy (topk), so the hits add up to its count
            correct.append((row['logits'].topk(1, 1, True, True).indices[:, 0] == row['target']).cpu())
        columns['top1'].append(torch.round(top1 * n / 100.0).reshape(1).cpu())  # exact hit counts
        columns['top5'].append(torch.round(top5 * n / 100.0).reshape(1).cpu())
        for k in ('loss', 'ce', 'hue', 'hue_error'):
            columns[k].append(row[k].cpu())
    if not columns['top1']:
        raise ValueError('The evaluation loader yielded no batches; the evaluation split is empty.')
    cat = {k: torch.cat(v) for k, v in columns.items()}
    num_samples = len(cat['loss'])
    result: Dict[str, Any] = {
        'top1': 100.0 * cat['top1'].sum().item() / num_samples,
        'top5': 100.0 * cat['top5'].sum().item() / num_samples,
        'loss': cat['loss'].mean().item(),
        'ce': cat['ce'].mean().item(),
        'hue': cat['hue'].mean().item(),
        'hue_error_deg': math.degrees(cat['hue_error'].nanmean().item()),
        'num_samples': num_samples,
    }
    if per_sample:
        result['correct'] = torch.cat(correct).tolist()
    return result
