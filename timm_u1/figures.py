"""Figures without pyplot, written atomically: the one way every plot of timm_u1 is made and saved.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot), so plotting never changes the
backend of a notebook or opens a window. Every plotting function is an :func:`optional_figure`: its
text is drawn literally and a failure is a logged warning, so a figure never costs a run its results.
Needs matplotlib (a dependency of timm_u1; without it the figures are skipped with a warning).
"""
import functools
import logging
from pathlib import Path
from typing import Callable, Optional, TypeVar, Union

from .files import atomic_path

__all__ = ['new_figure', 'save_png', 'optional_figure']

_logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
Plot = TypeVar('Plot', bound=Callable[..., Optional[Path]])


def new_figure(**kwargs):
    """A ``matplotlib.figure.Figure``; a clear error when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError('Plots need matplotlib: pip install matplotlib') from e
    return Figure(**kwargs)


def save_png(fig, path: PathLike) -> Path:
    """Write ``fig`` as a PNG at ``path`` in one rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=110, bbox_inches='tight')
    return path


def optional_figure(plot: Plot) -> Plot:
    """Decorate a function that draws and saves one figure, so that it cannot end a run.

    Text made inside it is drawn literally: class, folder and model names come from the user's data,
    and ``$x^$`` would otherwise be parsed as (broken) mathtext. Any failure, matplotlib missing
    included, is logged as a warning naming the figure, and the call returns None; callers write
    their results before their figures and leave out the figures that were not drawn.
    """
    @functools.wraps(plot)
    def draw(*args, **kwargs) -> Optional[Path]:
        try:
            import matplotlib

            # Text reads 'text.parse_math' when it is created, so rc_context covers the whole drawing
            with matplotlib.rc_context({'text.parse_math': False}):
                return plot(*args, **kwargs)
        except Exception as e:  # a figure is never worth a run: any failure is reported and skipped
            _logger.warning('figure %s not drawn (%s: %s); the results are written without it',
                            _figure_name(args, kwargs) or plot.__name__, type(e).__name__, e)
            return None

    draw.optional_figure = True
    return draw  # type: ignore[return-value]


def _figure_name(args: tuple, kwargs: dict) -> str:
    """The PNG a plotting call was to write, for the warning (its ``path`` argument, if it has one)."""
    path = kwargs.get('path')
    if path is None:
        path = next((a for a in args if isinstance(a, (str, Path)) and str(a).endswith('.png')), None)
    return str(path) if path is not None else ''
