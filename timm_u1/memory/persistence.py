""" Saving and loading a memory's two files, consistent under a kill at any point.

``memory.json`` names the SHA-256 of ``memory.safetensors``. A save writes the new pair beside the
old one first (``.memory.next.safetensors``, then ``.memory.next.json``, each atomically), then
renames the weights and, last, the manifest into place. Killed at any point, the folder holds the
old pair whole, or a new manifest whose checksum names new weights that are whole;
:func:`settle` (run by every save and load) finishes the second case and drops the first's leftovers,
so a load finds exactly one whole memory, old or new.
"""
import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from ..data import DATA_CONFIG_KEYS
from ..files import atomic_path, file_sha256, read_json, write_json
from .schema import (
    BUILD_STATE, MEMORY_CONFIG, MEMORY_FORMAT, MEMORY_SUBFOLDER, MEMORY_VERSION, MEMORY_WEIGHTS, check_metadata, check_tensors,
)
from .storage import DTYPES, FIXED_POINT

__all__ = ['save', 'load_folder', 'settle', 'resolve_memory_folder', 'NEXT_WEIGHTS', 'NEXT_CONFIG']

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
NEXT_WEIGHTS = '.memory.next.safetensors'
NEXT_CONFIG = '.memory.next.json'


def _checksum(path: Path) -> str:
    return 'sha256:' + file_sha256(path)


def tensors_of(memory) -> Dict[str, torch.Tensor]:
    """The tensors ``memory.safetensors`` holds (see :mod:`timm_u1.memory.schema`)."""
    tensors = {
        'prototypes': memory.prototypes().contiguous(),
        'prototype_norms': memory.prototype_sums().norm(dim=-1).float(),
        'counts': memory._counts.contiguous(),
        'pooled': memory._pooled.vectors.contiguous(),
        'pooled_labels': memory._labels('pooled_labels', memory._pooled_labels).contiguous(),
    }
    if memory._vectors is not None:
        tensors['vectors'] = memory._vectors.vectors.contiguous()
        tensors['vector_labels'] = memory._labels('vector_labels', memory._vector_labels).contiguous()
    return tensors


def metadata_of(memory) -> Dict[str, Any]:
    """``memory.json`` without the weights' checksum: flat, like a timm pretrained_cfg, so that model
    cards can show it as a table."""
    return {
        'format': MEMORY_FORMAT,
        'version': MEMORY_VERSION,
        'mode': memory.mode,
        'backbone': memory.backbone,
        'backbone_local': memory.backbone_local,
        'base_model': memory.base_model,
        'fingerprint': memory.fingerprint,
        'layer': memory.layer,
        'num_features': memory.num_features,
        'grid_size': list(memory.grid_size),
        **{k: list(v) if isinstance(v, tuple) else v for k, v in (memory.data_config or {}).items()},
        'num_bins': memory.num_bins,
        'centre_radius': memory.centre_radius,
        'k': memory.k,
        'dtype': str(memory.dtype).replace('torch.', ''),
        'class_names': memory.class_names,
        'num_images': memory.num_images,
        'num_vectors': memory.num_vectors,
        'dataset': memory.dataset,
        'metrics': memory.metrics,
        'complete': True,  # kept for readers of format version 1; an unfinished build is a checkpoint now
        'build_progress': {},
    }


def save(memory, folder: PathLike) -> Path:
    """Write ``memory`` into ``folder`` as its two files (see the module docstring)."""
    from safetensors.torch import save_file

    memory._require_data()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settle(folder)
    with atomic_path(folder / NEXT_WEIGHTS) as tmp:
        save_file(tensors_of(memory), str(tmp), metadata={'format': MEMORY_FORMAT})
        checksum, size = _checksum(tmp), tmp.stat().st_size
    write_json(folder / NEXT_CONFIG, {**metadata_of(memory), 'safetensors_sha256': checksum,
                                      'safetensors_size': size})
    os.replace(folder / NEXT_WEIGHTS, folder / MEMORY_WEIGHTS)
    os.replace(folder / NEXT_CONFIG, folder / MEMORY_CONFIG)
    _sync(folder)
    return folder


