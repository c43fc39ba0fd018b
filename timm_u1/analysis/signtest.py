"""Exact tests of paired outcomes: the sign test and McNemar's test, both scipy's exact binomial test."""
import torch

__all__ = ['sign_test_p', 'mcnemar_p']


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (the sign test); 1.0 for n = 0."""
    if n <= 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), 0.5).pvalue)


def mcnemar_p(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    """Exact McNemar p of two classifiers' per-image correctness (bool tensors on the same images)."""
    a, b = torch.as_tensor(correct_a, dtype=torch.bool), torch.as_tensor(correct_b, dtype=torch.bool)
    if a.shape != b.shape:
        raise ValueError(f'McNemar needs both methods on the same images, got {tuple(a.shape)} and {tuple(b.shape)}.')
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return sign_test_p(only_a, only_a + only_b)
