"""What lets parts of one batch stream, accumulated apart, merge into the statistics of the whole stream: label
permutations drawn per batch from (seed, batch index), and the refusal to merge accumulators of other settings."""
from typing import Any, Dict

import torch

__all__ = ['batch_generator', 'check_mergeable']


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The permutation generator of batch ``batch_index``: a pure function of (seed, index), so that a
    stream split into parts draws, batch for batch, the permutations of the whole stream."""
    return torch.Generator().manual_seed(((seed & 0xFFFFFFFF) << 32) | (batch_index & 0xFFFFFFFF))


def check_mergeable(what: str, mine: Dict[str, Any], theirs: Dict[str, Any]) -> None:
    """Refuse to merge accumulators of other settings, naming every setting that differs."""
    diffs = [f'{k}: {mine[k]!r} here, {theirs.get(k)!r} there' for k in mine if mine[k] != theirs.get(k)]
    if diffs:
        raise ValueError(
            f'Cannot merge {what} accumulated with other settings ({"; ".join(diffs)}); merge only parts of '
            f'one run (same model, layer, input size, classes, permutations and seed).')
