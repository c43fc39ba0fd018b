"""A run's images: its training and evaluation splits, one class list, what the data is (fingerprints),
and timm's loaders over them."""
import logging
import random
from dataclasses import replace
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import data as image_data  # its functions looked up when called, so a test can record what a run opens
from .config import TrainConfig

__all__ = [
    'RunData', 'SeededItems', 'with_eval_split', 'load_run_data', 'make_run_loaders', 'check_labels', 'check_num_classes',
]

_logger = logging.getLogger(__name__)


class RunData(NamedTuple):
    train: Any  # datasets.Dataset or IterableDataset
    eval: Any
    classes: List[str]
    train_fingerprint: str  # what the split holds: data_fingerprint, or stream_fingerprint of a stream
    eval_fingerprint: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def check_labels(labels: Optional[Sequence[int]], names: Optional[Sequence[str]], what: str = 'dataset') -> int:
    """The number of classes of a labelled dataset, or a clear error if the hue loss cannot use it."""
    if labels is not None and len(labels) == 0:
        raise ValueError(f'The {what} is empty.')
    # an image folder without class sub-folders comes with a "label" column of None
    if labels is None or all(label is None for label in labels):
        raise ValueError(
            f'The {what} has no "label" column; training needs labelled images (an image folder with '
            f'one sub-folder per class, or a dataset with a ClassLabel "label" column).')
    unlabelled = sum(label is None or label < 0 for label in labels)
    if unlabelled:
        raise ValueError(f'The {what} has {unlabelled} unlabelled rows (label None or < 0); drop them or label them.')
    labels = np.asarray(labels)
    num_classes = len(names) if names else int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise ValueError(f'The {what} has label {int(labels.max())} but only {num_classes} class names.')
    return check_num_classes(num_classes, what)


def check_num_classes(num_classes: int, what: str = 'dataset') -> int:
    """``num_classes``, or a clear error if the hue loss cannot use that many."""
    if num_classes < 3:
        raise ValueError(
            f'The {what} has {num_classes} classes; the U(1) hue of C classes needs C >= 3 (class c sits '
            f'at angle 2 pi c / C, and two classes only span a line). Use a dataset with >= 3 classes.')
    return num_classes


def _checked_split(ds: Any, names: Optional[Sequence[str]], streaming: bool, what: str) -> int:
    """The number of classes of a split; a stream's come from its ClassLabel feature (no column is read)."""
    if streaming:
        if names is None:
            check_labels(None, None, what)
        return check_num_classes(len(names), what)
    labels = list(ds['label']) if 'label' in ds.column_names else None
    return check_labels(labels, names, what)


def _fingerprint(ds: Any, source: str, split: str, names: Sequence[str], streaming: bool) -> str:
    return image_data.stream_fingerprint(ds, source, split, names) if streaming else image_data.data_fingerprint(ds)


def _columns(args: TrainConfig) -> Dict[str, Optional[str]]:
    return dict(image_column=args.image_column, label_column=args.label_column)


def with_eval_split(args: TrainConfig) -> TrainConfig:
    """``args`` with the evaluation split chosen (``data.choose_eval_split``) when none was given: the run
    records the split it chose."""
    if args.eval_split is not None:
        return args
    split = image_data.choose_eval_split(args.eval_data or args.data, split_option='--eval-split', **_columns(args))
    return replace(args, eval_split=split)


def load_run_data(args: TrainConfig) -> RunData:
    """Both splits with one class list: the training split's ClassLabel names or sorted string labels.

    The evaluation split (chosen: :func:`with_eval_split`) is encoded with that list by name; a label
    the training split lacks is an error.
    """
    train_ds = image_data.load_image_dataset(args.data, split=args.train_split, streaming=args.streaming,
                                             split_option='--train-split', **_columns(args))
    names = image_data.class_names(train_ds)
    num_classes = _checked_split(train_ds, names, args.streaming, f'training split {args.data}:{args.train_split}')
    names = list(names) if names else [str(c) for c in range(num_classes)]
    eval_source = args.eval_data or args.data
    eval_ds = image_data.load_image_dataset(eval_source, split=args.eval_split, class_names=names,
                                            streaming=args.streaming, split_option='--eval-split', **_columns(args))
    _checked_split(eval_ds, image_data.class_names(eval_ds) if args.streaming else names, args.streaming,
                   f'evaluation split {eval_source}:{args.eval_split}')
    return RunData(train_ds, eval_ds, names,
                   _fingerprint(train_ds, args.data, args.train_split, names, args.streaming),
                   _fingerprint(eval_ds, eval_source, args.eval_split, names, args.streaming))


class SeededItems(torch.utils.data.Dataset):
    """Batches whose random augmentation is drawn from a seed of (run seed, epoch, batch) alone.

    timm's transforms draw from the global Python, NumPy and torch generators. Seeded per batch (the
    loader fetches a batch through ``__getitems__``), and with those generators restored afterwards, a
    batch's augmentation does not depend on when it is loaded (Accelerate's loader fetches one batch
    ahead), nor on loader workers; and loading draws nothing from the generators the training step
    uses (dropout, mixup), so a checkpoint taken between two batches resumes exactly. Per batch, not
    per image: saving and restoring the generators costs ~0.1-0.5 ms.
    """

    def __init__(self, base: torch.utils.data.Dataset, seed: int):
        self.base = base
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list:
        # a batch's first index names it within an epoch: the sampler gives each image once per epoch
        batch_seed = np.random.SeedSequence([self.seed, self.epoch, int(indices[0]), len(indices)]).generate_state(2)
        torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
        try:
            torch.default_generator.manual_seed(int(batch_seed[0]))
            random.seed(int(batch_seed[1]))
            np.random.seed(int(batch_seed[1]))
            return [self.base[int(i)] for i in indices]
        finally:
            torch.set_rng_state(torch_state)
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def make_run_loaders(
        args: TrainConfig, data: RunData, data_config: Dict[str, Any],
) -> Tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    """timm's training transform (with ``--aa``) and evaluation transform over the two splits.

    The training loader drops an incomplete last batch, as timm's train.py does: a batch of one image
    fails BatchNorm at a 1x1 map, and mixup pairs need even batches.
    """
    if not args.streaming and data.train.num_rows < args.batch_size:
        raise ValueError(
            f'The training split has {data.train.num_rows} images, fewer than one batch of --batch-size '
            f'{args.batch_size} (incomplete batches are dropped); pass a smaller --batch-size.')
    train_config = {k: data_config[k] for k in image_data.DATA_CONFIG_KEYS if k in data_config}
    train_loader = image_data.make_loader(
        data.train, train_config, batch_size=args.batch_size, num_workers=args.workers, train=True,
        drop_last=True, seed=args.seed, no_aug=args.no_aug, scale=tuple(args.scale), hflip=args.hflip,
        color_jitter=args.color_jitter, auto_augment=args.aa)
    if not args.streaming:  # a stream is read in its (shuffle-buffer) order; its items have no index
        # its own generator: a loader draws its workers' base seed when an epoch (or a resumed one) starts,
        # which must not move the global stream the training step draws from
        train_loader = torch.utils.data.DataLoader(
            SeededItems(train_loader.dataset, args.seed), batch_size=args.batch_size, shuffle=True,
            num_workers=args.workers, drop_last=True, generator=torch.Generator().manual_seed(args.seed))
    eval_loader = image_data.make_loader(data.eval, data_config, batch_size=args.batch_size, num_workers=args.workers)
    return train_loader, eval_loader
