"""How a figure is written in a report table: 3 significant digits, '-' for a missing value."""
import math
from typing import Any

__all__ = ['format_value']


def format_value(x: Any, digits: int = 3) -> str:
    """A figure for a report table: 3 significant digits, '-' for a missing or NaN value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return '-'
    if isinstance(x, float):
        return f'{x:.{digits}g}'
    return str(x)
