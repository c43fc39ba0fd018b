"""Open any image source as a ``datasets`` dataset with columns ``image`` [+ ``label``].

``load_image_dataset`` opens the built-in sets (:mod:`timm_u1.data.builtin`), ``save_to_disk``
folders, local image folders (class sub-folders become labels) and Hugging Face Hub datasets, and
normalises their columns.
"""
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import datasets

from .builtin import DIGITS, PHOTOS, digits_dataset, photos_dataset

__all__ = ['load_image_dataset', 'class_names']

# column names tried, in order, when no column carries the matching feature type
_IMAGE_COLUMNS = ('image', 'img', 'pixel_values', 'jpg', 'png')
_LABEL_COLUMNS = ('label', 'labels', 'fine_label', 'target', 'cls')


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
    from ..io.errors import HubUnavailableError
    from ..io.limits import hub_call

    try:
        # bounded in time as every Hub call of timm_u1 (timm_u1.io.limits): datasets' requests go
        # through huggingface_hub's shared client
        with hub_call(f'cannot load the Hub dataset {name!r}'):
            if split is None:
                # ask for the split names first so that only the chosen split is downloaded
                split = _default_hub_split(name)
            ds = datasets.load_dataset(name, split=split, streaming=streaming)
    except NotImplementedError as e:
        if not streaming:
            raise
        raise ValueError(f'{name!r} cannot stream ({e}); load it without --streaming.') from e
    except HubUnavailableError as e:
        raise HubUnavailableError(
            f'{e} Or use a local source: {DIGITS!r}, {PHOTOS!r}, a folder written by Dataset.save_to_disk, or an '
            f'image folder with one sub-folder per class; HF_HUB_OFFLINE=1 reads a copy in the Hugging Face cache.'
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
