""" The decision rule of the V1 analysis (:mod:`timm_u1.early.v1analysis`): per claim ``supported`` /
``not distinguishable from controls`` / ``contradicted``, in the words of :mod:`timm_u1.analysis.controls`,
with the numbers each verdict rests on.

Fixed here before any trained model was judged, and printed in every report. A claim is
``contradicted`` when the trained model does not show the effect at all, ``supported`` when it
shows it beyond every control, else ``not distinguishable from controls``; ``None`` (not evaluated)
when the model lacks the part (no pre-filter, no lateral kernel) or too few oriented filters exist.
The first-layer filter claims (Gabor-like, orientation-tuned) are the filter analysis' own
(:mod:`timm_u1.early.verdicts`).
"""
import math
from typing import Any, Dict, Optional

from ..analysis.controls import ALPHA, CONTRADICTED, NOT_DISTINGUISHABLE, SUPPORTED
from .fits import ERROR_MAX
from .verdicts import RSI_MIN

__all__ = ['V1_CLAIMS', 'V1_DECISION_RULE', 'l0_verdict', 'selectivity_verdict', 'association_verdict',
           'MIN_ORIENTED']

MIN_ORIENTED = 4  # fewer oriented filters than this: the lateral claims are not evaluated

V1_CLAIMS = {
    'l0': 'the pre-filter l0 becomes a radially symmetric Laplacian of Gaussian',
    'lateral_orientation': 'the learned lateral kernel is orientation-selective (iso-orientation connections strongest)',
    'association': 'the association fields of the learned kernel follow the SE(2) co-circularity model',
}

V1_DECISION_RULE = (
    f'alpha = {ALPHA}. (1) "{V1_CLAIMS["l0"]}": contradicted unless the trained l0 has LoG error e_LoG <= {ERROR_MAX} '
    f'and radial-symmetry index RSI >= {RSI_MIN}; supported if also its RSI is higher than that of its pixels '
    f'shuffled (one-sided permutation p < alpha) and it improved on the step-0 filter (lower e_LoG and higher RSI). '
    f'(2) "{V1_CLAIMS["lateral_orientation"]}" (oriented filters: Gabor-like with OSI >= 0.3, at least '
    f'{MIN_ORIENTED}): contradicted unless the excitatory strength falls with the orientation difference (Spearman '
    f'rho < 0) and SI > 0; supported if also the permutation p of rho (orientations shuffled across filters) < alpha '
    f'and rho is below the step-0 kernel\'s. The parameter-free filter-correlation kernel of the same filters is '
    f'reported beside it as the reference model, not as a control. (3) "{V1_CLAIMS["association"]}": contradicted '
    f'unless the orientation error E_theta against co-circularity is below 45 degrees (uniformly random orientations) '
    f'and the kernel correlation r with the direction-process kernel is > 0; supported if also both beat the '
    f'orientation-shuffled null (one-sided p < alpha each) and E_theta is below the step-0 kernel\'s.'
)


def _fmt(x: Optional[float]) -> str:
    return '-' if x is None or (isinstance(x, float) and math.isnan(x)) else f'{x:.3g}'


def _verdict(claim: str, shows: bool, why_not: str, beyond: Dict[str, bool], texts: Dict[str, str],
             numbers: Dict[str, Any]) -> Dict[str, Any]:
    out = {'claim': V1_CLAIMS[claim], 'numbers': numbers}
    if not shows:
        return dict(out, verdict=CONTRADICTED, reason=why_not)
    failed = [texts[name] for name, ok in beyond.items() if not ok]
    if failed:
        return dict(out, verdict=NOT_DISTINGUISHABLE, reason='not beyond ' + '; '.join(failed))
    return dict(out, verdict=SUPPORTED, reason='present and beyond every control: ' + '; '.join(texts.values()))


def not_evaluated(claim: str, reason: str) -> Dict[str, Any]:
    return {'claim': V1_CLAIMS[claim], 'verdict': None, 'reason': reason, 'numbers': {}}


