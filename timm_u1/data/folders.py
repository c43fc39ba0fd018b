"""Write a split of any source as an image folder, the layout timm's own train.py and validate.py read.

    python -c "from timm_u1.data import write_image_folder as w; w('digits', 'train', 'digits/train'); \\
               w('digits', 'test', 'digits/validation')"
"""
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Union

from timm.utils import natural_key
from tqdm.auto import tqdm

from .loading import class_names, load_image_dataset

__all__ = ['write_image_folder', 'CLASS_LIST_NAME']

_logger = logging.getLogger(__name__)

# the class list, one name a line in the dataset's order: timm's --class-map reads this file
CLASS_LIST_NAME = 'classes.txt'


def write_image_folder(
        source: str,
        split: Optional[str],
        folder: Union[str, os.PathLike],
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
        progress: bool = True,
) -> Path:
    """Write ``split`` of ``source`` as ``folder/CLASS/N.png`` (RGB PNGs), plus ``folder/classes.txt``.

    The folder is written beside its final place and renamed when complete, so an interrupted write
    leaves nothing behind; an existing ``folder`` is refused. timm numbers class folders in natural
    order (``c2`` before ``c10``); when that is not the dataset's order a warning says to pass
    ``--class-map folder/classes.txt`` to timm's scripts.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(f'{folder} exists; remove it or choose another folder to write the images to.')
    ds = load_image_dataset(source, split, image_column=image_column, label_column=label_column)
    names = class_names(ds)
    if names is None:
        raise ValueError(f'{source} ({split}) has no labels; an image folder holds one sub-folder per class.')
    bad = [n for n in names if not n or n in ('.', '..') or '/' in n or os.sep in n]
    if bad:
        raise ValueError(f'class names {bad} of {source} cannot be folder names; rename those classes first.')
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f'.{folder.name}.', suffix='.partial', dir=folder.parent))
    try:
        for name in names:
            (partial / name).mkdir()
        rows = tqdm(ds, total=len(ds), desc=f'writing {folder}', disable=not progress)
        for i, row in enumerate(rows):
            if row['label'] is None or row['label'] < 0:
                raise ValueError(f'row {i} of {source} ({split}) has no label; drop the unlabelled rows first.')
            row['image'].convert('RGB').save(partial / names[row['label']] / f'{i:06d}.png')
        (partial / CLASS_LIST_NAME).write_text(''.join(f'{n}\n' for n in names), encoding='utf-8')
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if sorted(names, key=natural_key) != list(names):
        _logger.warning('timm numbers the class folders of %s in another order than %s does; pass '
                        '--class-map %s to its train.py and validate.py.', folder, source, folder / CLASS_LIST_NAME)
    return folder
