"""Open any image source as a ``datasets`` dataset with columns ``image`` [+ ``label``].

``load_image_dataset`` opens the built-in sets (:mod:`timm_u1.data.builtin`), ``save_to_disk``
folders, local image folders (class sub-folders become labels) and Hugging Face Hub datasets, and
normalises their columns (the image and label columns are found, or given by name).
``choose_eval_split`` picks the split to evaluate on: the test split when it is labelled, else the
validation split.
"""
import contextlib
import difflib
import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import datasets

from .builtin import DIGITS, PHOTOS, digits_dataset, photos_dataset

__all__ = ['load_image_dataset', 'class_names', 'choose_eval_split', 'split_names', 'EVAL_SPLITS']

_logger = logging.getLogger(__name__)

# column names tried, in order, when no column carries the matching feature type
_IMAGE_COLUMNS = ('image', 'img', 'pixel_values', 'jpg', 'png')
_LABEL_COLUMNS = ('label', 'labels', 'fine_label', 'target', 'cls')

# the evaluation split: a labelled test split first, then the names a validation split goes by
EVAL_SPLITS = ('test', 'validation', 'val', 'valid', 'dev', 'eval', 'evaluation')

# The folder names datasets' imagefolder reads as each split. datasets has no public table of them
# (they live in datasets.data_files' private patterns), so they are repeated here.
_SPLIT_FOLDERS = {
    'train': ('train', 'training'),
    'validation': ('validation', 'valid', 'val', 'dev'),
    'test': ('test', 'testing', 'eval', 'evaluation'),
}


def _pick_split(dd, split: Optional[str], source: str, split_option: Optional[str] = None):
    splits = list(dd.keys())
    if split is not None:
        if split not in dd:
            raise ValueError(_missing_split(source, split, splits, split_option))
        return dd[split]
    if 'train' in dd:
        return dd['train']
    if len(splits) == 1:
        return dd[splits[0]]
    raise ValueError(f'{source!r} has several splits {splits} and none is "train"; pass split=<one of them>.')


def _missing_split(source: str, split: str, splits: List[str], split_option: Optional[str]) -> str:
    """The one-line error for a split the source lacks, suggesting the split (and option) to pass."""
    if split in EVAL_SPLITS:  # asked for an evaluation split: one of its kind, else the one the source has
        kind = [[name, *aliases] for name, aliases in _SPLIT_FOLDERS.items() if split == name or split in aliases]
        suggestion = next((s for s in [*sum(kind, []), *EVAL_SPLITS] if s in splits), None)
    else:
        suggestion = next(iter(difflib.get_close_matches(split, splits, n=1, cutoff=0.5)), None)
    where = ''
    if suggestion is not None and split in _SPLIT_FOLDERS.get(suggestion, ()) and Path(source, split).is_dir():
        where = f' (datasets reads the folder {split}/ as split {suggestion!r})'
    if suggestion is None:
        fix = f'pass one of them{f" with {split_option}" if split_option else ""}'
    elif split_option:
        fix = f'pass {split_option} {suggestion}'
    else:
        fix = f'choose split {suggestion!r}'
    return f'{source!r} has no split {split!r}; its splits are {splits}{where}: {fix}.'


def _is_saved_dataset(path: Path) -> bool:
    # the marker files written by Dataset.save_to_disk / DatasetDict.save_to_disk
    return (path / 'dataset_dict.json').is_file() or (
        (path / 'state.json').is_file() and (path / 'dataset_info.json').is_file())


def _looks_like_path(source: str) -> bool:
    return source.startswith(('/', './', '../', '~', '.\\', '..\\')) or os.path.isabs(source) or (
        os.sep != '/' and os.sep in source)


@contextlib.contextmanager
def _hub_errors(name: str) -> Iterator[None]:
    """Bound the block's Hub requests in time as every Hub call of timm_u1 (:mod:`timm_u1.io.limits`;
    datasets' requests go through huggingface_hub's shared client), and turn a Hub that cannot be used
    into one error that names the local alternatives."""
    from ..io.errors import HubUnavailableError
    from ..io.limits import hub_call

    try:
        with hub_call(f'{name!r} is not a local directory, and loading it from the Hub failed'):
            yield
    except HubUnavailableError as e:
        raise HubUnavailableError(
            f'{e} Use a local source instead: {DIGITS!r}, {PHOTOS!r}, a folder written by Dataset.save_to_disk, '
            f'or an image folder with one sub-folder per class; or set HF_HUB_OFFLINE=1 to read a copy already '
            f'in the Hugging Face cache.') from e


