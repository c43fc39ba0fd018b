""" The filter analysis' files: report.json, report.md and the PNGs of :mod:`timm_u1.early.plots`.

Every report states what its filters are from, prints the decision rule beside the verdicts, and
shows the analysed bank beside each control.
"""
import math
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from ..analysis.controls import format_value
from ..files import write_json, write_text
from .bank import BankFits
from .verdicts import CLAIMS, DECISION_RULE

__all__ = ['summary', 'write_report', 'render_markdown']

_PLOTS = {
    'filters': ('filters.png', 'The analysed filters with their fits'),
    'distributions': ('distributions.png', 'Fit errors and indices beside the controls'),
    'nxny': ('nxny.png', 'Gabor envelope sizes (nx, ny)'),
    'orientations': ('orientations.png', 'Edge orientations'),
}


def _median(values: np.ndarray) -> Optional[float]:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else None


def summary(bank: BankFits) -> Dict[str, Any]:
    """The figures of one (pooled) bank that the report tables show.

    ``gabor_like_below_half_cycle``: Gabor-like filters whose carrier has less than half a cycle across
    the kernel (f * k < 0.5): their fit is a Gaussian blob (phase near 0 or pi) or a Gaussian first
    derivative (phase near +-pi/2) rather than a visible carrier, and their nx, ny are near 0.
    """
    n = len(bank.records)
    counts = bank.class_counts()
    half_cycle = 0.5 / max(bank.kernel)
    return {
        'filters': n, 'kernel': bank.kernel, 'refused': bank.refused,
        'class_shares': {c: counts[c] / n if n else None for c in counts} if bank.refused.keys() != {'gabor', 'log'} else None,
        'median_gabor_error': _median(bank.values('gabor', 'error')),
        'median_log_error': _median(bank.values('log', 'error')),
        'median_dog_error': _median(bank.values('dog', 'error')),
        'median_osi': _median(bank.values('osi')),
        'median_rsi': _median(bank.values('rsi')),
        'median_rsi_centre_surround': _median(bank.values('rsi', where='centre-surround')),
        'median_achromatic_fraction': _median(bank.values('achromatic_fraction')),
        'median_nx_gabor_like': _median(bank.values('gabor', 'nx', where='gabor-like')),
        'median_ny_gabor_like': _median(bank.values('gabor', 'ny', where='gabor-like')),
        'gabor_like_below_half_cycle': int((bank.values('gabor', 'frequency', where='gabor-like') < half_cycle).sum()),
    }


def _per_seed(report, group: str, key: str, sub: Optional[str] = None) -> str:
    medians = [_median(report.banks[name].values(key, sub)) for name in report.groups[group]]
    medians = [m for m in medians if m is not None]
    if len(medians) < 2:
        return ''
    return f' ({format_value(min(medians))}-{format_value(max(medians))} over {len(medians)})'


