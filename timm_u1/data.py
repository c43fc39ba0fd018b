"""Image data sources shared by the analysis, memory and training tools.

Two sources are embedded and need no network (the offline sources of docs/lite0.md):

* ``digits``: scikit-learn's ``load_digits`` (1797 8x8 grey images, 10 classes) as a
  ``datasets.DatasetDict`` with a fixed stratified train / test split.
* ``photos``: every photograph shipped inside scikit-image (``skimage.data``: 8 colour, 10
  greyscale) and scikit-learn (``load_sample_images``: 2), 20 in all (no labels; some have a known
  ImageNet-1k class in ``PHOTO_IMAGENET_CLASSES``).

``load_image_dataset`` also opens ``save_to_disk`` folders, local image folders (class
sub-folders become labels) and Hugging Face Hub datasets, and normalises their columns to
``image`` (and ``label`` when there is one). ``TransformDataset`` / ``make_loader`` turn any of
them into timm-preprocessed tensors.
"""
import functools
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

import datasets

__all__ = [
    'DIGITS', 'PHOTOS', 'PHOTO_IMAGENET_CLASSES', 'digits_dataset', 'photos_dataset', 'load_image_dataset',
    'class_names', 'to_rgb', 'TransformDataset', 'StreamingTransformDataset', 'DATA_CONFIG_KEYS', 'resolve_data_config', 'Unreadable',
    'make_loader', 'stratified_split',
]

DIGITS = 'digits'
PHOTOS = 'photos'

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

# column names tried, in order, when no column carries the matching feature type
_IMAGE_COLUMNS = ('image', 'img', 'pixel_values', 'jpg', 'png')
_LABEL_COLUMNS = ('label', 'labels', 'fine_label', 'target', 'cls')


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


def _pick_split(dd, split: Optional[str], source: str):
    splits = list(dd.keys())
    if split is not None:
        if split not in dd:
            raise ValueError(f'{source!r} has no split {split!r}; its splits are {splits}. Pass one of them.')
        return dd[split]
    if 'train' in dd:
        return dd['train']
    if len(splits) == 1:
        return dd[splits[0]]
    raise ValueError(f'{source!r} has several splits {splits} and none is "train"; pass split=<one of them>.')


def _is_saved_dataset(path: Path) -> bool:
    # the marker files written by Dataset.save_to_disk / DatasetDict.save_to_disk
    return (path / 'dataset_dict.json').is_file() or (
        (path / 'state.json').is_file() and (path / 'dataset_info.json').is_file())


def _looks_like_path(source: str) -> bool:
    return source.startswith(('/', './', '../', '~', '.\\', '..\\')) or os.path.isabs(source) or (
        os.sep != '/' and os.sep in source)


def _load_hub(name: str, split: Optional[str], streaming: bool = False):
    hub_errors: Tuple[type, ...] = (ConnectionError,)
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
        hub_errors += (LocalEntryNotFoundError, OfflineModeIsEnabled)
    except ImportError:  # older huggingface_hub: ConnectionError still covers the common case
        pass
    try:
        if split is None:
            # ask for the split names first so that only the chosen split is downloaded
            split = _default_hub_split(name)
        ds = datasets.load_dataset(name, split=split, streaming=streaming)
    except NotImplementedError as e:
        if not streaming:
            raise
        raise ValueError(f'{name!r} cannot stream ({e}); load it without --streaming.') from e
    except hub_errors as e:
        raise ConnectionError(
            f'{name!r} is not a local directory and the Hugging Face Hub cannot be reached to load it ({e}). '
            f'Use a local source instead: {DIGITS!r}, {PHOTOS!r}, a folder written by Dataset.save_to_disk, '
            f'or an image folder with one sub-folder per class; or set HF_DATASETS_OFFLINE=1 / HF_HUB_OFFLINE=1 '
            f'to read a copy already in the Hugging Face cache.'
        ) from e
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        ds = _pick_split(ds, split, name)
    return ds


