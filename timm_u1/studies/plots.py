"""Figures of the CE vs CE + U(1) studies."""
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np

from ..figures import new_figure as _figure, optional_figure, save_png as _save
from .arms import REFERENCE, LABELS

__all__ = ['plot_study_curves', 'plot_paired_differences']

PathLike = Union[str, Path]


@optional_figure
def plot_study_curves(study: Dict[str, Any], path: PathLike, title: str = '') -> Path:
    """Eval top-1 per epoch of every loss of a CE vs CE + U(1) study: mean and +-1 std over seeds."""
    fig = _figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for name, cfg in study['configs'].items():
        curves = np.asarray(cfg['curves'], dtype=float)  # (seeds, epochs)
        epochs = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        label = LABELS.get(name, name) + ('' if name == 'ce' else f', λ {cfg["hue_weight"]:g}')
        ax.plot(epochs, mean, marker='o', ms=3, label=f'{label} ({cfg["mean"]:.1f}%)')
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel('epoch')
    ax.set_ylabel('eval top-1 (%), mean ± std over seeds')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@optional_figure
def plot_paired_differences(
        summaries: Dict[str, Dict[str, Any]], path: PathLike, margin: float = 0.5, title: str = '') -> Path:
    """Each comparison (top-1 points) with its 95% interval, one panel per task, the equivalence margin shaded.

    ``summaries`` maps a task name to its part of :func:`timm_u1.studies.paired.summarize_family`.
    """
    tasks = list(summaries)
    fig = _figure(figsize=(3.2 * len(tasks) + 1.5, 3.4))
    for k, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), k + 1)
        arms = [a for a, o in summaries[task].items() if 'diff' in o]
        y = np.arange(len(arms))[::-1]
        d = np.array([summaries[task][a]['diff'] for a in arms])
        lo = np.array([summaries[task][a]['lo'] for a in arms])
        hi = np.array([summaries[task][a]['hi'] for a in arms])
        ax.axvspan(-margin, margin, color='tab:green', alpha=0.12, label=f'±{margin:g} margin')
        ax.axvline(0, color='k', lw=0.8)
        ax.errorbar(d, y, xerr=[d - lo, hi - d], fmt='o', color='tab:blue', capsize=3, ms=4)
        ax.set_yticks(y)
        ax.set_yticklabels(arms if k == 0 else [], fontsize=8)
        ax.set_xlabel('difference (top-1 points)', fontsize=8)
        ce = summaries[task][REFERENCE]['mean']
        ax.set_title(f'{task} (CE {ce:.1f}%)', fontsize=9)
        ax.grid(alpha=0.3, axis='x')
        if k == 0:
            ax.legend(fontsize=7, loc='lower left')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
