""" The decision rule of the filter analysis: per claim, ``supported`` / ``not distinguishable from
controls`` / ``contradicted`` (the words of :mod:`timm_u1.analysis.controls`), with the numbers each
verdict rests on.

The rule is fixed here, before any real bank was judged, and :data:`DECISION_RULE` is printed in
every report. A claim is ``contradicted`` when the analysed bank itself does not show the effect,
``supported`` when it shows it and beats **every** control (an intersection-union test: each
control is tested at ALPHA, and requiring all of them keeps the overall error at ALPHA without a
multiplicity correction), else ``not distinguishable from controls``. ``None`` (not evaluated) when
the kernel is too small for the claim's fits, or the claim's filters do not occur.

Filters are the units: a control's filters are pooled over its seeds. Mann-Whitney U is one-sided in
the claimed direction; its AUC is the probability that a random analysed filter is better than a
random control filter (0.5 = no difference), and a significant p also needs AUC >= AUC_MIN, so a
large bank cannot win on a negligible shift. Class shares are compared with Fisher's exact test,
one-sided.
"""
import math
from typing import Any, Dict, Optional

import numpy as np

from ..analysis.controls import ALPHA, CONTRADICTED, NOT_DISTINGUISHABLE, SUPPORTED
from .bank import BankFits
from .fits import CLASS_MARGIN, ERROR_MAX

__all__ = ['AUC_MIN', 'OSI_MIN', 'RSI_MIN', 'MIN_SELECTED', 'CLAIMS', 'DECISION_RULE', 'compare', 'share_test',
           'verdicts']

AUC_MIN = 0.7
OSI_MIN = 0.3
RSI_MIN = 0.5
MIN_SELECTED = 3  # fewer centre-surround filters in a control than this: its RSI is not compared

CLAIMS = {
    'gabor': 'first-layer filters are Gabor-like',
    'orientation': 'filters are orientation-tuned',
    'radial': 'centre-surround filters are radially symmetric',
}

DECISION_RULE = (
    f'Each claim is judged on the analysed bank beside every control (random initialisation over several seeds, '
    f'pixel-shuffled copies of the analysed filters, and the step-0 filters when given), filters as units, '
    f'alpha = {ALPHA} per control and every control required (intersection-union test). '
    f'Mann-Whitney U one-sided in the claimed direction, significant only with AUC >= {AUC_MIN}; class shares '
    f'by Fisher\'s exact test, one-sided. '
    f'(1) "{CLAIMS["gabor"]}" (kernels >= 7x7): contradicted unless the median Gabor error e_G <= {ERROR_MAX} '
    f'(FVE >= {1 - ERROR_MAX ** 2:g}); supported if also e_G is lower than every control\'s (U) and the share of '
    f'Gabor-like filters (e_G <= {ERROR_MAX} and e_G < e_LoG - {CLASS_MARGIN}) is higher (Fisher). '
    f'(2) "{CLAIMS["orientation"]}" (any kernel): contradicted unless the median spectral orientation index '
    f'OSI >= {OSI_MIN}; supported if also OSI is higher than every control\'s (U). '
    f'(3) "{CLAIMS["radial"]}" (kernels >= 5x5): not evaluated without centre-surround filters (e_LoG <= '
    f'{ERROR_MAX} and e_LoG < e_G - {CLASS_MARGIN}); contradicted unless their median radial-symmetry index '
    f'RSI >= {RSI_MIN}; supported if also their share is higher than every control\'s (Fisher) and their RSI '
    f'higher than the control\'s centre-surround filters\' (U), the latter where a control has at least '
    f'{MIN_SELECTED} of them.'
)


def _finite(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def _scipy_stats():
    try:
        import scipy.stats
    except ImportError as e:
        raise ImportError('the verdicts\' tests need scipy (a timm_u1 dependency): pip install scipy') from e
    return scipy.stats


def compare(analysed: np.ndarray, control: np.ndarray, higher_is_better: bool) -> Dict[str, Any]:
    """One-sided Mann-Whitney U of ``analysed`` against ``control`` in the claimed direction, with the AUC
    (P(an analysed value is better than a control value), ties counted half) and both medians."""
    a, c = _finite(np.asarray(analysed, float)), _finite(np.asarray(control, float))
    out: Dict[str, Any] = {'n': len(a), 'n_control': len(c), 'median': _median(a), 'median_control': _median(c),
                           'p': None, 'auc': None, 'significant': False}
    if len(a) == 0 or len(c) == 0:
        return out
    test = _scipy_stats().mannwhitneyu(a, c, alternative='greater' if higher_is_better else 'less')
    u = float(test.statistic)  # U of the first sample: pairs where it is the larger, ties half
    auc = u / (len(a) * len(c))
    out['auc'] = auc if higher_is_better else 1 - auc
    out['p'] = float(test.pvalue)
    out['significant'] = out['p'] < ALPHA and out['auc'] >= AUC_MIN
    return out


def share_test(k: int, n: int, k_control: int, n_control: int) -> Dict[str, Any]:
    """Fisher's exact test, one-sided: is the share k / n higher than k_control / n_control?"""
    out = {'share': k / n if n else None, 'share_control': k_control / n_control if n_control else None,
           'p': None, 'significant': False}
    if n and n_control:
        out['p'] = float(_scipy_stats().fisher_exact([[k, n - k], [k_control, n_control - k_control]], alternative='greater')[1])
        out['significant'] = out['p'] < ALPHA
    return out


def _median(values: np.ndarray) -> Optional[float]:
    values = _finite(np.asarray(values, float))
    return float(np.median(values)) if len(values) else None


def _fmt(x: Optional[float]) -> str:
    return '-' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.3g}'


