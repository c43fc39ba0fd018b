"""Classify image files with a memory: the top-k classes of each, with their scores."""
import os
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ['IMAGE_SUFFIXES', 'image_paths', 'predict_images']

PathLike = Union[str, os.PathLike]
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


def image_paths(inputs: Sequence[PathLike]) -> List[Path]:
    """The files given, with every folder replaced by the image files under it (sorted)."""
    paths: List[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f'{path} holds no image files ({", ".join(IMAGE_SUFFIXES)}); name image files or '
                                 f'folders of them.')
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f'{path}: no such image file or folder.')
    return paths


def _load(path: Path, transform) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    from ..data import to_rgb

    try:
        with Image.open(path) as image:
            return transform(to_rgb(image))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f'{path} is not a readable image ({type(e).__name__}: {e}).') from e


def predict_images(
        memory,
        model: nn.Module,
        paths: Sequence[PathLike],
        top_k: int = 5,
        method: Union[str, None] = None,
        batch_size: int = 32,
) -> List[List[Tuple[str, float]]]:
    """For every image file, its ``top_k`` (class name, probability) pairs, best first.

    The images go through the memory's own transform (:meth:`create_transform`); ``method`` is one
    of ``memory.methods`` (default: the memory's mode); probabilities as in ``predict_proba``.
    """
    if top_k < 1:
        raise ValueError(f'top_k must be >= 1, got {top_k}.')
    memory.check_backbone(model)
    transform = memory.create_transform()
    results: List[List[Tuple[str, float]]] = []
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        images = torch.stack([_load(p, transform) for p in paths[start:start + batch_size]])
        proba = memory.predict_proba_from_features(memory._extract(model, images), method)
        scores, index = proba.topk(min(top_k, memory.num_classes), dim=1)
        results.extend([(memory.class_names[i], float(s)) for s, i in zip(row_s.tolist(), row_i.tolist())]
                       for row_s, row_i in zip(scores, index))
    return results
