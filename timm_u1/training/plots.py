"""Figures of a training run."""
from pathlib import Path
from typing import Any, Dict, Sequence, Union

from ..figures import new_figure as _figure, optional_figure, save_png as _save

__all__ = ['plot_learning_curves']

PathLike = Union[str, Path]


@optional_figure
def plot_learning_curves(records: Sequence[Dict[str, Any]], path: PathLike) -> Path:
    """Eval top-1 / top-5 and the train / eval loss per epoch of a training run's metrics log."""
    epochs = [r['epoch'] + 1 for r in records]
    fig = _figure(figsize=(8, 3))
    acc, loss = fig.subplots(1, 2)
    acc.plot(epochs, [r['eval_top1'] for r in records], marker='o', label='top-1')
    acc.plot(epochs, [r['eval_top5'] for r in records], marker='o', label='top-5')
    acc.set(xlabel='epoch', ylabel='eval accuracy (%)')
    loss.plot(epochs, [r['train_loss'] for r in records], marker='o', label='train')
    loss.plot(epochs, [r['eval_loss'] for r in records], marker='o', label='eval')
    loss.set(xlabel='epoch', ylabel='loss (CE + lambda x hue)')
    for ax in (acc, loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
