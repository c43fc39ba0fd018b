"""The image sets embedded in the package's dependencies: no network needed.

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 grey images, 10 classes) as a
  ``datasets.DatasetDict`` with a fixed stratified train / test split.
* ``photos``: every photograph shipped inside scikit-image (``skimage.data``: 8 colour, 10
  greyscale) and scikit-learn (``load_sample_images``: 2), 20 in all (no labels; some have a known
  ImageNet-1k class in ``PHOTO_IMAGENET_CLASSES``).
* ``photo-patches``: 32x32 tiles of those photographs labelled by the photograph they come from,
  test tiles from a region of each photograph that no training tile overlaps.
"""
import functools
import importlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

import datasets

__all__ = [
    'DIGITS', 'PHOTOS', 'PHOTO_PATCHES', 'PHOTO_IMAGENET_CLASSES', 'digits_dataset', 'photos_dataset',
    'build_photo_patches', 'save_dataset_atomically',
]

DIGITS = 'digits'
PHOTOS = 'photos'
PHOTO_PATCHES = 'photo-patches'

# skimage.data colour photographs that ship inside the scikit-image wheel (no pooch download), with
# their files in skimage.data.data_dir. 'cat' is an alias of 'chelsea' and is left out;
# 'motorcycle_left' is the left view of ``stereo_motorcycle()``.
_PHOTO_FILES = {
    'astronaut': 'astronaut.png',
    'chelsea': 'chelsea.png',
    'coffee': 'coffee.png',
    'hubble_deep_field': 'hubble_deep_field.jpg',
    'immunohistochemistry': 'ihc.png',
    'motorcycle_left': 'motorcycle_left.png',
    'retina': 'retina.jpg',
    'rocket': 'rocket.jpg',
}
# greyscale photographs of skimage.data (8-bit 'L' files, converted to RGB on decode). Left out as no
# photographs: horse (a silhouette), page (a scanned page), logo, color, phantom, chessboard_* (drawn
# or synthetic), motorcycle_right (the second view of motorcycle_left's scene), lfw_subset (an array
# of 200 25x25 face crops, a data set rather than photographs).
_GREY_PHOTO_FILES = {
    'brick': 'brick.png',
    'camera': 'camera.png',
    'cell': 'cell.png',
    'clock': 'clock_motion.png',
    'coins': 'coins.png',
    'grass': 'grass.png',
    'gravel': 'gravel.png',
    'microaneurysms': 'microaneurysms.png',
    'moon': 'moon.png',
    'text': 'text.png',
}
# the photographs of sklearn.datasets.load_sample_images (shipped JPEGs)
_SKLEARN_PHOTOS = ('china', 'flower')
_PHOTO_NAMES = tuple(_PHOTO_FILES) + tuple(_GREY_PHOTO_FILES) + _SKLEARN_PHOTOS

# ImageNet-1k classes (0-based, timm order) that count as a correct top-1 for a photo. Only photos
# whose subject is an ImageNet class without doubt are listed; names checked with
# ``timm.data.ImageNetInfo().index_to_description``:
#   chelsea: 281 'tabby, tabby cat', 282 'tiger cat', 285 'Egyptian cat' (Chelsea is a tabby; the
#     three striped domestic-cat classes are the usual ImageNet confusion set)
#   coffee: 504 'coffee mug', 967 'espresso', 968 'cup' (a cup of coffee on a saucer)
#   rocket: 657 'missile', 744 'projectile, missile', 812 'space shuttle' (a Falcon 9 launch;
#     ImageNet has no 'rocket' class, these three are the launch-vehicle classes)
# astronaut (a person), motorcycle_left (a sport motorbike: ImageNet has only 'moped' and
# 'motor scooter'), hubble_deep_field, immunohistochemistry and retina have no such class.
PHOTO_IMAGENET_CLASSES: Dict[str, Tuple[int, ...]] = {
    'chelsea': (281, 282, 285),
    'coffee': (504, 967, 968),
    'rocket': (657, 744, 812),
}

def _require(module: str, extra: str = 'data'):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f'{module} is needed for this data source: pip install "timm_u1[{extra}]"'
        ) from e


@functools.lru_cache(maxsize=4)
def _digits_cached(test_size: float, seed: int) -> datasets.DatasetDict:
    sklearn_datasets = _require('sklearn.datasets')
    model_selection = _require('sklearn.model_selection')
    digits = sklearn_datasets.load_digits()
    # 0..16 intensities -> 0..255 grey levels, rounded so that 16 maps exactly to 255
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    train_idx, test_idx = model_selection.train_test_split(
        index, test_size=test_size, random_state=seed, stratify=labels)
    features = datasets.Features({
        'image': datasets.Image(),
        'label': datasets.ClassLabel(names=[str(i) for i in range(10)]),
    })

    def _split(idx: np.ndarray) -> datasets.Dataset:
        idx = np.sort(idx)  # keep the original order inside a split: deterministic and readable
        return datasets.Dataset.from_dict(
            {'image': [Image.fromarray(pixels[i]) for i in idx], 'label': labels[idx].tolist()},
            features=features,
        )

    return datasets.DatasetDict({'train': _split(train_idx), 'test': _split(test_idx)})


