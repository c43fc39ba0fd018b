""" Paired comparisons of training arms over seeds and test images, with pre-registered verdicts.

Every arm is trained with the same seeds as its reference (same data, initialisation and batch
order per seed), and each run records which test images it got right, so a comparison is a
(seeds x images) array of paired differences. Both seeds and test images are samples, crossed:
:func:`crossed_mean` gives the mean difference with an unbiased estimate of its variance under the
two-way random-effects model (seed, image, seed x image), and Satterthwaite's degrees of freedom.
From it, per comparison: a 95% t interval, three one-sided t tests (better, worse, and TOST
equivalence within +-``margin`` points) and the minimum detectable effect. The tests are
Holm-corrected over a stated family (:func:`summarize_family`: every comparison of a study); the
verdict is "better" or "worse" if that test rejects, else "equivalent" if TOST rejects, else
"inconclusive". docs/results.md explains why not the bootstrap of seeds and images.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .arms import comparison_name, comparisons_of

__all__ = ['MARGIN', 'ALPHA', 'POWER', 'CrossedMean', 'crossed_mean', 'compare_arms', 'holm', 'correct_string',
           'correct_bits', 'summarize_family', 'summarize_task', 'too_small_caution', 'bootstrap_diff']

# pre-registered equivalence margin, in top-1 percentage points
MARGIN = 0.5
ALPHA = 0.05
# the power at which a comparison's minimum detectable effect is stated
POWER = 0.8
def correct_string(correct: Sequence[bool]) -> str:
    """Per-image correctness as a compact '0'/'1' string (how study.json stores it)."""
    return ''.join('1' if v else '0' for v in correct)


def correct_bits(strings: Sequence[str]) -> np.ndarray:
    """The (runs, images) bool array of :func:`correct_string` strings."""
    return np.array([[ch == '1' for ch in s] for s in strings], dtype=bool)


@dataclass(frozen=True)
class CrossedMean:
    """The mean of a (seeds, images) array, the variance of that mean and its degrees of freedom."""
    mean: float
    variance: float
    df: float

    @property
    def se(self) -> float:
        return math.sqrt(self.variance)


def crossed_mean(d: np.ndarray) -> CrossedMean:
    """Mean of ``d`` (seeds x images) with the unbiased variance of the mean over seeds and images.

    Two-way random effects d_si = mu + a_s + b_i + e_si: the variance of the grand mean is
    var(a) / S + var(b) / N + var(e) / (S N). The ANOVA mean squares estimate each component
    without bias (a component estimated below zero is set to zero, which errs on the wide side);
    resampling seeds and images together would count var(e) three times. Satterthwaite's formula
    gives the degrees of freedom of the resulting linear combination of mean squares.
    """
    d = np.asarray(d, dtype=np.float64)
    s, n = d.shape
    if s < 2 or n < 2:
        raise ValueError(f'A paired comparison needs >= 2 seeds and >= 2 test images, got {s} x {n}.')
    grand, by_seed, by_image = d.mean(), d.mean(axis=1), d.mean(axis=0)
    df_seed, df_image, df_residual = s - 1, n - 1, (s - 1) * (n - 1)
    ms_seed = n * np.sum((by_seed - grand) ** 2) / df_seed
    ms_image = s * np.sum((by_image - grand) ** 2) / df_image
    residual = d - by_seed[:, None] - by_image[None, :] + grand
    ms_residual = np.sum(residual ** 2) / df_residual
    # the variance as coefficients of the three mean squares, a truncated component dropping out
    keep_seed, keep_image = ms_seed > ms_residual, ms_image > ms_residual
    coef = np.array([keep_seed, keep_image, 1 - keep_seed - keep_image], dtype=np.float64) / (s * n)
    ms = np.array([ms_seed, ms_image, ms_residual])
    variance = float(coef @ ms)
    terms = (coef * ms) ** 2 / np.array([df_seed, df_image, df_residual])
    df = float(variance ** 2 / terms.sum()) if variance > 0 else float(df_residual)
    return CrossedMean(float(grand), max(variance, 0.0), df)


def _t():
    from scipy import stats  # a dependency of timm_u1; imported when a study is summarised, not with the package
    return stats.t


def compare_arms(arm: np.ndarray, reference: np.ndarray, margin: float, family_size: int = 1,
                 alpha: float = ALPHA) -> Dict[str, float]:
    """``arm`` minus ``reference`` (paired (seeds, images) 0/1 arrays) in top-1 points, before correction.

    Returns the difference, its standard error and degrees of freedom, the 95% interval, the raw
    p-values of the better / worse / TOST tests, and ``mde``: the smallest true difference the
    one-sided test at alpha / ``family_size`` (Holm's strictest step) detects with power ``POWER``.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f'The equivalence margin must be a finite number > 0, got {margin}.')
    est = crossed_mean(100.0 * (arm.astype(np.float64) - reference.astype(np.float64)))
    t, diff, se, df = _t(), est.mean, est.se, est.df
    if se > 0:
        half = float(t.ppf(0.975, df)) * se
        p_better = float(t.sf(diff / se, df))
        p_worse = float(t.cdf(diff / se, df))
        p_tost = max(float(t.sf((diff + margin) / se, df)), float(t.cdf((diff - margin) / se, df)))
    else:  # every seed and image agrees: the difference is exact
        half = 0.0
        p_better, p_worse = float(diff <= 0), float(diff >= 0)
        p_tost = float(abs(diff) >= margin)
    mde = (float(t.ppf(1 - alpha / family_size, df)) + float(t.ppf(POWER, df))) * se
    return dict(diff=diff, se=se, df=df, lo=diff - half, hi=diff + half, p_better=p_better, p_worse=p_worse,
                p_tost=p_tost, mde=mde)


def holm(pvalues: Sequence[float]) -> List[float]:
    """Holm-adjusted p-values (step-down, monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind='stable')
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _describe(result: Dict[str, Any]) -> Dict[str, Any]:
    top1 = np.asarray(result['top1'], dtype=float)
    return dict(param=result['param'], lr=result['lr'], mean=float(top1.mean()), std=float(top1.std(ddof=1)))


def summarize_family(tasks: Dict[str, Dict[str, Any]], margin: float, alpha: float = ALPHA) -> Dict[str, Any]:
    """Every comparison of every task, Holm-corrected over all of them together: the family is the study.

    ``tasks`` maps a task name to its result (``{'test': {arm: {param, lr, top1, correct}}}``).
    Returns, per task, each arm's top-1 mean and std (under the arm's name) and each comparison
    (under :func:`comparison_name`) with its statistics, the Holm-adjusted p-values
    (``p_better_holm`` ...) and the verdict.
    """
    out: Dict[str, Any] = {}
    family = [(task, arm, ref) for task, result in tasks.items() for arm, ref in comparisons_of(list(result['test']))]
    for task, result in tasks.items():
        out[task] = {arm: _describe(r) for arm, r in result['test'].items()}
    for task, arm, ref in family:
        test = tasks[task]['test']
        a, b = np.asarray(test[arm]['top1'], dtype=float), np.asarray(test[ref]['top1'], dtype=float)
        stats = compare_arms(correct_bits(test[arm]['correct']), correct_bits(test[ref]['correct']), margin,
                             len(family), alpha)
        entry = out[task].setdefault(comparison_name(arm, ref), {})
        entry.update(stats, arm=arm, reference=ref, wins=int(np.sum(a > b)), ties=int(np.sum(a == b)),
                     family_size=len(family))
    for key in ('p_better', 'p_worse', 'p_tost'):
        adjusted = holm([out[t][comparison_name(a, r)][key] for t, a, r in family])
        for (task, arm, ref), p in zip(family, adjusted):
            out[task][comparison_name(arm, ref)][key + '_holm'] = p
    for task, arm, ref in family:
        _verdict(out[task][comparison_name(arm, ref)], margin, alpha)
    return out


def _verdict(o: Dict[str, Any], margin: float, alpha: float) -> None:
    better, worse, equivalent = (o['p_better_holm'] < alpha, o['p_worse_holm'] < alpha, o['p_tost_holm'] < alpha)
    o['verdict'] = 'better' if better else 'worse' if worse else 'equivalent' if equivalent else 'inconclusive'
    if equivalent and (better or worse):
        o['verdict'] += f' (but within ±{margin:g})'


def summarize_task(task_result: Dict[str, Any], n_boot: Optional[int] = None, margin: float = MARGIN,
                   alpha: float = ALPHA) -> Dict[str, Any]:
    """:func:`summarize_family` of one task (the family is its comparisons). ``n_boot`` is ignored.

    Per arm: top-1 mean/std, and for each comparison the difference, interval, p-values (raw and
    Holm-adjusted) and verdict.
    """
    if n_boot is not None:
        warnings.warn('summarize_task(n_boot=...) is ignored: the interval is no longer a bootstrap; the '
                      'argument goes in 0.3.', DeprecationWarning, stacklevel=2)
    return summarize_family({'task': task_result}, margin, alpha)['task']


def bootstrap_diff(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """Deprecated (0.3 removes it): the crossed bootstrap of seeds and images, whose intervals are too
    wide (it counts the seed x image interaction three times); use :func:`crossed_mean`."""
    warnings.warn('bootstrap_diff is deprecated: its intervals are too wide; use crossed_mean.',
                  DeprecationWarning, stacklevel=2)
    d = a.astype(np.float64) - b.astype(np.float64)  # (S, N)
    s, n = d.shape
    rng = np.random.default_rng(seed)
    ws = rng.multinomial(s, np.full(s, 1 / s), size=n_boot).astype(np.float64)  # (B, S)
    wn = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(np.float64)  # (B, N)
    return 100 * np.einsum('bn,bn->b', ws @ d, wn) / (s * n)


def too_small_caution(num_seeds: int, *unused: Any) -> str:
    """A warning line for a report whose design cannot support its verdicts, or '' if it can.

    With fewer than 5 seeds the seed component of the variance rests on almost nothing. (The
    further arguments of 0.1, the bootstrap's resamples and the number of arms, are ignored.)
    """
    if num_seeds >= 5:
        return ''
    return (f'**Caution: {num_seeds} test seeds (the variance over seeds needs >= 5). This is a miniature; its '
            f'verdicts are not evidence.** Use >= 20 seeds for a study.')