def _default_hub_split(name: str) -> str:
    splits = datasets.get_dataset_split_names(name)
    if 'train' in splits:
        return 'train'
    if len(splits) == 1:
        return splits[0]
    raise ValueError(f'{name!r} has several splits {splits} and none is "train"; pass split=<one of them>.')


def _find_column(ds: datasets.Dataset, feature_type: type, names: Tuple[str, ...]) -> Optional[str]:
    feats = ds.features
    typed = [c for c, f in feats.items() if isinstance(f, feature_type)]
    for name in names:  # a conventional name wins among columns of the right type (cifar100: fine_label)
        if name in typed:
            return name
    if typed:
        return typed[0]
    for name in names:
        if name in feats:
            return name
    return None


def _normalise_columns(
        ds: Union[datasets.Dataset, datasets.IterableDataset],
        source: str,
        names: Optional[Sequence[str]] = None,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Rename the image column to ``image`` and the label column (if any) to ``label``.

    ``names``: the run's class list; the labels are encoded with it (see :func:`_align_labels`).
    Without it a string column is encoded with its sorted values and an integer column ``c`` as class ``str(c)``,
    which needs a full read of the column, so a streamed dataset needs a ClassLabel column then.
    """
    streaming = isinstance(ds, datasets.IterableDataset)
    if ds.features is None:
        raise ValueError(
            f'{source!r} does not declare its features, so its image and label columns are unknown without '
            f'reading it; load it without --streaming.')
    image_col = _find_column(ds, datasets.Image, _IMAGE_COLUMNS)
    if image_col is None:
        raise ValueError(
            f'{source!r} has no image column (columns: {list(ds.features)}); expected a datasets.Image feature '
            f'or a column named one of {list(_IMAGE_COLUMNS)}. Rename its image column to "image".')
    if not isinstance(ds.features[image_col], datasets.Image):
        feat = ds.features[image_col]
        if isinstance(feat, datasets.Value) and feat.dtype in ('string', 'large_string', 'binary', 'large_binary'):
            ds = ds.cast_column(image_col, datasets.Image())  # file paths or encoded bytes
        else:
            raise ValueError(
                f'column {image_col!r} of {source!r} is {feat}, not an image; cast it with '
                f'ds.cast_column({image_col!r}, datasets.Image()) or store PIL images in it.')
    label_col = _find_column(ds, datasets.ClassLabel, _LABEL_COLUMNS)
    if label_col is not None and not isinstance(ds.features[label_col], datasets.ClassLabel):
        feat = ds.features[label_col]
        if not (isinstance(feat, datasets.Value) and feat.dtype.startswith(('string', 'large_string', 'int', 'uint'))):
            label_col = None  # e.g. float targets or multi-label lists: not a class label
        elif names is None and streaming:
            raise ValueError(
                f'label column {label_col!r} of {source!r} is {feat}: its class names are known only after '
                f'reading every row, which streaming avoids. Load it without --streaming, or store the labels '
                f'as a datasets.ClassLabel column.')
        elif names is None and feat.dtype.startswith(('string', 'large_string')):
            ds = ds.class_encode_column(label_col)  # names sorted, as datasets does
        elif names is None:
            values = ds.unique(label_col)
            lo, hi = min(values), max(values)
            if lo < 0:
                raise ValueError(f'label column {label_col!r} of {source!r} has negative values ({lo}).')
            ds = ds.cast_column(label_col, datasets.ClassLabel(names=[str(i) for i in range(hi + 1)]))
    if label_col is not None and names is not None:
        ds = _align_labels(ds, label_col, list(names), source)
    for col, want in ((image_col, 'image'), (label_col, 'label')):
        if col is None or col == want:
            continue
        if want in ds.features:
            raise ValueError(
                f'{source!r} uses column {col!r} as {want} but also has a column named {want!r}; '
                f'remove or rename one of them first.')
        ds = ds.rename_column(col, want)
    return ds


def _align_labels(
        ds: Union[datasets.Dataset, datasets.IterableDataset],
        col: str,
        names: List[str],
        source: str,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Encode the label column with ``names``, the run's one class list, by class name.

    A string column is looked up by value, an integer column ``c`` as class ``str(c)`` and a ClassLabel
    column by its own names, so a split that lacks a class, or lists its classes in another order,
    still gets the indices of the training split. A label not in ``names`` is an error naming it (for a
    streamed dataset, when its row is read).
    """
    feat = ds.features[col]
    target = datasets.ClassLabel(names=names)
    if isinstance(feat, datasets.ClassLabel) and list(feat.names) == names:
        return ds
    index = {n: i for i, n in enumerate(names)}
    own = list(feat.names) if isinstance(feat, datasets.ClassLabel) else None

    def name_of(value: Any) -> Any:
        if value is None or (own is not None and value < 0):
            return None  # unlabelled rows stay unlabelled; check_labels reports them
        return own[value] if own is not None else str(value)

    def unknown_error(unknown: List[str]) -> ValueError:
        shown = ', '.join(repr(u) for u in unknown[:10]) + (' ...' if len(unknown) > 10 else '')
        return ValueError(
            f'{source!r} has labels {shown} that the training split does not have (its {len(names)} classes: '
            f'{names[:10]}{" ..." if len(names) > 10 else ""}). Remove those rows, or train on data that has them.')

    if isinstance(ds, datasets.Dataset):
        values = [name_of(v) for v in ds.unique(col)]
        unknown = sorted({v for v in values if v is not None and v not in index})
        if unknown:
            raise unknown_error(unknown)
        if own is None:  # cast in memory: no cache file written next to the user's data
            if not feat.dtype.startswith(('string', 'large_string')):
                ds = ds.cast_column(col, datasets.Value('string'))
            return ds.cast_column(col, target)

    def remap(batch: Dict[str, list]) -> Dict[str, list]:
        out = []
        for v in batch[col]:
            v = name_of(v)
            if v is not None and v not in index:
                raise unknown_error([v])
            out.append(None if v is None else index[v])
        return {col: out}

    features = ds.features.copy()
    features[col] = target
    return ds.map(remap, batched=True, features=features)


def load_image_dataset(
        source: str,
        split: Optional[str] = None,
        class_names: Optional[Sequence[str]] = None,
        streaming: bool = False,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Open an image dataset by name or path, with columns normalised to ``image`` [+ ``label``].

    ``source`` is resolved in this order:

    * ``'digits'``: scikit-learn digits, split ``'train'`` (default) or ``'test'``.
    * ``'photos'``: the skimage colour photographs (one split, no labels).
    * a folder written by ``DatasetDict.save_to_disk``, or by ``Dataset.save_to_disk``: a single
      Dataset is the source's one split, ``'train'``.
    * a local image folder (``imagefolder``); class sub-folders become labels (one sub-folder: one class).
    * otherwise a Hugging Face Hub dataset name (needs the Hub, or its local cache).

    For a multi-split source and ``split=None``, ``'train'`` is used if present, else the only split.
    A dataset without a label column is returned as is (``class_names`` gives None for it).

    Args:
        class_names: the run's class list (the training split's): labels are encoded with it, by name,
            so that every split of a run shares one encoding; a label outside it is an error naming it.
        streaming: a ``datasets.IterableDataset`` that reads rows as they are iterated, for datasets
            larger than memory (Hub datasets, image folders, save_to_disk folders and digits stream).
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f'source must be a non-empty string, got {source!r}')
    if source == DIGITS:
        ds = _pick_split(digits_dataset(), split or 'train', DIGITS)
    elif source == PHOTOS:
        if streaming:
            raise ValueError(f'{PHOTOS!r} (eight embedded photographs) cannot stream; load it without --streaming.')
        if split not in (None, 'train'):
            raise ValueError(f'{PHOTOS!r} has one split ("train"), not {split!r}.')
        ds = photos_dataset()
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            if _is_saved_dataset(path):
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict):
                    ds = _pick_split(loaded, split, source)
                elif split in (None, 'train'):
                    ds = loaded
                else:
                    raise ValueError(
                        f'{source!r} holds a single Dataset, which is its one split "train", not {split!r}. '
                        f'Save a DatasetDict with both splits, or take the evaluation images from another '
                        f'source (timm-u1 train --eval-data SOURCE).')
            else:
                ds = _load_image_folder(path, split, streaming)
        elif path.exists():
            raise ValueError(
                f'{source!r} is a file; pass a folder of images, a save_to_disk folder, '
                f'{DIGITS!r}, {PHOTOS!r} or a Hub dataset name.')
        elif _looks_like_path(source):
            raise FileNotFoundError(
                f'no such directory: {source!r}. Pass an existing image folder or save_to_disk folder, '
                f'{DIGITS!r} or {PHOTOS!r}.')
        else:
            ds = _load_hub(source, split, streaming)
    if streaming and isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset()  # rows are read (and decoded) as they are iterated
    return _normalise_columns(ds, source, class_names)


