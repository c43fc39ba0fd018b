"""Angle-prototype memories: training-free classification over a frozen backbone, and its baselines."""
from .memory import (
    DTYPES, MEMORY_CONFIG, MEMORY_FORMAT, MEMORY_SUBFOLDER, MEMORY_VERSION, MEMORY_WEIGHTS, METHODS, MODES,
    AnglePrototypeMemory, angle_bins,
)

__all__ = [
    'DTYPES', 'MEMORY_CONFIG', 'MEMORY_FORMAT', 'MEMORY_SUBFOLDER', 'MEMORY_VERSION', 'MEMORY_WEIGHTS',
    'METHODS', 'MODES', 'AnglePrototypeMemory', 'angle_bins',
]