def _verdict(claim: str, present: bool, absent_reason: str, tests: Dict[str, Dict[str, Any]],
             numbers: Dict[str, Any]) -> Dict[str, Any]:
    failed = [f'{name}: {why}' for name, checks in tests.items() for why in checks.pop('failed', [])]
    passed = [f'{name}: ' + '; '.join(checks.pop('texts', [])) for name, checks in tests.items()]
    numbers['controls'] = tests
    if not present:
        return {'claim': CLAIMS[claim], 'verdict': CONTRADICTED, 'reason': absent_reason, 'numbers': numbers}
    if not tests:
        return {'claim': CLAIMS[claim], 'verdict': None, 'numbers': numbers, 'reason': 'no control to compare with'}
    if failed:
        return {'claim': CLAIMS[claim], 'verdict': NOT_DISTINGUISHABLE, 'numbers': numbers,
                'reason': 'not beyond ' + '; '.join(failed)}
    return {'claim': CLAIMS[claim], 'verdict': SUPPORTED, 'numbers': numbers,
            'reason': 'present and beyond every control: ' + ' | '.join(passed)}


def _u_text(test: Dict[str, Any], what: str) -> str:
    return (f'{what} median {_fmt(test["median"])} vs {_fmt(test["median_control"])}, U p = {_fmt(test["p"])}, '
            f'AUC {_fmt(test["auc"])}')


def _share_text(share: Dict[str, Any], what: str) -> str:
    return f'{what} share {_fmt(share["share"])} vs {_fmt(share["share_control"])}, Fisher p = {_fmt(share["p"])}'


def _not_evaluated(claim: str, reason: str) -> Dict[str, Any]:
    return {'claim': CLAIMS[claim], 'verdict': None, 'reason': reason, 'numbers': {}}


def _claim_gabor(bank: BankFits, controls: Dict[str, BankFits]) -> Dict[str, Any]:
    if 'gabor' in bank.refused:
        return _not_evaluated('gabor', bank.refused['gabor'])
    errors = bank.values('gabor', 'error')
    counts, n = bank.class_counts(), len(bank.records)
    median = _median(errors)
    tests = {}
    for name, control in controls.items():
        u = compare(errors, control.values('gabor', 'error'), higher_is_better=False)
        share = share_test(counts['gabor-like'], n, control.class_counts()['gabor-like'], len(control.records))
        texts = [_u_text(u, 'e_G'), _share_text(share, 'Gabor-like')]
        failed = [t for t, ok in zip(texts, (u['significant'], share['significant'])) if not ok]
        tests[name] = {'error': u, 'gabor_like_share': share, 'failed': failed, 'texts': texts}
    numbers = {'filters': n, 'median_gabor_error': median, 'gabor_like_share': counts['gabor-like'] / n if n else None}
    return _verdict('gabor', median is not None and median <= ERROR_MAX,
                    f'the median Gabor error is {_fmt(median)} > {ERROR_MAX}: most filters are not fitted by a Gabor',
                    tests, numbers)


def _claim_orientation(bank: BankFits, controls: Dict[str, BankFits]) -> Dict[str, Any]:
    osi = bank.values('osi')
    median = _median(osi)
    tests = {}
    for name, control in controls.items():
        u = compare(osi, control.values('osi'), higher_is_better=True)
        text = _u_text(u, 'OSI')
        tests[name] = {'osi': u, 'failed': [] if u['significant'] else [text], 'texts': [text]}
    return _verdict('orientation', median is not None and median >= OSI_MIN,
                    f'the median orientation index is {_fmt(median)} < {OSI_MIN}', tests,
                    {'filters': len(bank.records), 'median_osi': median})


def _claim_radial(bank: BankFits, controls: Dict[str, BankFits]) -> Dict[str, Any]:
    if 'log' in bank.refused:
        return _not_evaluated('radial', bank.refused['log'])
    selected = bank.values('rsi', where='centre-surround')
    if len(selected) == 0:
        return _not_evaluated('radial', 'no filter of the bank is centre-surround')
    n = len(bank.records)
    median = _median(selected)
    tests = {}
    for name, control in controls.items():
        theirs = control.values('rsi', where='centre-surround')
        share = share_test(len(selected), n, len(theirs), len(control.records))
        texts = [_share_text(share, 'centre-surround')]
        failed = [] if share['significant'] else list(texts)
        entry: Dict[str, Any] = {'centre_surround_share': share}
        if len(theirs) >= MIN_SELECTED:
            u = compare(selected, theirs, higher_is_better=True)
            entry['rsi'] = u
            texts.append(_u_text(u, 'RSI'))
            if not u['significant']:
                failed.append(texts[-1])
        else:
            entry['rsi'] = f'not compared: {len(theirs)} centre-surround filters (< {MIN_SELECTED})'
            texts.append(entry['rsi'])
        entry.update(failed=failed, texts=texts)
        tests[name] = entry
    return _verdict('radial', median is not None and median >= RSI_MIN,
                    f'the centre-surround filters\' median RSI is {_fmt(median)} < {RSI_MIN}', tests,
                    {'filters': n, 'centre_surround': len(selected), 'median_rsi': median})


def verdicts(bank: BankFits, controls: Dict[str, BankFits]) -> Dict[str, Dict[str, Any]]:
    """Per claim (:data:`CLAIMS`), the verdict of ``bank`` beside ``controls`` (name -> pooled control bank)."""
    return {'gabor': _claim_gabor(bank, controls), 'orientation': _claim_orientation(bank, controls),
            'radial': _claim_radial(bank, controls)}
