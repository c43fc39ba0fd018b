"""Figures of a memory evaluation."""
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..figures import new_figure as _figure, optional_figure, save_png as _save

__all__ = ['plot_per_class_accuracy']

PathLike = Union[str, Path]


@optional_figure
def plot_per_class_accuracy(
        per_class: Dict[str, List[Optional[float]]],
        overall: Dict[str, float],
        class_names: Sequence[str],
        path: PathLike,
        title: str = '',
) -> Path:
    """Grouped bars: the accuracy of every memory method on every class (overall accuracy in the legend)."""
    methods = list(per_class)
    x = np.arange(len(class_names))
    width = 0.8 / len(methods)
    fig = _figure(figsize=(max(7.0, 0.6 * len(class_names) + 4), 4), layout='constrained')
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        values = [np.nan if v is None else v for v in per_class[method]]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=f'{method} ({overall[method]:.3f})')
    ax.set_xticks(x, class_names, rotation=90 if len(class_names) > 20 else 0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel('class')
    ax.set_ylabel('top-1 accuracy')
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))  # outside: never over a bar
    return _save(fig, path)
