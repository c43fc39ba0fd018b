"""From a ``datasets`` image dataset to timm-preprocessed tensors: RGB conversion, timm's transforms, loaders."""
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

import datasets

__all__ = [
    'to_rgb', 'TransformDataset', 'StreamingTransformDataset', 'DATA_CONFIG_KEYS', 'resolve_data_config',
    'Unreadable', 'make_loader',
]


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