def l0_verdict(trained: Optional[Dict[str, Any]], step0: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Claim (1) from :func:`timm_u1.early.v1analysis.l0_analysis` of the trained and step-0 filters."""
    if trained is None:
        return not_evaluated('l0', 'the model has no pre-filter')
    e, rsi, p = trained['log']['error'], trained['rsi'], trained['rsi_shuffle_p']
    shows = e is not None and rsi is not None and e <= ERROR_MAX and rsi >= RSI_MIN
    why = f'e_LoG = {_fmt(e)} (needs <= {ERROR_MAX}), RSI = {_fmt(rsi)} (needs >= {RSI_MIN})'
    beyond = {'pixel_shuffle': p is not None and p < ALPHA}
    texts = {'pixel_shuffle': f'pixel shuffle: RSI {_fmt(rsi)} vs null mean {_fmt(trained["rsi_shuffle_mean"])}, '
                              f'p = {_fmt(p)}'}
    if step0 is not None:
        e0, rsi0 = step0['log']['error'], step0['rsi']
        beyond['step0'] = None not in (e0, rsi0) and e < e0 and rsi > rsi0
        texts['step0'] = f'step 0: e_LoG {_fmt(e)} vs {_fmt(e0)}, RSI {_fmt(rsi)} vs {_fmt(rsi0)}'
    return _verdict('l0', shows, why, beyond, texts, {'trained': trained, 'step0': step0})


def selectivity_verdict(trained: Dict[str, Any], step0: Optional[Dict[str, Any]],
                        reference: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Claim (2) from :func:`timm_u1.early.connectivity.orientation_selectivity` of the trained kernel, the
    step-0 kernel and the filter-correlation kernel."""
    ex = trained['excitatory']
    rho, si, p = ex['spearman_rho'], ex['selectivity_index'], ex['p']
    shows = rho is not None and si is not None and rho < 0 and si > 0
    why = f'rho = {_fmt(rho)} (needs < 0), SI = {_fmt(si)} (needs > 0)'
    beyond = {'permutation': p is not None and p < ALPHA}
    texts = {'permutation': f'orientations shuffled: p = {_fmt(p)} ({ex["permutations"]} permutations)'}
    if step0 is not None:
        rho0 = step0['excitatory']['spearman_rho']
        beyond['step0'] = rho0 is not None and rho < rho0
        texts['step0'] = f'step 0: rho {_fmt(rho)} vs {_fmt(rho0)}'
    numbers = {'trained': trained, 'step0': step0, 'filter_correlation': reference}
    return _verdict('lateral_orientation', shows, why, beyond, texts, numbers)


def association_verdict(trained: Dict[str, Any], step0: Optional[Dict[str, Any]],
                        reference: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Claim (3) from the association error and kernel correlation of the trained, step-0 and
    filter-correlation kernels (each ``{'error': association_error(...), 'correlation': kernel_correlation(...)}``)."""
    err, corr = trained['error'], trained['correlation']
    e, r = err['error_deg'], corr['r']
    shows = e is not None and r is not None and e < 45.0 and r > 0
    why = f'E_theta = {_fmt(e)} deg (needs < 45), r = {_fmt(r)} (needs > 0)'
    beyond = {'error_shuffle': err['p'] is not None and err['p'] < ALPHA,
              'correlation_shuffle': corr['p'] is not None and corr['p'] < ALPHA}
    texts = {'error_shuffle': f'E_theta {_fmt(e)} vs shuffled {_fmt(err["shuffled_mean_deg"])} deg, p = {_fmt(err["p"])}',
             'correlation_shuffle': f'r {_fmt(r)} vs shuffled {_fmt(corr["shuffled_mean_r"])}, p = {_fmt(corr["p"])}'}
    if step0 is not None:
        e0 = step0['error']['error_deg']
        beyond['step0'] = e0 is not None and e < e0
        texts['step0'] = f'step 0: E_theta {_fmt(e)} vs {_fmt(e0)} deg'
    numbers = {'trained': trained, 'step0': step0, 'filter_correlation': reference}
    return _verdict('association', shows, why, beyond, texts, numbers)