def render_markdown(report, summaries: Dict[str, Dict[str, Any]], files: Dict[str, str]) -> str:
    m = report.meta
    groups = list(summaries)
    lines = [f"# First-layer filters: {m['subject']}", '',
             f"**What these filters are**: {m['source']}.", '',
             '| setting | value |', '|---|---|']
    for key in ('subject', 'weights', 'first_conv', 'shape', 'stride', 'seeds', 'starts', 'seed', 'step0', 'timm_u1_version'):
        lines.append(f'| {key} | {format_value(m.get(key))} |')
    if m.get('filters_analysed'):
        lines.append(f"| filters analysed | a seeded random {len(m['filters_analysed'])} of {m['shape'][0]} |")
    lines += ['', '## Decision rule (fixed before any real bank was judged)', '', DECISION_RULE, '',
              '## Verdicts', '', '| claim | verdict | because |', '|---|---|---|']
    for name, v in report.verdicts.items():
        lines.append(f"| {CLAIMS[name]} | **{v['verdict'] or 'not evaluated'}** | {v['reason']} |")
    lines += ['', '## The analysed bank beside its controls', '',
              'Controls: random_init = the same architecture at its own random initialisation (pooled over seeds; '
              'min-max of the per-seed medians in brackets); pixel_shuffle = each analysed filter with its pixels '
              'permuted; step0 = the run\'s step-0 filters. Errors: ||F - fit|| / ||F - mean F|| of the luminance '
              'filter F.', '',
              '| figure | ' + ' | '.join(groups) + ' |', '|---|' + '---|' * len(groups)]
    rows = [('filters', 'filters', None, None), ('median Gabor error e_G', 'median_gabor_error', 'gabor', 'error'),
            ('median LoG error e_LoG', 'median_log_error', 'log', 'error'),
            ('median DoG error', 'median_dog_error', 'dog', 'error'),
            ('median orientation index OSI', 'median_osi', 'osi', None),
            ('median radial symmetry RSI (all)', 'median_rsi', 'rsi', None),
            ('median RSI of centre-surround filters', 'median_rsi_centre_surround', None, None),
            ('median achromatic fraction', 'median_achromatic_fraction', None, None),
            ('median nx / ny of Gabor-like filters', None, None, None)]
    for label, key, vkey, sub in rows:
        cells = []
        for g in groups:
            s = summaries[g]
            if key is None:
                cells.append(f"{format_value(s['median_nx_gabor_like'])} / {format_value(s['median_ny_gabor_like'])}")
                continue
            extra = _per_seed(report, g, vkey, sub) if vkey and g in report.groups else ''
            cells.append(format_value(s[key]) + extra)
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    lines.append('| Gabor-like filters with under half a carrier cycle across the kernel (blob or edge) | '
                 + ' | '.join(str(summaries[g]['gabor_like_below_half_cycle']) for g in groups) + ' |')
    for cls in ('gabor-like', 'centre-surround', 'unstructured', 'flat'):
        lines.append(f'| share {cls} | ' + ' | '.join(
            format_value((summaries[g]['class_shares'] or {}).get(cls)) for g in groups) + ' |')
    refused = summaries['analysed']['refused']
    if refused:
        lines += [''] + [f'- Not fitted: {why}.' for why in refused.values()]
    if files:
        lines += ['', '## Plots', ''] + [f'![{_PLOTS[k][1]}]({files[k]})' for k in _PLOTS if k in files]
    lines += ['', '## Per filter (analysed bank)', '',
              '| # | class | e_G | e_LoG | edge θ (deg) | f (cyc/px) | nx | ny | OSI | RSI | achromatic |',
              '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in report.banks['analysed'].records:
        g, lo = r['gabor'] or {}, r['log'] or {}
        edge = None if r['edge_theta'] is None else math.degrees(r['edge_theta'])
        lines.append(' | '.join(['', str(r['index']), r['class'] or '-'] + [format_value(v) for v in (
            g.get('error'), lo.get('error'), edge, g.get('frequency'), g.get('nx'), g.get('ny'), r['osi'], r['rsi'],
            r['achromatic_fraction'])] + ['']).strip())
    lines += ['', 'Edge θ is the spectral orientation index\'s edge orientation (carrier + 90°), counter-clockwise '
              'from +x with y up. Definitions: docs/filters.md.', '']
    return '\n'.join(lines)


def write_report(report, out: Path, plots: bool = True) -> Dict[str, Path]:
    """report.json, the PNGs and report.md of a :class:`timm_u1.early.filters.FilterReport` in ``out``."""
    out = Path(out)
    pooled = report.pooled()
    banks = {'analysed': report.banks['analysed'], **pooled}
    summaries = {name: summary(bank) for name, bank in banks.items()}
    paths: Dict[str, Path] = {'report.json': out / 'report.json', 'report.md': out / 'report.md'}
    # the results first: a figure that cannot be drawn never costs the report
    write_json(paths['report.json'], {
        'meta': report.meta, 'decision_rule': DECISION_RULE, 'verdicts': report.verdicts, 'summary': summaries,
        'control_banks': report.groups, 'filters': report.banks['analysed'].records})
    if plots:
        from . import plots as figures

        title = f"{report.meta['subject']} / {report.meta['first_conv']}"
        analysed = report.banks['analysed']
        drawn = {
            'filters': figures.plot_filter_grid(report.weight, analysed, out / _PLOTS['filters'][0], title),
            'distributions': figures.plot_distributions(banks, out / _PLOTS['distributions'][0], title),
            'nxny': (figures.plot_nxny(banks, out / _PLOTS['nxny'][0], title)
                     if 'gabor' not in analysed.refused else None),
            'orientations': figures.plot_orientations(analysed, out / _PLOTS['orientations'][0], title),
        }
        paths.update({k: p for k, p in drawn.items() if p is not None})
    write_text(paths['report.md'], render_markdown(report, summaries, {k: p.name for k, p in paths.items() if k in _PLOTS}))
    return paths
