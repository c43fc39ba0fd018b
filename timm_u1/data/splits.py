"""Fixed stratified validation splits and low-shot draws, shared by both studies."""
from typing import Optional, Tuple

import numpy as np

__all__ = ['stratified_split']


def stratified_split(
        labels: np.ndarray, val_fraction: float, shots: Optional[int] = None, seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a fixed stratified validation split (the same for every seed), then ``shots``
    training images per class drawn with ``seed`` from the rest (all of it for ``shots=None``)."""
    # Not datasets' train_test_split(stratify_by_column=): it splits a Dataset with a ClassLabel column
    # (the frozen study holds cached features and a label array), has no per-class low-shot draw, and
    # rounds per class otherwise (sklearn's StratifiedShuffleSplit), which would change the splits that
    # the published studies (docs/results.md) were run on.
    fixed = np.random.default_rng(0)
    train, val = [], []
    for c in np.unique(labels):
        idx = fixed.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(val_fraction * len(idx))))
        val.append(idx[:k])
        train.append(idx[k:])
    if shots is not None:
        rng = np.random.default_rng(seed)
        short = [c for c in train if len(c) < shots]
        if short:
            raise ValueError(f'{shots} shots per class, but a class has only {min(map(len, short))} '
                             f'non-validation training images; use fewer shots.')
        train = [rng.choice(c, size=shots, replace=False) for c in train]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