def _load_hub(name: str, split: Optional[str], streaming: bool = False, split_option: Optional[str] = None):
    with _hub_errors(name):
        # the split names first, so that only the chosen split is downloaded
        splits = datasets.get_dataset_split_names(name)
        if split is None:
            split = _default_hub_split(name, splits)
        elif split not in splits:
            raise ValueError(_missing_split(name, split, splits, split_option))
        try:
            ds = datasets.load_dataset(name, split=split, streaming=streaming)
        except NotImplementedError as e:
            if not streaming:
                raise
            raise ValueError(f'{name!r} cannot stream ({e}); load it without --streaming.') from e
    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        ds = _pick_split(ds, split, name, split_option)
    return ds


def _default_hub_split(name: str, splits: List[str]) -> str:
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


def _given_column(ds, column: str, role: str, source: str) -> str:
    """``column``, checked to be one of the dataset's columns (``role``: 'image' or 'label')."""
    if column not in ds.features:
        raise ValueError(
            f'{source!r} has no column {column!r}; its columns are {list(ds.features)}: pass one of them as '
            f'--{role}-column ({role}_column=).')
    return column


def _is_class_column(feat: Any) -> bool:
    return isinstance(feat, datasets.ClassLabel) or (
        isinstance(feat, datasets.Value) and feat.dtype.startswith(('string', 'large_string', 'int', 'uint')))


def _label_column(ds, label_column: Optional[str], source: str) -> Optional[str]:
    """The label column: ``label_column`` if given (it must hold class labels), else found by type and name."""
    if label_column is not None:
        feat = ds.features[_given_column(ds, label_column, 'label', source)]
        if not _is_class_column(feat):
            raise ValueError(
                f'column {label_column!r} of {source!r} is {feat}, not a class label (a ClassLabel, string or '
                f'integer column); pass another --label-column.')
        return label_column
    found = _find_column(ds, datasets.ClassLabel, _LABEL_COLUMNS)
    # e.g. float targets or multi-label lists are not class labels: the dataset is then unlabelled
    return found if found is not None and _is_class_column(ds.features[found]) else None


