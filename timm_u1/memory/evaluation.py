"""Top-1 accuracy of every classifier of a memory over labelled batches, in one backbone pass."""
from typing import Any, Dict, Iterable, Optional, Sequence

import torch
from torch import nn

__all__ = ['evaluate']


def evaluate(
        memory,
        model: nn.Module,
        loader: Iterable,
        methods: Optional[Sequence[str]] = None,
        progress: bool = True,
        per_class: bool = False,
) -> Dict[str, Any]:
    """Top-1 accuracy of every method (default: all the memory offers) over (images, labels) batches.

    Returns ``{method: accuracy, ..., 'num_images': n}``, and with ``per_class`` also
    ``'per_class': {method: [accuracy of each class, None for a class without images]}``.
    """
    from tqdm.auto import tqdm

    methods = tuple(methods or memory.methods)
    memory.check_backbone(model)
    correct = {m: torch.zeros(memory.num_classes, dtype=torch.long) for m in methods}
    seen = torch.zeros(memory.num_classes, dtype=torch.long)
    for images, labels in tqdm(loader, desc='memory eval', unit='batch', disable=not progress):
        labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
        memory._check_labels(labels, 'evaluate')
        features = memory._extract(model, images)
        for method in methods:
            hits = memory.predict_from_features(features, method) == labels
            correct[method] += torch.bincount(labels[hits], minlength=memory.num_classes)
        seen += torch.bincount(labels, minlength=memory.num_classes)
    total = int(seen.sum())
    if total == 0:
        raise ValueError('evaluate got no images.')
    results: Dict[str, Any] = {m: int(correct[m].sum()) / total for m in methods}
    results['num_images'] = total
    if per_class:
        results['per_class'] = {
            m: [int(c) / int(n) if n else None for c, n in zip(correct[m], seen)] for m in methods}
    return results