def _load_image_folder(path: Path, split: Optional[str], streaming: bool = False):
    try:
        loaded = datasets.load_dataset('imagefolder', data_dir=str(path), streaming=streaming)
        if not any('label' in (d.features or {}) for d in loaded.values()):
            # datasets infers labels from two or more class folders only; one class folder is one class
            labelled = datasets.load_dataset('imagefolder', data_dir=str(path), drop_labels=False, streaming=streaming)
            names = class_names(next(iter(labelled.values())))
            if names and len(names) == 1 and names[0] not in labelled and names[0] != path.name:
                loaded = labelled
    except (FileNotFoundError, ValueError) as e:
        # datasets raises these for a folder without any image file
        raise ValueError(
            f'{str(path)!r} is neither a save_to_disk folder nor a folder of images ({e}). Put the images '
            f'in one sub-folder per class (e.g. {path}/cat/1.jpg), or pass another source.') from e
    return _pick_split(loaded, split, str(path))


def class_names(ds: Union[datasets.Dataset, datasets.IterableDataset]) -> Optional[List[str]]:
    """Class names from the ``label`` ClassLabel feature, or None when the dataset has no labels."""
    feat = ds.features.get('label') if ds.features is not None else None
    if isinstance(feat, datasets.ClassLabel):
        return list(feat.names)
    return None