def _sync(folder: Path) -> None:
    """Make the renames durable (a power cut after a save keeps the new pair)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not every platform opens folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def settle(folder: PathLike) -> None:
    """Finish a save that was killed after its new manifest was whole, or drop its leftovers."""
    folder = Path(folder)
    next_config, next_weights = folder / NEXT_CONFIG, folder / NEXT_WEIGHTS
    if not next_config.is_file():
        next_weights.unlink(missing_ok=True)  # killed before the new manifest: the old pair is whole
        return
    try:
        checksum = read_json(next_config).get('safetensors_sha256')
    except (ValueError, AttributeError):
        checksum = None
    if next_weights.is_file() and _checksum(next_weights) == checksum:
        os.replace(next_weights, folder / MEMORY_WEIGHTS)  # killed before the weights' rename
    elif not ((folder / MEMORY_WEIGHTS).is_file() and _checksum(folder / MEMORY_WEIGHTS) == checksum):
        next_weights.unlink(missing_ok=True)  # a manifest of no whole weights: not written by save()
        next_config.unlink()
        return
    next_weights.unlink(missing_ok=True)
    os.replace(next_config, folder / MEMORY_CONFIG)
    _sync(folder)
    _logger.info('finished an interrupted save of the memory in %s', folder)


def load_folder(cls, folder: Path, allow_incomplete: bool = False, faiss_threshold: Optional[int] = None):
    """The memory saved in ``folder``, every field and tensor checked first."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        settle(folder)
    except OSError:  # a read-only folder: nothing to finish, or the check below names the mismatch
        pass
    meta = read_json(folder / MEMORY_CONFIG)  # a Hub folder was checked against the Hub's hashes
    check_metadata(meta, folder)
    if not meta['complete'] and not allow_incomplete:
        raise ValueError(
            f"{folder} holds a memory whose build stopped after {meta['build_progress'].get('images_done')} "
            f'images; rerun `timm-u1 memory build` with the same arguments to resume it.')
    path = folder / MEMORY_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing; {MEMORY_CONFIG} describes a memory stored there.')
    size = path.stat().st_size
    if size != meta['safetensors_size'] or _checksum(path) != meta['safetensors_sha256']:
        raise ValueError(
            f'{path} is corrupt or truncated: it does not match the size and SHA-256 recorded in '
            f"{MEMORY_CONFIG} ({size} vs {meta['safetensors_size']} bytes). Re-download or rebuild "
            f'the memory.')
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ValueError(f'{path} is not a readable safetensors file ({e}); re-download or rebuild the memory.') from e
    check_tensors(tensors, meta, path)
    data_config = {k: tuple(meta[k]) if isinstance(meta[k], list) else meta[k] for k in DATA_CONFIG_KEYS if k in meta}
    memory = cls(
        meta['class_names'], mode=meta['mode'], num_bins=meta['num_bins'], centre_radius=meta['centre_radius'],
        k=meta['k'], dtype=DTYPES[meta['dtype']], backbone=meta['backbone'], fingerprint=meta['fingerprint'],
        layer=meta['layer'], data_config=data_config or None, faiss_threshold=faiss_threshold,
        backbone_local=meta.get('backbone_local'), base_model=meta.get('base_model'))
    memory.dataset = meta.get('dataset')
    memory.metrics = meta.get('metrics') or {}
    memory.complete = meta['complete']
    memory.build_progress = meta.get('build_progress') or {}
    sums = tensors['prototypes'].double() * tensors['prototype_norms'].double()[..., None]
    state = {'sums': torch.round(sums * FIXED_POINT).long(), 'counts': tensors['counts'],
             'grid_size': torch.tensor(meta['grid_size']), 'pooled': tensors['pooled'],
             'pooled_labels': tensors['pooled_labels']}
    if meta['mode'] == 'instance':
        state.update(vectors=tensors['vectors'], vector_labels=tensors['vector_labels'])
    memory.load_state_dict(state)
    # the saved unit prototypes, not their renormalised float32 x float32 product: a loaded memory
    # answers exactly as the saved one did (until it grows)
    memory._cache['prototypes'] = tensors['prototypes']
    return memory


def resolve_memory_folder(
        name_or_path: PathLike,
        subfolder: Optional[str] = None,
        revision: Optional[str] = None,
        cache_dir: Optional[PathLike] = None,
) -> Path:
    """The folder of a memory: a local folder, or a Hub repo downloaded and verified through the one
    Hub layer (:func:`timm_u1.io.download.download_folder`), as models are. Without ``subfolder``, a
    folder that holds no ``memory.json`` but a ``memory/`` folder with one is looked into."""
    from ..io.download import download_folder
    from ..io.specs import model_source

    source = model_source(name_or_path, revision)
    if source is None:
        raise FileNotFoundError(f"'{name_or_path}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
    if isinstance(source, Path):
        path = source  # checked against the size and SHA-256 memory.json records
        for folder in (path / (subfolder or ''), path / MEMORY_SUBFOLDER):
            try:
                settle(folder)  # a first save killed before its manifest's rename has no memory.json yet
            except OSError:
                pass
    else:
        prefixes = [subfolder.strip('/')] if subfolder else ['', MEMORY_SUBFOLDER]
        patterns = [f'{p}/{n}' if p else n for p in prefixes for n in (MEMORY_CONFIG, MEMORY_WEIGHTS)]
        path = download_folder(source.repo_id, revision=source.revision, cache_dir=cache_dir, allow_patterns=patterns)
    if subfolder:
        path = path / subfolder
    elif not (path / MEMORY_CONFIG).is_file() and (path / MEMORY_SUBFOLDER / MEMORY_CONFIG).is_file():
        path = path / MEMORY_SUBFOLDER
    if not (path / MEMORY_CONFIG).is_file() and list(path.glob(f'{BUILD_STATE}*.safetensors')):
        raise ValueError(f'{path} holds an unfinished memory build; rerun `timm-u1 memory build` with the same '
                         f'arguments to resume it.')
    if not (path / MEMORY_CONFIG).is_file():
        raise FileNotFoundError(
            f'{path} holds no {MEMORY_CONFIG}; a saved memory folder holds {MEMORY_CONFIG} and '
            f'{MEMORY_WEIGHTS} (see AnglePrototypeMemory.save_pretrained).')
    return path
