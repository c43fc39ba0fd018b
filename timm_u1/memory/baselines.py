""" Baselines that a training-free memory (claim c) must beat, and paired comparisons of methods.

The angle-prototype memory (docs/math.md, "Angle-prototype memory") keeps where a vector sat in the image plane,
so its gain over pooled features may be plain spatial layout rather than U(1) structure. Two
baselines test that:

* :func:`position_kept_nn`: 1-NN (cosine) on the whole feature map flattened, so every location
  keeps its position, with no angle bins and no votes;
* :func:`raw_pixel_nn`: 1-NN (Euclidean) on the raw pixels, no network at all.

:func:`compare_methods` gives every method's accuracy and the exact McNemar p of each against the
best one on the same test images.
"""
from typing import Any, Dict, Mapping

import torch
import torch.nn.functional as F

from ..core.knn import topk_inner_product
from ..analysis.signtest import mcnemar_p

__all__ = ['position_kept_nn', 'raw_pixel_nn', 'compare_methods']


def _check(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor) -> None:
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f'Train and test features differ in shape: {tuple(train.shape[1:])} vs {tuple(test.shape[1:])}.')
    if len(train) != len(train_labels) or len(train) == 0:
        raise ValueError(f'{len(train)} train items for {len(train_labels)} labels; need at least one of each, as many.')


def position_kept_nn(train_maps: torch.Tensor, train_labels: torch.Tensor, test_maps: torch.Tensor) -> torch.Tensor:
    """(N_test,) labels of the cosine 1-NN on flattened (B, D, H, W) maps: the layout is kept."""
    _check(train_maps, train_labels, test_maps)
    keys = F.normalize(train_maps.flatten(1).float(), dim=1)
    queries = F.normalize(test_maps.flatten(1).float(), dim=1)
    _, index = topk_inner_product(queries, keys, 1)
    return torch.as_tensor(train_labels)[index[:, 0]]


def raw_pixel_nn(train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor) -> torch.Tensor:
    """(N_test,) labels of the Euclidean 1-NN on raw pixels (any shape after the batch dimension)."""
    _check(train_images, train_labels, test_images)
    a, b = train_images.flatten(1).double(), test_images.flatten(1).double()
    dist = torch.cdist(b, a)
    return torch.as_tensor(train_labels)[dist.argmin(1)]


def compare_methods(predictions: Mapping[str, torch.Tensor], labels: torch.Tensor) -> Dict[str, Any]:
    """Accuracy of every method and the exact McNemar p against the most accurate one.

    Returns ``{'best': name, 'images': n, 'methods': {name: {'accuracy', 'correct', 'mcnemar_p_vs_best'}}}``
    in the order given (the best's own p is 1).
    """
    labels = torch.as_tensor(labels).long()
    correct = {}
    for name, pred in predictions.items():
        pred = torch.as_tensor(pred).long()
        if pred.shape != labels.shape:
            raise ValueError(f'{name}: {tuple(pred.shape)} predictions for {tuple(labels.shape)} labels.')
        correct[name] = pred == labels
    if not correct:
        raise ValueError('compare_methods needs at least one method.')
    best = max(correct, key=lambda k: int(correct[k].sum()))
    return {
        'best': best,
        'images': int(labels.numel()),
        'methods': {
            name: {'accuracy': float(c.double().mean()), 'correct': int(c.sum()),
                   'mcnemar_p_vs_best': mcnemar_p(c, correct[best])}
            for name, c in correct.items()},
    }