def to_rgb(img: Any) -> Image.Image:
    """Convert a PIL image (any mode) or an HxW[xC] array to an 8-bit RGB PIL image.

    Transparent images are composited on black; 16-bit and float images are rescaled, not clipped.
    (``datasets.Image(mode="RGB")`` is PIL's plain ``convert``, which clips a 16-bit white to 255 of
    65535 grey levels and drops alpha onto whatever the transparent pixels hold.)
    """
    if isinstance(img, torch.Tensor):
        img = img.numpy()
    if isinstance(img, np.ndarray):
        arr = img
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)  # CHW -> HWC
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.dtype != np.uint8:
            arr = _to_uint8(arr.astype(np.float64), 255.0 if arr.dtype.kind == 'f' and arr.max() <= 1.0 else None)
        img = Image.fromarray(arr)
    if not isinstance(img, Image.Image):
        raise TypeError(f'expected a PIL image or an array, got {type(img).__name__}')
    mode = img.mode
    if mode == 'RGB':
        return img
    if mode == 'P' and 'transparency' in img.info:
        img, mode = img.convert('RGBA'), 'RGBA'
    if mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La'):
        rgba = img.convert('RGBA')
        black = Image.new('RGBA', rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert('RGB')
    if mode.startswith('I;16') or mode in ('I', 'F'):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith('I;16'):
            scale = 255.0 / 65535.0
        elif mode == 'F':
            scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        else:  # 32-bit 'I': 16-bit PNGs open in this mode with some Pillow versions
            scale = 255.0 / 65535.0 if arr.size and arr.max() > 255 else 1.0
        return Image.fromarray(_to_uint8(arr, scale)).convert('RGB')
    return img.convert('RGB')  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _to_uint8(arr: np.ndarray, scale: Optional[float]) -> np.ndarray:
    if scale is None:  # integer arrays wider than 8 bit: 16-bit range if needed
        scale = 255.0 / 65535.0 if arr.size and arr.max() > 255 else 1.0
    return np.rint(arr * scale).clip(0, 255).astype(np.uint8)


class TransformDataset(torch.utils.data.Dataset):
    """A ``datasets.Dataset`` as ``(tensor, label)`` items for a DataLoader.

    Every image is converted to RGB (``to_rgb``) before ``transform``. ``label`` is -1 when the dataset
    has no ``label`` column. With ``return_index`` the items are ``(tensor, label, index)``.
    Picklable, so it works with DataLoader workers.
    """

    def __init__(
            self,
            ds: datasets.Dataset,
            transform: Optional[Callable[[Image.Image], Any]] = None,
            return_index: bool = False,
    ):
        if 'image' not in ds.column_names:
            raise ValueError(
                f'dataset has no "image" column (columns: {ds.column_names}); open it with '
                f'timm_u1.data.load_image_dataset, which normalises the columns.')
        self.ds = ds
        self.transform = transform
        self.return_index = return_index
        self.has_labels = 'label' in ds.column_names

    def __len__(self) -> int:
        return len(self.ds)

    def _describe(self, index: int) -> str:
        # where the undecodable image comes from: the stored path, if the dataset kept one
        try:
            raw = self.ds.cast_column('image', datasets.Image(decode=False))[index]['image']
            path = raw.get('path') if isinstance(raw, dict) else None
        except Exception:  # describing must never hide the original error
            path = None
        return f'row {index}' + (f' (file {path!r})' if path else '')

    def __getitem__(self, index: int):
        index = int(index)
        if index < 0:
            index += len(self.ds)
        try:
            row = self.ds[index]
            img = to_rgb(row['image'])
            img.load()
        except IndexError:
            raise
        except Exception as e:
            raise RuntimeError(
                f'cannot decode the image at {self._describe(index)}: {type(e).__name__}: {e}. '
                f'Remove or replace that image (ds.select / ds.filter) and retry.') from e
        x = self.transform(img) if self.transform is not None else img
        label = row['label'] if self.has_labels else None
        label = -1 if label is None else int(label)
        if self.return_index:
            return x, label, index
        return x, label


class StreamingTransformDataset(torch.utils.data.IterableDataset):
    """A streamed ``datasets.IterableDataset`` as ``(tensor, label)`` items, like :class:`TransformDataset`.

    Rows are read and decoded as they are iterated; ``set_epoch`` reshuffles a shuffled stream.
    DataLoader workers split the stream by its shards (``datasets`` does this itself).
    """

    def __init__(self, ds: datasets.IterableDataset, transform: Optional[Callable[[Image.Image], Any]] = None):
        if 'image' not in (ds.features or {}):
            raise ValueError('streamed dataset has no "image" column; open it with timm_u1.data.load_image_dataset.')
        self.ds = ds
        self.transform = transform
        self.has_labels = 'label' in ds.features

    def set_epoch(self, epoch: int) -> None:
        self.ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[Tuple[Any, int]]:
        for n, row in enumerate(self.ds):
            try:
                img = to_rgb(row['image'])
                img.load()
            except Exception as e:
                raise RuntimeError(
                    f'cannot decode the image of streamed row {n}: {type(e).__name__}: {e}.') from e
            label = row['label'] if self.has_labels else None
            yield (self.transform(img) if self.transform is not None else img), (-1 if label is None else int(label))


# the keys of a timm data config that decide how an image becomes a tensor: the one list used by
# training, analysis, memories and exports
DATA_CONFIG_KEYS = ('input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode')


def resolve_data_config(model_or_data_config: Union[torch.nn.Module, Dict[str, Any]]) -> Dict[str, Any]:
    """The :data:`DATA_CONFIG_KEYS` of a timm model (``timm.data.resolve_model_data_config``) or of a
    data-config dict (missing keys take timm's defaults)."""
    import timm.data

    if isinstance(model_or_data_config, torch.nn.Module):
        cfg = timm.data.resolve_model_data_config(model_or_data_config)
    elif isinstance(model_or_data_config, dict):
        cfg = timm.data.resolve_data_config(args=dict(model_or_data_config))
    else:
        raise TypeError(
            f'model_or_data_config must be a timm model or a data-config dict, '
            f'got {type(model_or_data_config).__name__}')
    return {k: cfg[k] for k in DATA_CONFIG_KEYS if k in cfg}


class Unreadable(NamedTuple):
    """Stands in for an image that could not be decoded; the message names its row and file."""
    message: str


class _SkipUnreadable(torch.utils.data.Dataset):
    """A :class:`TransformDataset` whose undecodable images become :class:`Unreadable` instead of raising."""

    def __init__(self, base: TransformDataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        try:
            return self.base[index]
        except RuntimeError as e:  # TransformDataset's decode error, which names the row and file
            return Unreadable(str(e))


def _collate_readable(items: list):
    """(images or None, labels or None, messages of the unreadable images): one bad file must not
    end a long run."""
    from torch.utils.data import default_collate

    good = [it for it in items if not isinstance(it, Unreadable)]
    images, labels = default_collate(good) if good else (None, None)
    return images, labels, [it.message for it in items if isinstance(it, Unreadable)]


def make_loader(
        ds: Union[datasets.Dataset, datasets.IterableDataset],
        model_or_data_config: Union[torch.nn.Module, Dict[str, Any]],
        batch_size: int = 32,
        num_workers: int = 0,
        train: bool = False,
        shuffle: Optional[bool] = None,
        skip_unreadable: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        **transform_kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A DataLoader of ``(images, labels)`` with timm's eval (or ``train``) transforms for a model.

    Args:
        model_or_data_config: a timm model or a data-config dict (see :func:`resolve_data_config`).
        train: timm's training transform (random-resized crop, flip, colour jitter); its options
            (``scale``, ``hflip``, ``color_jitter``, ``no_aug``, ...) come as ``transform_kwargs``.
        shuffle: defaults to ``train``.
        skip_unreadable: batches become ``(images or None, labels or None, messages)``, where the
            messages name the images that could not be decoded and were left out.
        seed: the shuffle seed of a streamed dataset (``ds.shuffle(seed, buffer_size=1000)``, reshuffled
            per epoch by ``loader.dataset.set_epoch``); a map-style dataset's order is the sampler's.
    """
    import timm.data

    cfg = resolve_data_config(model_or_data_config)
    transform = timm.data.create_transform(**cfg, is_training=train, **transform_kwargs)
    shuffle = train if shuffle is None else shuffle
    if isinstance(ds, datasets.IterableDataset):
        if skip_unreadable:
            raise ValueError('skip_unreadable works on map-style datasets; load the dataset without streaming.')
        if shuffle:
            ds = ds.shuffle(seed=seed, buffer_size=1000)  # a shuffle buffer: the order a stream can have
        return torch.utils.data.DataLoader(
            StreamingTransformDataset(ds, transform), batch_size=batch_size, num_workers=num_workers,
            drop_last=drop_last)
    dataset: torch.utils.data.Dataset = TransformDataset(ds, transform)
    if skip_unreadable:
        dataset = _SkipUnreadable(dataset)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=False,
        collate_fn=_collate_readable if skip_unreadable else None,
    )


def stratified_split(
        labels: np.ndarray, val_fraction: float, shots: Optional[int] = None, seed: int = 0,
) -> Tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: a fixed stratified validation split (the same for every seed), then ``shots``
    training images per class drawn with ``seed`` from the rest (all of it for ``shots=None``)."""
    fixed = np.random.default_rng(0)
    train, val = [], []
    for c in np.unique(labels):
        idx = fixed.permutation(np.flatnonzero(labels == c))
        k = max(1, int(round(val_fraction * len(idx))))
        val.append(idx[:k])
        train.append(idx[k:])
    if shots is not None:
        rng = np.random.default_rng(seed)
        short = [c for c in train if len(c) < shots]
        if short:
            raise ValueError(f'{shots} shots per class, but a class has only {min(map(len, short))} '
                             f'non-validation training images; use fewer shots.')
        train = [rng.choice(c, size=shots, replace=False) for c in train]
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