def _normalise_columns(
        ds: Union[datasets.Dataset, datasets.IterableDataset],
        source: str,
        names: Optional[Sequence[str]] = None,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Rename the image column to ``image`` and the label column (if any) to ``label``.

    ``names``: the run's class list; the labels are encoded with it (see :func:`_align_labels`).
    Without it a string column is encoded with its sorted values and an integer column ``c`` as class ``str(c)``,
    which needs a full read of the column, so a streamed dataset needs a ClassLabel column then.
    ``image_column`` / ``label_column`` name the columns to use; a column already called ``image`` /
    ``label`` then makes way for them.
    """
    streaming = isinstance(ds, datasets.IterableDataset)
    if ds.features is None:
        raise ValueError(
            f'{source!r} does not declare its features, so its image and label columns are unknown without '
            f'reading it; load it without --streaming.')
    if image_column is not None:
        image_col = _given_column(ds, image_column, 'image', source)
    else:
        image_col = _find_column(ds, datasets.Image, _IMAGE_COLUMNS)
    if image_col is None:
        raise ValueError(
            f'{source!r} has no image column (columns: {list(ds.features)}); expected a datasets.Image feature '
            f'or a column named one of {list(_IMAGE_COLUMNS)}. Pass its name as --image-column.')
    if not isinstance(ds.features[image_col], datasets.Image):
        feat = ds.features[image_col]
        if isinstance(feat, datasets.Value) and feat.dtype in ('string', 'large_string', 'binary', 'large_binary'):
            ds = ds.cast_column(image_col, datasets.Image())  # file paths or encoded bytes
        else:
            raise ValueError(
                f'column {image_col!r} of {source!r} is {feat}, not an image; pass another --image-column, or '
                f'cast it with ds.cast_column({image_col!r}, datasets.Image()).')
    label_col = _label_column(ds, label_column, source)
    if label_col is not None and not isinstance(ds.features[label_col], datasets.ClassLabel) and names is None:
        feat = ds.features[label_col]
        if streaming:
            raise ValueError(
                f'label column {label_col!r} of {source!r} is {feat}: its class names are known only after '
                f'reading every row, which streaming avoids. Load it without --streaming, or store the labels '
                f'as a datasets.ClassLabel column.')
        if feat.dtype.startswith(('string', 'large_string')):
            ds = ds.class_encode_column(label_col)  # names sorted, as datasets does
        else:
            values = ds.unique(label_col)
            lo, hi = min(values), max(values)
            if lo < 0:
                raise ValueError(f'label column {label_col!r} of {source!r} has negative values ({lo}).')
            ds = ds.cast_column(label_col, datasets.ClassLabel(names=[str(i) for i in range(hi + 1)]))
    if label_col is not None and names is not None:
        ds = _align_labels(ds, label_col, list(names), source)
    for col, want, given in ((image_col, 'image', image_column), (label_col, 'label', label_column)):
        if col is None or col == want:
            continue
        if want in ds.features:
            if given is None:
                raise ValueError(
                    f'{source!r} uses column {col!r} as {want} but also has a column named {want!r}; pass '
                    f'the column to use as --{want}-column.')
            ds = ds.remove_columns(want)  # the column asked for replaces the one of that name
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
    # Not datasets.Dataset.align_labels_with_mapping: it matches names case-insensitively (classes 'Cat'
    # and 'cat' become one), takes ClassLabel columns only (not string or integer labels), fails on the
    # -1 of unlabelled rows and with a bare KeyError on an unknown class, and IterableDataset lacks it.
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
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        split_option: Optional[str] = None,
) -> Union[datasets.Dataset, datasets.IterableDataset]:
    """Open an image dataset by name or path, with columns normalised to ``image`` [+ ``label``].

    ``source`` is resolved in this order:

    * ``'digits'``: scikit-learn digits, split ``'train'`` (default) or ``'test'``.
    * ``'photos'``: the skimage colour photographs (one split, no labels).
    * a folder written by ``DatasetDict.save_to_disk``, or by ``Dataset.save_to_disk``: a single
      Dataset is the source's one split, ``'train'``.
    * a local image folder (``imagefolder``); class sub-folders become labels (one sub-folder: one class).
      Split folders (``train/``, ``val/``, ``test/``) are splits; one without class sub-folders (an
      unlabelled ``test/``) leaves the labels of the others alone.
    * otherwise a Hugging Face Hub dataset name (needs the Hub, or its local cache).

    For a multi-split source and ``split=None``, ``'train'`` is used if present, else the only split.
    A dataset without a label column is returned as is (``class_names`` gives None for it).

    Args:
        class_names: the run's class list (the training split's): labels are encoded with it, by name,
            so that every split of a run shares one encoding; a label outside it is an error naming it.
        streaming: a ``datasets.IterableDataset`` that reads rows as they are iterated, for datasets
            larger than memory (Hub datasets, image folders, save_to_disk folders and digits stream).
        image_column: the column of images (default: the first ``datasets.Image`` column, or one
            named like an image column); it becomes ``image``.
        label_column: the column of class labels, e.g. ``'coarse_label'`` of CIFAR-100 (default: the
            first ClassLabel column, ``fine_label`` before others, or one named like a label); it
            becomes ``label``.
        split_option: the command-line option that names ``split`` (e.g. ``'--eval-split'``), for the
            error that suggests the split to pass when ``split`` is missing.
    """
    ds = _open_split(source, split, streaming, split_option)
    if streaming and isinstance(ds, datasets.Dataset):
        ds = ds.to_iterable_dataset()  # rows are read (and decoded) as they are iterated
    return _normalise_columns(ds, source, class_names, image_column, label_column)


def _open_split(source: str, split: Optional[str], streaming: bool, split_option: Optional[str] = None):
    """The split of ``source`` as stored, before its columns are normalised."""
    if not isinstance(source, str) or not source:
        raise ValueError(f'source must be a non-empty string, got {source!r}')
    if source == DIGITS:
        return _pick_split(digits_dataset(), split or 'train', DIGITS, split_option)
    if source == PHOTOS:
        if streaming:
            raise ValueError(f'{PHOTOS!r} (eight embedded photographs) cannot stream; load it without --streaming.')
        if split not in (None, 'train'):
            raise ValueError(f'{PHOTOS!r} has one split ("train"), not {split!r}.')
        return photos_dataset()
    path = Path(source).expanduser()
    if path.is_dir():
        if not _is_saved_dataset(path):
            _check_folder_entries(path)
            return _load_image_folder(path, split, streaming, split_option)
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            return _pick_split(loaded, split, source, split_option)
        if split in (None, 'train'):
            return loaded
        raise ValueError(
            f'{source!r} holds a single Dataset, which is its one split "train", not {split!r}. '
            f'Save a DatasetDict with both splits, or take the evaluation images from another '
            f'source (timm-u1 train --eval-data SOURCE).')
    _refuse_local_non_folder(source, path)
    return _load_hub(source, split, streaming, split_option)


def _refuse_local_non_folder(source: str, path: Path) -> None:
    """A file, or a path to nothing, is an error: only a name that is no path is a Hub dataset."""
    if path.exists():
        raise ValueError(
            f'{source!r} is a file; pass a folder of images, a save_to_disk folder, '
            f'{DIGITS!r}, {PHOTOS!r} or a Hub dataset name.')
    if _looks_like_path(source):
        raise FileNotFoundError(
            f'no such directory: {source!r}. Pass an existing image folder or save_to_disk folder, '
            f'{DIGITS!r} or {PHOTOS!r}.')


def _check_folder_entries(path: Path) -> None:
    """Name what datasets' imagefolder would fail on deep inside (a file name that is not UTF-8) or
    skip without a word (a symlink loop, a dangling link), before it reads the folder."""
    skipped = []
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root, name)
            try:
                name.encode('utf-8')
            except UnicodeEncodeError:
                raise ValueError(
                    f'{str(entry)!r} has a name that is not UTF-8 (bytes {os.fsencode(name)!r}); datasets reads '
                    f'UTF-8 names only. Rename it to a UTF-8 name.') from None
            if entry.is_symlink() and (not entry.exists() or Path(root).resolve().is_relative_to(entry.resolve())):
                skipped.append(str(entry))
    if skipped:
        _logger.warning('%s: skipped %d symlink(s) that lead nowhere or back up the tree: %s', path, len(skipped),
                        ', '.join(skipped[:20]) + (' ...' if len(skipped) > 20 else ''))


def _load_image_folder(path: Path, split: Optional[str], streaming: bool = False, split_option: Optional[str] = None):
    try:
        loaded = datasets.load_dataset('imagefolder', data_dir=str(path), streaming=streaming)
        if not _has_labels(loaded):
            own = _split_folder(path, loaded, split)
            if own is not None:
                # datasets infers the labels from the class folders of every split at once, so one split
                # without class folders (an unlabelled test/) drops them from all; a split's own folder keeps them
                return _load_image_folder(own, None, streaming)
            # datasets infers labels from two or more class folders only; one class folder is one class
            labelled = datasets.load_dataset('imagefolder', data_dir=str(path), drop_labels=False, streaming=streaming)
            names = class_names(next(iter(labelled.values())))
            if names and len(names) == 1 and names[0] not in labelled and names[0] != path.name:
                loaded = labelled
            elif names and any('\\' in n for n in names) and _images_at_one_depth(path):
                loaded = labelled  # datasets counts a backslash in a class folder's name as a folder level
    except (FileNotFoundError, ValueError) as e:
        # datasets raises these for a folder without any image file
        raise ValueError(
            f'{str(path)!r} is neither a save_to_disk folder nor a folder of images ({e}). Put the images '
            f'in one sub-folder per class (e.g. {path}/cat/1.jpg), or pass another source.') from e
    return _pick_split(loaded, split, str(path), split_option)


def _has_labels(loaded) -> bool:
    return any('label' in (d.features or {}) for d in loaded.values())


def _split_folder(path: Path, loaded, split: Optional[str]) -> Optional[Path]:
    """The folder of ``split`` (default: the split ``_pick_split`` takes), when ``path`` has split folders."""
    if len(loaded) < 2:
        return None
    if split is None:
        split = 'train' if 'train' in loaded else None
    if split not in loaded:
        return None  # _pick_split names the splits there are
    for name in (split, *_SPLIT_FOLDERS.get(split, ())):
        if (path / name).is_dir():
            return path / name
    return None


def split_names(source: str) -> List[str]:
    """The names of the splits of ``source`` (any source :func:`load_image_dataset` opens)."""
    if source == DIGITS:
        return list(digits_dataset())
    if source == PHOTOS:
        return ['train']
    path = Path(source).expanduser()
    if path.is_dir() and _is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        return list(loaded) if isinstance(loaded, datasets.DatasetDict) else ['train']
    if path.is_dir():  # streaming: the file list only, nothing converted
        return list(datasets.load_dataset('imagefolder', data_dir=str(path), streaming=True))
    _refuse_local_non_folder(source, path)
    with _hub_errors(source):
        return datasets.get_dataset_split_names(source)


def choose_eval_split(
        source: str,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        split_option: Optional[str] = None,
) -> str:
    """The split to evaluate on: the first of :data:`EVAL_SPLITS` that ``source`` has and that is labelled.

    ImageNet-like sources have an unlabelled test split (labels -1, or a test/ folder without class
    sub-folders): their validation split is chosen then. A split counts as labelled when its first row
    has a label, which streaming reads without loading the split. The choice is logged.
    """
    splits = split_names(source)
    unlabelled = []
    for split in (s for s in EVAL_SPLITS if s in splits):
        if _first_row_labelled(source, split, image_column, label_column):
            why = f" (its {', '.join(repr(u) for u in unlabelled)} split has no labels)" if unlabelled else ''
            other = f'; {split_option} NAME evaluates on another' if split_option else ''
            _logger.info('%s: evaluating on split %r%s%s.', source, split, why, other)
            return split
        unlabelled.append(split)
    found = f"its {', '.join(repr(u) for u in unlabelled)} split has no labels" if unlabelled else \
        f'its splits are {splits}'
    raise ValueError(
        f'{source!r} has no labelled evaluation split ({found}): pass '
        f'{f"{split_option} NAME" if split_option else "the split to evaluate on"}, or take the evaluation images '
        f'from another source (timm-u1 train --eval-data SOURCE).')


def _first_row_labelled(source: str, split: str, image_column: Optional[str], label_column: Optional[str]) -> bool:
    # a stream reads one row, not the split (ImageNet's test split is 100 000 unlabelled images)
    try:
        ds = _open_split(source, split, streaming=source != PHOTOS)
    except ValueError as e:
        if 'cannot stream' not in str(e):
            raise
        ds = _open_split(source, split, streaming=False)  # a Hub dataset whose loader cannot stream
    column = _label_column(ds, label_column, source)
    if column is None:
        return False
    row = next(iter(ds.select_columns([column])), None)
    value = None if row is None else row[column]
    return value is not None and value != '' and not (isinstance(value, int) and value < 0)


def _images_at_one_depth(path: Path) -> bool:
    """Whether every image file lies the same number of folders below ``path`` (class folders, maybe in splits)."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    extensions = {e.lower() for e in ImageFolder.EXTENSIONS}
    depths = {len(p.relative_to(path).parts) for p in path.rglob('*') if p.suffix.lower() in extensions}
    return len(depths) == 1


def class_names(ds: Union[datasets.Dataset, datasets.IterableDataset]) -> Optional[List[str]]:
    """Class names from the ``label`` ClassLabel feature, or None when the dataset has no labels."""
    feat = ds.features.get('label') if ds.features is not None else None
    if isinstance(feat, datasets.ClassLabel):
        return list(feat.names)
    return None
