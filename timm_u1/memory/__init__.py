"""Angle-prototype memories: training-free classification over a frozen backbone, and its baselines."""
from .backbone import BackboneRecord, describe_backbone, extract_features
from .bins import angle_bins
from .build import stream_build
from .memory import AnglePrototypeMemory, build_memory, predict
from .images import image_paths
from .schema import MEMORY_CONFIG, MEMORY_FORMAT, MEMORY_SUBFOLDER, MEMORY_VERSION, MEMORY_WEIGHTS, check_metadata
from .storage import DTYPES, METHODS, MODES, MemoryStorage

__all__ = [
    'DTYPES', 'MEMORY_CONFIG', 'MEMORY_FORMAT', 'MEMORY_SUBFOLDER', 'MEMORY_VERSION', 'MEMORY_WEIGHTS',
    'METHODS', 'MODES', 'AnglePrototypeMemory', 'MemoryStorage', 'angle_bins', 'build_memory', 'predict',
    'stream_build', 'extract_features', 'describe_backbone', 'BackboneRecord', 'image_paths', 'check_metadata',
]
