""" Paired comparisons of training arms over seeds and test images, with pre-registered verdicts.

Every arm is trained with the same seeds as the reference arm ``ce`` (same data, initialisation and
batch order per seed), and each run records which test images it got right. :func:`summarize_task`
turns those into, per arm: top-1 mean and std over seeds, the mean paired difference to CE with a
95% bootstrap interval that resamples seeds and test images (:func:`bootstrap_diff`), and three
one-sided tests, Holm-corrected over the arms (:func:`holm`): better (difference > 0), worse
(difference < 0) and TOST equivalence within +-``margin`` points. The verdict is "better" or
"worse" if that test rejects, else "equivalent" if TOST rejects, else "inconclusive".

Used by the frozen-backbone study (:mod:`timm_u1.studies.frozen`) and the from-scratch study
(:mod:`timm_u1.studies.scratch`).
"""
from typing import Any, Dict, List, Sequence

import numpy as np

__all__ = ['MARGIN', 'ALPHA', 'bootstrap_diff', 'holm', 'correct_string', 'correct_bits', 'summarize_task',
           'too_small_caution']

# pre-registered equivalence margin, in top-1 percentage points
MARGIN = 0.5
ALPHA = 0.05


def correct_string(correct: Sequence[bool]) -> str:
    """Per-image correctness as a compact '0'/'1' string (how study.json stores it)."""
    return ''.join('1' if v else '0' for v in correct)



def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean paired difference (points) of two (seeds, images) 0/1 arrays.

    Each resample draws seeds and test images with replacement, the same draw for both arms.
    """
    d = a.astype(np.float64) - b.astype(np.float64)  # (S, N)
    s, n = d.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(s, np.full(s, 1 / s), size=n_boot).astype(np.float64)  # (B, S)
    wn = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)  # (B, N)
    return 100 * np.einsum('bn,bn->b', ws @ d, wn) / (s * n)


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def correct_bits(strings: Sequence[str]) -> np.ndarray:
    """The (runs, images) bool array of :func:`correct_string` strings."""
    return np.array([[ch == '1' for ch in s] for s in strings], dtype=bool)


def summarize_task(task_result: Dict[str, Any], n_boot: int, margin: float, alpha: float = ALPHA) -> Dict[str, Any]:
    """Per arm: top-1 mean/std, the paired difference to CE with a 95% bootstrap interval, p-values of the
    superiority / inferiority / TOST tests, Holm-adjusted over the arms, and the verdict."""
    test = task_result['test']  # arm -> {top1: [per seed], correct: [per seed], ...}
    ce = correct_bits(test['ce']['correct'])
    out: Dict[str, Any] = {}
    for arm, r in test.items():
        top1 = np.asarray(r['top1'])
        out[arm] = dict(param=r['param'], lr=r['lr'], mean=float(top1.mean()), std=float(top1.std(ddof=1)))
        if arm == 'ce':
            continue
        boot = bootstrap_diff(correct_bits(r['correct']), ce, n_boot, seed=len(out))
        diff = float(np.mean(top1 - np.asarray(test['ce']['top1'])))
        p_better = (1 + np.sum(boot <= 0)) / (n_boot + 1)
        p_worse = (1 + np.sum(boot >= 0)) / (n_boot + 1)
        p_tost = max((1 + np.sum(boot <= -margin)) / (n_boot + 1), (1 + np.sum(boot >= margin)) / (n_boot + 1))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[arm].update(diff=diff, lo=float(lo), hi=float(hi), p_better=float(p_better), p_worse=float(p_worse),
                        p_tost=float(p_tost),
                        wins=int(np.sum(top1 > np.asarray(test['ce']['top1']))),
                        ties=int(np.sum(top1 == np.asarray(test['ce']['top1']))))
    arms = [a for a in out if a != 'ce']
    for key in ('p_better', 'p_worse', 'p_tost'):
        for arm, adj in zip(arms, holm([out[a][key] for a in arms])):
            out[arm][key + '_holm'] = adj
    for arm in arms:
        o = out[arm]
        better, worse, equivalent = (o['p_better_holm'] < alpha, o['p_worse_holm'] < alpha, o['p_tost_holm'] < alpha)
        o['verdict'] = ('better' if better else 'worse' if worse else 'equivalent' if equivalent else 'inconclusive')
        if equivalent and (better or worse):
            o['verdict'] += f' (but within ±{margin:g})'
    return out


def too_small_caution(num_seeds: int, n_boot: int, num_arms: int, alpha: float = ALPHA) -> str:
    """A warning line for a report whose design cannot support its verdicts, or '' if it can.

    With few seeds the bootstrap over seeds has almost nothing to resample; with few resamples the
    smallest p-value, 1 / (n_boot + 1), times Holm's factor sits near alpha, so any consistent
    difference is called "better" or "worse".
    """
    problems = []
    if num_seeds < 5:
        problems.append(f'{num_seeds} test seeds (the bootstrap over seeds needs >= 5)')
    floor = num_arms / (n_boot + 1)
    if floor > alpha / 10:
        problems.append(f'{n_boot} bootstrap resamples (the smallest Holm-adjusted p is {floor:.3g}, close to '
                        f'alpha {alpha:g})')
    if not problems:
        return ''
    return ('**Caution: ' + ' and '.join(problems) + '. This is a miniature; its verdicts are not evidence.** '
            'Use >= 20 seeds and >= 1000 resamples for a study.')
