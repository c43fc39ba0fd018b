"""What a dataset holds, as a short string: the data part of a run's identity.

A run that resumes (training, analysis, a memory build) must notice that the images changed even
when their names and labels did not. :func:`data_fingerprint` hashes, row by row, the label and
what the image column refers to:

* images stored in the dataset (``save_to_disk`` folders, Hub datasets, the built-in sets): their
  bytes;
* images referenced by path (local image folders): the path, size and modification time of each
  file, so a folder of a million images costs a million ``stat`` calls, not a million reads. A file
  replaced by one of the same size with its modification time forged back is not noticed.

A streamed dataset cannot be hashed without reading it: its fingerprint is its source, split,
classes and declared size (:func:`stream_fingerprint`).
"""
import hashlib
import json
import os
from typing import Optional, Sequence, Union

import numpy as np

import datasets

__all__ = ['data_fingerprint', 'stream_fingerprint']

_BATCH = 1024


def data_fingerprint(ds: datasets.Dataset, image_column: str = 'image', label_column: str = 'label') -> str:
    """``data:`` and a hex digest of the rows of ``ds`` (label and image content or file identity), in order."""
    if isinstance(ds, datasets.IterableDataset):
        raise TypeError('data_fingerprint reads a map-style dataset; use stream_fingerprint for a streamed one.')
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps({'rows': ds.num_rows, 'features': ds.features.to_dict()}, sort_keys=True,
                             default=str).encode())
    if isinstance(ds.features.get(image_column), datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))  # references, not decoded pixels
    columns = [c for c in (label_column, image_column) if c in ds.column_names]
    for batch in ds.select_columns(columns).with_format('arrow').iter(batch_size=_BATCH):
        if label_column in batch.column_names:
            digest.update(np.asarray(batch[label_column].to_pylist(), dtype=np.int64).tobytes())
        if image_column in batch.column_names:
            for image in batch[image_column].to_pylist():
                digest.update(_image_identity(image))
    return 'data:' + digest.hexdigest()


def _image_identity(image) -> bytes:
    if isinstance(image, dict) and image.get('bytes') is not None:
        return b'b' + hashlib.blake2b(image['bytes'], digest_size=16).digest()
    if isinstance(image, dict) and image.get('path'):
        path = image['path']
        try:
            st = os.stat(path)
        except OSError:  # reading it will fail with the file's name; the identity just records its absence
            return f'p{path}\0missing'.encode()
        return f'p{path}\0{st.st_size}\0{st.st_mtime_ns}'.encode()
    return b'v' + json.dumps(image, sort_keys=True, default=str).encode()


def stream_fingerprint(
        ds: datasets.IterableDataset, source: str, split: Optional[str], class_names: Optional[Sequence[str]] = None,
) -> str:
    """``stream:`` and a hash of what names a streamed split: source, split, classes and declared size."""
    splits = getattr(getattr(ds, 'info', None), 'splits', None) or {}
    size: Union[int, None] = splits[split].num_examples if split in splits else None
    key = json.dumps({'source': source, 'split': split, 'classes': list(class_names or []), 'n': size}, sort_keys=True)
    return 'stream:' + hashlib.sha256(key.encode()).hexdigest()[:32]
