"""Image data: the built-in offline sets, loading any source, image folders for timm's scripts, timm transforms
and loaders, splits."""
from .builtin import (
    DIGITS, PHOTO_CROPS, PHOTO_IMAGENET_CLASSES, PHOTO_PATCHES, PHOTOS, build_photo_crops, build_photo_patches,
    digits_dataset, natural_photos, photos_dataset, save_dataset_atomically,
)
from .fingerprint import data_fingerprint, stream_fingerprint
from .folders import write_image_folder
from .loading import EVAL_SPLITS, choose_eval_split, class_names, load_image_dataset, split_names
from .splits import stratified_split
from .transforms import (
    DATA_CONFIG_KEYS, StreamingTransformDataset, TransformDataset, Unreadable, make_loader, resolve_data_config,
    to_rgb,
)

__all__ = [
    'DIGITS', 'PHOTOS', 'PHOTO_PATCHES', 'PHOTO_IMAGENET_CLASSES', 'digits_dataset', 'photos_dataset',
    'build_photo_patches', 'save_dataset_atomically', 'PHOTO_CROPS', 'natural_photos', 'build_photo_crops', 'data_fingerprint', 'stream_fingerprint', 'load_image_dataset',
    'class_names', 'choose_eval_split', 'split_names', 'EVAL_SPLITS', 'write_image_folder', 'stratified_split',
    'to_rgb', 'TransformDataset', 'StreamingTransformDataset', 'DATA_CONFIG_KEYS', 'resolve_data_config',
    'Unreadable', 'make_loader',
]
