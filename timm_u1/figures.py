"""Figures without pyplot, written atomically: the one way every plot of timm_u1 is made and saved.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so plotting never changes the
backend of a notebook or opens a window. Needs matplotlib (``pip install "timm_u1[plot]"``).
"""
from pathlib import Path
from typing import Union

from .files import atomic_path

__all__ = ['new_figure', 'save_png']

PathLike = Union[str, Path]


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure``; a clear error when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('Plots need matplotlib: pip install "timm_u1[plot]"') from e
    return Figure(**kwargs)


def save_png(fig, path: PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` in one rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    return path
