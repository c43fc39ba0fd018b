"""Image data: the built-in offline sets, loading any source, timm transforms and loaders, splits."""
from .builtin import (
    DIGITS, PHOTO_IMAGENET_CLASSES, PHOTO_PATCHES, PHOTOS, build_photo_patches, digits_dataset, photos_dataset,
    save_dataset_atomically,
)
from .fingerprint import data_fingerprint, stream_fingerprint
from .loading import class_names, load_image_dataset
from .splits import stratified_split
from .transforms import (
    DATA_CONFIG_KEYS, StreamingTransformDataset, TransformDataset, Unreadable, make_loader, resolve_data_config,
    to_rgb,
)

__all__ = [
    'DIGITS', 'PHOTOS', 'PHOTO_PATCHES', 'PHOTO_IMAGENET_CLASSES', 'digits_dataset', 'photos_dataset',
    'build_photo_patches', 'save_dataset_atomically', 'data_fingerprint', 'stream_fingerprint', 'load_image_dataset', 'class_names', 'stratified_split',
    'to_rgb', 'TransformDataset', 'StreamingTransformDataset', 'DATA_CONFIG_KEYS', 'resolve_data_config',
    'Unreadable', 'make_loader',
]
