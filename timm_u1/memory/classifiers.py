""" The four classifiers a memory offers, as class scores of (B, D, H, W) feature maps.

* ``prototype``: every location votes, with weight E = ||I(x, y)||^2, for the class whose unit
  prototype in the location's angle bin is nearest (cosine);
* ``instance``: every location votes with its k nearest stored unit vectors, E / k each;
* ``cl2n``: SimpleShot CL2N, minus the squared distance of the centred, normalised pooled feature to
  each class mean;
* ``pooled_knn``: k-NN (cosine) of the pooled feature, one vote per neighbour.

Classes without examples score -inf: a memory never predicts a class it has not seen.
"""
import math
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from ..core.knn import ExactIndex
from .storage import MemoryStorage

__all__ = ['scores', 'probabilities', 'predictions', 'SCORERS']


def _votes(winners: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum ``weights`` (B, L) into (B, C) per-class votes by ``winners`` (B, L) class indices."""
    return torch.zeros(winners.shape[0], num_classes, dtype=torch.float64).scatter_add_(
        1, winners, weights.double())


def prototype_scores(memory: MemoryStorage, features: torch.Tensor) -> torch.Tensor:
    vectors, energy = memory._unit_vectors(features)
    protos = memory.prototypes()
    unseen = memory.class_counts == 0
    winners = torch.empty(vectors.shape[:2], dtype=torch.long)
    for b in memory._bins.unique().tolist():
        where = memory._bins == b
        sims = vectors[:, where] @ protos[:, b].T  # (B, L_b, C)
        winners[:, where] = sims.masked_fill(unseen, -math.inf).argmax(dim=-1)
    return _votes(winners, energy, memory.num_classes)


def instance_scores(memory: MemoryStorage, features: torch.Tensor) -> torch.Tensor:
    vectors, energy = memory._unit_vectors(features)
    b, _, d = vectors.shape
    _, idx = memory._vectors.search(vectors.reshape(-1, d), memory.k)
    neighbour_labels = memory._labels('vector_labels', memory._vector_labels)[idx]  # (B*L, k)
    weights = (energy.reshape(-1, 1) / idx.shape[1]).expand_as(neighbour_labels)
    return _votes(neighbour_labels.reshape(b, -1), weights.reshape(b, -1), memory.num_classes)


def pooled_knn_scores(memory: MemoryStorage, features: torch.Tensor) -> torch.Tensor:
    queries = F.normalize(features.mean(dim=(2, 3)), dim=1)
    if 'pooled_unit' not in memory._cache:
        unit = ExactIndex(memory.num_features, memory.dtype, memory.faiss_threshold)
        unit.add(F.normalize(memory._pooled.vectors.float(), dim=1))
        memory._cache['pooled_unit'] = unit
    _, idx = memory._cache['pooled_unit'].search(queries, memory.k)
    neighbour_labels = memory._labels('pooled_labels', memory._pooled_labels)[idx]
    return _votes(neighbour_labels, torch.ones_like(neighbour_labels, dtype=torch.float64), memory.num_classes)


def cl2n_scores(memory: MemoryStorage, features: torch.Tensor) -> torch.Tensor:
    if 'cl2n' not in memory._cache:
        pooled = memory._pooled.vectors.float()
        mean = pooled.mean(dim=0)
        unit = F.normalize(pooled - mean, dim=1)
        labels = memory._labels('pooled_labels', memory._pooled_labels)
        sums = torch.zeros(memory.num_classes, unit.shape[1]).index_add_(0, labels, unit)
        centroids = sums / memory.class_counts.clamp_min(1)[:, None]
        memory._cache['cl2n'] = mean, centroids
    mean, centroids = memory._cache['cl2n']
    queries = F.normalize(features.mean(dim=(2, 3)) - mean, dim=1)
    return -torch.cdist(queries.double(), centroids.double()).square()


SCORERS: Dict[str, Callable[[MemoryStorage, torch.Tensor], torch.Tensor]] = {
    'prototype': prototype_scores, 'instance': instance_scores, 'cl2n': cl2n_scores,
    'pooled_knn': pooled_knn_scores,
}


def scores(memory: MemoryStorage, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
    """(B, C) class scores of (B, D, H, W) feature maps; larger is better (see the module docstring)."""
    method = method or memory.mode
    if method not in memory.methods:
        raise ValueError(f'Unknown method {method!r} for this {memory.mode} memory; choose from {memory.methods}.')
    memory._require_data()
    features = memory._check_features(features)
    result = SCORERS[method](memory, features)
    return result.masked_fill(memory.class_counts[None, :] == 0, -math.inf)


def probabilities(class_scores: torch.Tensor, method: str) -> torch.Tensor:
    """(B, C) class probabilities of :func:`scores`: vote shares, or a softmax over -distance for 'cl2n'.

    An image without any evidence (all votes zero, e.g. an all-zero feature map) gets a uniform
    distribution over the classes seen.
    """
    if method == 'cl2n':
        return class_scores.softmax(dim=1).float()
    seen = torch.isfinite(class_scores)
    votes = class_scores.masked_fill(~seen, 0)
    total = votes.sum(dim=1, keepdim=True)
    uniform = seen.double() / seen.sum(dim=1, keepdim=True)
    return torch.where(total > 0, votes / total.clamp_min(1e-300), uniform).float()


def predictions(class_scores: torch.Tensor, method: str) -> torch.Tensor:
    """(B,) predicted class indices of :func:`scores`; -1 for an image without any evidence (no votes)."""
    prediction = class_scores.argmax(dim=1)
    if method != 'cl2n':
        prediction = prediction.masked_fill(class_scores.clamp_min(0).sum(dim=1) == 0, -1)
    return prediction