def digits_dataset(test_size: float = 0.25, seed: int = 0) -> datasets.DatasetDict:
    """scikit-learn's digits (1797 8x8 grey images, 10 classes) with a stratified train / test split.

    Built in memory, deterministic for a given ``(test_size, seed)``. Images are PIL mode ``L``,
    8x8, with the original 0..16 intensities scaled to 0..255.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f'test_size must be a fraction in (0, 1), got {test_size}')
    # fresh objects around the cached Arrow tables: set_format / set_transform on them, or dropping a
    # split, must not leak into the next caller's copy
    cached = _digits_cached(float(test_size), int(seed))
    return datasets.DatasetDict({k: v.with_format(None) for k, v in cached.items()})


def _photo_array(name: str) -> np.ndarray:
    skdata = _require('skimage.data')
    if name == 'motorcycle_left':
        return skdata.stereo_motorcycle()[0]
    return getattr(skdata, name)()


@functools.lru_cache(maxsize=1)
def _photos_cached() -> datasets.Dataset:
    skdata = _require('skimage.data')
    images: List[Any] = []
    for name, file in _PHOTO_FILES.items():
        path = Path(str(skdata.data_dir)) / file
        if path.is_file():
            # the shipped JPEG / PNG files are 8-bit RGB (checked against skimage's loaders): referencing
            # them is much faster than re-encoding megapixel arrays
            images.append(str(path))
            continue
        arr = _photo_array(name)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise RuntimeError(f'skimage.data.{name} is not an 8-bit RGB image (shape {arr.shape}, {arr.dtype})')
        images.append(Image.fromarray(arr))
    for name, file in _GREY_PHOTO_FILES.items():
        path = Path(str(skdata.data_dir)) / file
        images.append(str(path) if path.is_file() else Image.fromarray(getattr(skdata, name)()))
    sk_datasets = _require('sklearn.datasets')
    sample = sk_datasets.load_sample_images()
    for name in _SKLEARN_PHOTOS:
        path = next(f for f in sample.filenames if Path(f).stem == name)
        images.append(str(path))
    features = datasets.Features({'image': datasets.Image(mode='RGB'), 'name': datasets.Value('string')})
    return datasets.Dataset.from_dict({'image': images, 'name': list(_PHOTO_NAMES)}, features=features)


def photos_dataset() -> datasets.Dataset:
    """The photographs shipped in scikit-image and scikit-learn (columns ``image``, ``name``; no labels).

    Greyscale ones are decoded as RGB like every other image.

    See ``PHOTO_IMAGENET_CLASSES`` for the ImageNet-1k classes of the photos that have one.
    """
    return _photos_cached().with_format(None)  # a fresh object: see digits_dataset


def build_photo_patches(folder: Path, tile: int = 32, grid: int = 12, test_columns: int = 3) -> Path:
    """Tiles of the scikit-image photographs as a DatasetDict saved to ``folder``.

    Each photograph (converted to RGB) is resized to ``grid * tile`` pixels square and cut into a
    ``grid x grid`` array of non-overlapping tiles; its name is the class. The right-most
    ``test_columns`` columns of tiles are the test split, so test tiles come from a part of the
    picture the model never saw, not from between training tiles.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    if (folder / 'dataset_dict.json').is_file():
        return folder
    photos = photos_dataset()
    names = sorted(set(photos['name']))
    rows: Dict[str, Dict[str, list]] = {s: {'image': [], 'label': []} for s in ('train', 'test')}
    side = grid * tile
    for example in photos:
        image = example['image'].convert('RGB').resize((side, side))
        label = names.index(example['name'])
        for r in range(grid):
            for c in range(grid):
                split = 'test' if c >= grid - test_columns else 'train'
                rows[split]['image'].append(image.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
                rows[split]['label'].append(label)
    features = Features({'image': Image(), 'label': ClassLabel(names=names)})
    dd = DatasetDict({s: Dataset.from_dict(v, features=features) for s, v in rows.items()})
    save_dataset_atomically(dd, folder)
    return folder


def save_dataset_atomically(dd, folder: Path, info: Optional[Dict[str, Any]] = None) -> None:
    """``dd.save_to_disk`` into a temporary folder, then renamed: the folder is complete or absent.

    ``info`` maps file names to JSON objects written beside the dataset (e.g. how it was made).
    """
    import json
    import shutil

    tmp = folder.with_name(folder.name + '.tmp')
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted write
    dd.save_to_disk(str(tmp))
    for name, obj in (info or {}).items():
        (tmp / name).write_text(json.dumps(obj))
    tmp.rename(folder)  # a half-written dataset never sits at the final path
