""" The summary of an early-layer study (scripts/v1_study.py): ablation arms x seeds of an ``lgn_v1net``
trained on photo-ID crops, each run's test accuracy against chance and its V1 analysis verdicts.

Accuracy against chance: a one-sided binomial test of the run's correct test crops against 1 / classes.
Arms are compared per seed only (a handful of seeds carries no test of an arm difference); the summary
says so beside the table.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..files import read_json, write_json, write_text
from ..figures import new_figure, optional_figure, save_png
from .v1report import CLAIM_ORDER
from .v1verdicts import V1_CLAIMS

__all__ = ['run_accuracy', 'summarize']

_FILTER_CLAIMS = {'gabor': 'first-layer filters are Gabor-like', 'orientation': 'first-layer filters are orientation-tuned'}


def run_accuracy(run: Path) -> Dict[str, Any]:
    """Top-1 (%) and test-set size of a trained run, from its ``summary.json`` (fields checked)."""
    path = Path(run) / 'summary.json'
    data = read_json(path)
    final = data.get('final') if isinstance(data, dict) else None
    if not isinstance(final, dict):
        raise ValueError(f'{path}: "final" is missing or not a mapping; the run did not finish (resume it).')
    top1, n = final.get('eval_top1'), final.get('eval_num_samples')
    if isinstance(top1, bool) or not isinstance(top1, (int, float)) or not 0 <= top1 <= 100:
        raise ValueError(f'{path}: final.eval_top1 must be a percentage, got {top1!r}.')
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f'{path}: final.eval_num_samples must be a positive integer, got {n!r}.')
    return {'top1': float(top1), 'num_samples': n, 'epochs': final.get('epoch', -1) + 1}


def _binomial_p(correct: int, n: int, chance: float) -> float:
    from scipy.stats import binomtest

    return float(binomtest(correct, n, chance, alternative='greater').pvalue)


def _rows(runs: Sequence[Tuple[str, int, Path, Dict[str, Any]]], chance: float) -> List[Dict[str, Any]]:
    rows = []
    for arm, seed, folder, report in runs:
        acc = run_accuracy(Path(folder) / 'run')
        correct = int(round(acc['top1'] * acc['num_samples'] / 100))
        rows.append({'arm': arm, 'seed': seed, **acc, 'p_vs_chance': _binomial_p(correct, acc['num_samples'], chance),
                     'verdicts': {k: report['verdicts'][k]['verdict'] for k in CLAIM_ORDER},
                     'numbers': _key_numbers(report)})
    return rows


def _key_numbers(report: Dict[str, Any]) -> Dict[str, Any]:
    """The few numbers per run the summary table shows."""
    out: Dict[str, Any] = {}
    l0 = report['l0'].get('trained')
    if l0:
        out.update(l0_log_error=l0['log']['error'], l0_rsi=l0['rsi'])
        if 'step0' in report['l0']:
            out.update(l0_log_error_step0=report['l0']['step0']['log']['error'], l0_rsi_step0=report['l0']['step0']['rsi'])
    gabor = report['verdicts']['gabor'].get('numbers') or {}
    out.update(median_gabor_error=gabor.get('median_gabor_error'), gabor_like_share=gabor.get('gabor_like_share'))
    trained = report['kernels'].get('trained')
    if trained:
        ex = trained['selectivity']['excitatory']
        out.update(rho=ex['spearman_rho'], si=ex['selectivity_index'], rho_p=ex['p'],
                   e_theta=trained['association']['error']['error_deg'],
                   e_theta_shuffled=trained['association']['error']['shuffled_mean_deg'],
                   r_model=trained['association']['correlation']['r'])
    return out


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return '-'
    return f'{v:.{digits}g}' if isinstance(v, float) else str(v)


def render_summary(rows: List[Dict[str, Any]], chance: float) -> str:
    arms = list(dict.fromkeys(r['arm'] for r in rows))
    lines = ['# Early-layer study', '', f'Chance: {100 * chance:.2f} % top-1 ({round(1 / chance)} photographs).', '',
             '| arm | seeds | top-1 mean (%) | top-1 per seed (%) | binomial p vs chance, largest |', '|---|---|---|---|---|']
    for arm in arms:
        accs = [r['top1'] for r in rows if r['arm'] == arm]
        ps = [r['p_vs_chance'] for r in rows if r['arm'] == arm]
        lines.append(f'| {arm} | {len(accs)} | {np.mean(accs):.2f} | {", ".join(f"{a:.2f}" for a in accs)} | '
                     f'{max(ps):.2g} |')
    lines += ['', 'Arms are compared per seed only: a few seeds carry no test of an arm difference.', '',
              '## Verdicts per run', '', '| arm | seed | ' + ' | '.join(CLAIM_ORDER) + ' |',
              '|---|---|' + '---|' * len(CLAIM_ORDER)]
    for r in rows:
        lines.append(f'| {r["arm"]} | {r["seed"]} | ' + ' | '.join(r['verdicts'][k] or 'not evaluated'
                                                                   for k in CLAIM_ORDER) + ' |')
    claims = {**V1_CLAIMS, **_FILTER_CLAIMS}
    lines += ['', 'Claims: ' + '; '.join(f'{k}: {claims[k]}' for k in CLAIM_ORDER) + '.', '',
              '## Numbers per run', '',
              '| arm | seed | l0 e_LoG (step 0) | l0 RSI (step 0) | median e_Gabor | Gabor-like share | rho | SI | p | '
              'E_theta (shuffled) | r |', '|---|---|' + '---|' * 9]
    for r in rows:
        n = r['numbers']
        lines.append(' | '.join(['', r['arm'], str(r['seed']),
                                 f'{_fmt(n.get("l0_log_error"))} ({_fmt(n.get("l0_log_error_step0"))})',
                                 f'{_fmt(n.get("l0_rsi"))} ({_fmt(n.get("l0_rsi_step0"))})',
                                 _fmt(n.get('median_gabor_error')), _fmt(n.get('gabor_like_share')), _fmt(n.get('rho')),
                                 _fmt(n.get('si')), _fmt(n.get('rho_p')),
                                 f'{_fmt(n.get("e_theta"))} ({_fmt(n.get("e_theta_shuffled"))})', _fmt(n.get('r_model')),
                                 '']).strip())
    return '\n'.join(lines) + '\n'


@optional_figure
def plot_accuracy(rows: List[Dict[str, Any]], chance: float, path: Path) -> Path:
    """Test top-1 of every run by arm, with chance."""
    arms = list(dict.fromkeys(r['arm'] for r in rows))
    fig = new_figure(figsize=(4.6, 3.4))
    ax = fig.add_subplot()
    for i, arm in enumerate(arms):
        accs = [r['top1'] for r in rows if r['arm'] == arm]
        ax.plot([i] * len(accs), accs, 'o', color='tab:blue')
        ax.plot([i - 0.2, i + 0.2], [np.mean(accs)] * 2, color='black')
    ax.axhline(100 * chance, color='grey', ls='--', lw=0.8, label='chance')
    ax.set_xticks(range(len(arms)))
    ax.set_xticklabels(arms)
    ax.set_ylabel('test top-1 (%)')
    ax.set_ylim(0, None)
    ax.legend(fontsize=7)
    ax.set_title('photo-ID test accuracy by arm (dots: seeds)', fontsize=9)
    return save_png(fig, path)


def summarize(runs: Sequence[Tuple[str, int, Path, Dict[str, Any]]], out: Path, chance: float) -> str:
    """summary.json, summary.md and accuracy.png of analysed runs ``(arm, seed, folder, report.json data)`` in
    ``out``; returns the Markdown."""
    if not runs:
        raise ValueError('no finished run to summarise; train some first.')
    if not 0 < chance < 1:
        raise ValueError(f'chance must be in (0, 1), got {chance}.')
    rows = _rows(runs, chance)
    text = render_summary(rows, chance)
    write_json(Path(out) / 'summary.json', {'chance': chance, 'runs': rows})
    plot = plot_accuracy(rows, chance, Path(out) / 'accuracy.png')
    if plot is not None:
        text += f'\n![test accuracy by arm]({plot.name})\n'
    write_text(Path(out) / 'summary.md', text)
    return text
