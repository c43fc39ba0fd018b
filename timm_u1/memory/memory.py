""" Angle-prototype memory: training-free classification over a frozen timm backbone.

docs/math.md, "Angle-prototype memory"; docs/memory.md. :class:`AnglePrototypeMemory` is the one
public object; each concept lives in its own module:

* :mod:`.storage`: what it holds (exact sums, counts, kept vectors), growth and merging;
* :mod:`.classifiers`: the prototype, instance, CL2N and pooled k-NN scores;
* :mod:`.backbone`: the backbone's portable spec, fingerprint check and features;
* :mod:`.evaluation`, :mod:`.images`: accuracy over labelled batches, top-k of image files;
* :mod:`.build`: the resumable, sharded build over a dataset;
* :mod:`.schema`, :mod:`.persistence`: the two files, their checks, and saving them kill-safely.

:func:`build_memory` and :func:`predict` are the one-call uses the ``timm-u1 memory`` commands run.
"""
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..core.knn import DEFAULT_FAISS_THRESHOLD
from ..runs.identity import backbone_fingerprint, check_same_run
from ..runs.stream import CHECKPOINT_EVERY
from . import classifiers, persistence
from .backbone import check_fingerprint, default_spec, describe_backbone, extract_features
from .bins import angle_bins
from .build import BUILD_STATE, stream_build
from .evaluation import evaluate as _evaluate
from .images import image_paths, predict_images as _predict_images
from .schema import (
    MEMORY_CONFIG, MEMORY_FORMAT, MEMORY_SUBFOLDER, MEMORY_VERSION, MEMORY_WEIGHTS, check_metadata,
)
from .storage import DTYPES, METHODS, MODES, MemoryStorage

__all__ = [
    'AnglePrototypeMemory', 'build_memory', 'predict', 'METHODS', 'MODES', 'DTYPES', 'MEMORY_FORMAT',
    'MEMORY_VERSION', 'MEMORY_WEIGHTS', 'MEMORY_CONFIG', 'MEMORY_SUBFOLDER', 'angle_bins',
]

_logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
_check_metadata = check_metadata  # the name timm_u1.publish imported before the split; kept for one release


def _plain_config(config: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A data config with tuples as lists, as it is once saved, so that loaded and built ones compare equal."""
    if config is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


class AnglePrototypeMemory(MemoryStorage):
    """Training-free classifier over frozen backbone features (see docs/memory.md).

    Args:
        class_names, mode, num_bins, centre_radius, k, dtype, faiss_threshold: see :class:`MemoryStorage`.
        backbone: the spec another machine loads the backbone with (``hf-hub:ORG/NAME``, a registry
            name), or the local spec when nothing else is known; ``for_model`` fills these in.
        fingerprint: :func:`backbone_fingerprint` of that backbone.
        layer: feature layer, None for the bottleneck.
        data_config: timm data config of the inputs (input_size, interpolation, mean, std, ...).
        backbone_local: the local folder spec it was built from on this machine, if any.
        base_model: the Hub repo the backbone's weights came from, when known.
    """

    def __init__(
            self,
            class_names: Sequence[str],
            mode: str = 'prototype',
            num_bins: int = 8,
            centre_radius: float = 0.5,
            k: int = 1,
            dtype: torch.dtype = torch.float32,
            backbone: Optional[str] = None,
            fingerprint: Optional[str] = None,
            layer: Optional[str] = None,
            data_config: Optional[Dict[str, Any]] = None,
            faiss_threshold: Optional[int] = DEFAULT_FAISS_THRESHOLD,
            backbone_local: Optional[str] = None,
            base_model: Optional[str] = None,
    ):
        super().__init__(class_names, mode=mode, num_bins=num_bins, centre_radius=centre_radius, k=k, dtype=dtype,
                         faiss_threshold=faiss_threshold)
        self.backbone = backbone
        self.backbone_local = backbone_local
        self.base_model = base_model
        self.fingerprint = fingerprint
        self.layer = layer
        self.data_config = dict(data_config) if data_config else None
        # saved as they are in memory.json: what the memory was built from and how it scored
        self.dataset: Optional[str] = None
        self.metrics: Dict[str, Any] = {}
        self.complete = True  # False only for an unfinished build saved by timm_u1 0.1 (allow_incomplete)
        self.build_progress: Dict[str, Any] = {}

    @classmethod
    def for_model(
            cls,
            model: nn.Module,
            class_names: Sequence[str],
            backbone: Optional[str] = None,
            layer: Optional[str] = None,
            img_size: Optional[int] = None,
            backbone_id: Optional[str] = None,
            **kwargs,
    ) -> 'AnglePrototypeMemory':
        """An empty memory bound to ``model``: its fingerprint, data config and (optional) layer.

        ``backbone`` is the spec that created the model (default: the Hub repo its weights came
        from, else its architecture and tag); ``backbone_id`` (``ORG/NAME``) where others load it
        from, when ``backbone`` is a local folder (see :mod:`.backbone`). ``img_size`` overrides the
        model's input size, and queries must then have that size.
        """
        from timm.data import resolve_model_data_config

        data_config = dict(resolve_model_data_config(model))
        if img_size is not None:
            data_config['input_size'] = (data_config['input_size'][0], img_size, img_size)
        record = describe_backbone(backbone or default_spec(model), model, hub_id=backbone_id)
        return cls(
            class_names, backbone=record.backbone, fingerprint=backbone_fingerprint(model), layer=layer,
            data_config=data_config, backbone_local=record.backbone_local, base_model=record.base_model, **kwargs)

    @property
    def local_backbone(self) -> Optional[str]:
        """The spec to load the backbone with here: the local folder or checkpoint file it was built
        from if it still exists (no download), else :attr:`backbone`."""
        local = self.backbone_local
        if local and Path(local.partition('local-dir:')[2] or local).exists():
            return local
        return self.backbone

    def merge_settings(self) -> Dict[str, Any]:
        """What must match for two memories to merge: backbone, layer, inputs, options and classes."""
        return {'backbone': self.backbone, 'fingerprint': self.fingerprint, 'layer': self.layer,
                'data_config': _plain_config(self.data_config), **super().merge_settings()}

    # ------------------------------------------------------------------------------- building

    def add(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch of labelled images (already transformed, see :meth:`create_transform`)."""
        self.check_backbone(model)
        self.add_features(self._extract(model, images), labels)

    def build(
            self,
            model: nn.Module,
            data: Iterable,
            batch_size: int = 64,
            num_workers: int = 0,
            progress: bool = True,
            save_directory: Optional[PathLike] = None,
            save_every: Optional[float] = CHECKPOINT_EVERY,
            settings: Optional[Dict[str, Any]] = None,
            overwrite: bool = False,
    ) -> 'AnglePrototypeMemory':
        """Stream labelled images through the frozen ``model`` into the memory.

        Args:
            data: a ``datasets.Dataset`` with ``image`` and ``label`` columns (transformed with the
                memory's data config), or an iterable of transformed (images, labels) batches.
            save_directory: with a dataset, build resumably (:func:`.build.stream_build`): the
                build's state is checkpointed there every ``save_every`` seconds, a build started
                again with the same settings, data and weights resumes from it, and the finished
                memory is saved there.
            settings: what else identifies the build, for that resume check.
        """
        from tqdm.auto import tqdm

        self.check_backbone(model)  # once: every batch below goes through the same model
        if save_directory is not None:
            if not hasattr(data, 'select'):
                raise ValueError('A resumable build (save_directory) needs a datasets.Dataset, so that it can '
                                 'restart after the images already added.')
            stream_build(self, model, data, save_directory, settings or self.build_progress.get('settings'),
                         batch_size=batch_size, num_workers=num_workers, save_every=save_every,
                         overwrite=overwrite, progress=progress)
            self.build_progress = {}
            return self
        if hasattr(data, 'select'):
            from ..data import make_loader

            data = make_loader(data, self.data_config, batch_size, num_workers)
        for images, labels in tqdm(data, desc='memory build', unit='batch', disable=not progress):
            self.add_features(self._extract(model, images), labels)
        return self

    @classmethod
    def resume_build(
            cls, folder: PathLike, settings: Dict[str, Any], overwrite: bool = False,
    ) -> Optional['AnglePrototypeMemory']:
        """Deprecated: ``build(model, data, save_directory=folder, settings=...)`` resumes by itself.

        The unfinished build in ``folder`` (one process) if it was started with ``settings``, to be
        continued with ``build(model, data, save_directory=folder)``; None if there is none.
        """
        warnings.warn('AnglePrototypeMemory.resume_build is deprecated (removed in 0.3): build(model, data, '
                      'save_directory=folder, settings=...) resumes an interrupted build by itself.',
                      DeprecationWarning, stacklevel=2)
        folder = Path(folder)
        persistence.settle(folder)
        state = folder / f'{BUILD_STATE}.safetensors'
        if overwrite:
            return None
        if not state.is_file():
            if (folder / MEMORY_CONFIG).is_file():
                raise ValueError(f'{folder} already holds a memory; pass --overwrite (overwrite=True) to replace '
                                 f'it, or write to another folder.')
            return None
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(state), framework='pt') as f:
                identity = json.loads((f.metadata() or {})['identity'])
            saved = identity['memory']
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f'{state} is not a readable build checkpoint ({e}); pass --overwrite to start over.') from e
        check_same_run({k: identity.get(k) for k in settings}, settings, folder,
                       'pass --overwrite (overwrite=True) to start over')
        memory = cls(saved['class_names'], mode=saved['mode'], num_bins=saved['num_bins'],
                     centre_radius=saved['centre_radius'], k=saved['k'], dtype=DTYPES[saved['dtype'].split('.')[-1]],
                     backbone=saved['backbone'], fingerprint=saved['fingerprint'], layer=saved['layer'],
                     data_config=saved['data_config'])
        memory.load_state_dict(load_file(str(state)))
        memory.build_progress = {'settings': {k: v for k, v in identity.items() if k not in (
            'memory', 'data_fingerprint', 'model_fingerprint', 'images', 'batch_size', 'shard')},
            'images_done': memory.num_images}
        return memory

    # --------------------------------------------------------------------------------- queries

    def scores_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class scores of (B, D, H, W) feature maps; larger is better (:mod:`.classifiers`)."""
        return classifiers.scores(self, features, method)

    def predict_proba_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class probabilities: vote shares, or a softmax over -distance for 'cl2n'."""
        method = method or self.mode
        return classifiers.probabilities(self.scores_from_features(features, method), method)

    def predict_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B,) predicted class indices; -1 for an image without any evidence (no votes)."""
        method = method or self.mode
        return classifiers.predictions(self.scores_from_features(features, method), method)

    def predict(self, model: nn.Module, images: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B,) predicted class indices of transformed ``images``."""
        self.check_backbone(model)
        return self.predict_from_features(self._extract(model, images), method)

    def predict_proba(self, model: nn.Module, images: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class probabilities of transformed ``images``."""
        self.check_backbone(model)
        return self.predict_proba_from_features(self._extract(model, images), method)

    def predict_images(
            self, model: nn.Module, paths: Sequence[PathLike], top_k: int = 5, method: Optional[str] = None,
            batch_size: int = 32,
    ) -> List[List[Tuple[str, float]]]:
        """For every image file (folders are expanded), its ``top_k`` (class, probability) pairs, best first."""
        return _predict_images(self, model, image_paths(paths), top_k, method, batch_size)

    def evaluate(
            self, model: nn.Module, loader: Iterable, methods: Optional[Sequence[str]] = None, progress: bool = True,
            per_class: bool = False,
    ) -> Dict[str, Any]:
        """Top-1 accuracy of every method over (images, labels) batches (:func:`.evaluation.evaluate`)."""
        return _evaluate(self, model, loader, methods, progress, per_class)

    # ---------------------------------------------------------------------------------- checks

    def check_backbone(self, model: nn.Module) -> None:
        """Raise if ``model`` is not the backbone this memory was built with."""
        check_fingerprint(model, self.fingerprint, self.backbone)

    def create_transform(self):
        """The timm eval transform the memory's inputs must go through (size, normalisation)."""
        from timm.data import create_transform

        if self.data_config is None:
            raise ValueError('This memory records no data config (it was made from raw features); transform images '
                             'yourself, or create the memory with AnglePrototypeMemory.for_model.')
        return create_transform(**self.data_config, is_training=False)

    def _extract(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.data_config is not None:
            expected = tuple(self.data_config['input_size'])
            if images.dim() != 4 or tuple(images.shape[1:]) != expected:
                raise ValueError(
                    f'Images of shape {tuple(images.shape)} do not match the memory\'s input size '
                    f'{expected} (C, H, W); transform them with memory.create_transform().')
        return extract_features(model, images, self.layer)

    # ----------------------------------------------------------------------------------- files

    def save_pretrained(self, save_directory: PathLike) -> Path:
        """Write ``memory.safetensors`` and ``memory.json`` (its checksum inside), so that a kill at
        any point leaves the old memory or the new one whole (:mod:`.persistence`)."""
        return persistence.save(self, save_directory)

    @classmethod
    def from_pretrained(
            cls,
            name_or_path: PathLike,
            subfolder: Optional[str] = None,
            revision: Optional[str] = None,
            cache_dir: Optional[PathLike] = None,
            allow_incomplete: bool = False,
            faiss_threshold: Optional[int] = DEFAULT_FAISS_THRESHOLD,
    ) -> 'AnglePrototypeMemory':
        """Load a memory from a folder or a Hub repo id (``ORG/NAME``, offline from the cache).

        Without ``subfolder``, a folder (or repo) that holds no ``memory.json`` but a ``memory/``
        folder with one (a memory pushed next to a model) loads from there. Every field of
        ``memory.json`` is checked, and the safetensors file against its size and SHA-256 before it is
        read, then every tensor (:mod:`.schema`).
        """
        folder = persistence.resolve_memory_folder(name_or_path, subfolder, revision, cache_dir)
        return persistence.load_folder(cls, folder, allow_incomplete, faiss_threshold)

    def push_to_hub(self, repo_id: str, **kwargs) -> Any:
        """Upload the memory to the ``memory/`` folder of a Hub repo (e.g. next to its model).

        Keyword arguments go to :func:`timm_u1.io.push.push_folder_to_hub`.
        """
        from ..io.push import push_folder_to_hub

        with tempfile.TemporaryDirectory(prefix='timm-u1-memory-') as tmp:
            self.save_pretrained(tmp)
            return push_folder_to_hub(tmp, repo_id, path_in_repo=MEMORY_SUBFOLDER, **kwargs)

    def __repr__(self) -> str:
        size = f'{self.num_images} images' if self._pooled is not None else 'empty'
        return (
            f'{type(self).__name__}(mode={self.mode!r}, classes={self.num_classes}, bins={self.num_bins}+1, '
            f'k={self.k}, backbone={self.backbone!r}, layer={self.layer!r}, {size})')


def build_memory(
        data: str,
        out: PathLike,
        model: Optional[str] = None,
        split: Optional[str] = 'train',
        mode: str = 'prototype',
        num_bins: int = 8,
        centre_radius: float = 0.5,
        k: int = 1,
        dtype: str = 'float32',
        img_size: Optional[int] = None,
        layer: Optional[str] = None,
        batch_size: int = 64,
        num_workers: int = 0,
        save_every: Optional[float] = CHECKPOINT_EVERY,
        overwrite: bool = False,
        backbone_id: Optional[str] = None,
        progress: bool = True,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
) -> Optional[AnglePrototypeMemory]:
    """Build a memory of ``split`` of ``data`` with the backbone ``model`` into the folder ``out``:
    what ``timm-u1 memory build`` runs (resumable, sharded under ``accelerate launch``; :mod:`.build`).

    ``data`` is what :func:`timm_u1.data.load_image_dataset` reads; ``model`` a spec for
    :func:`timm_u1.io.factory.create_model_from_spec` (default: the offline Lite0); ``image_column`` and
    ``label_column`` choose its columns. Returns the memory on the main process, None on the others.
    """
    from ..data import class_names, load_image_dataset
    from ..io.factory import DEFAULT_MODEL, create_model_from_spec
    from ..runs import RunFolder
    from ..runs.shard import on_main, same_model

    spec = model or DEFAULT_MODEL
    folder = RunFolder(out, '--out')
    on_main(folder.acquire)  # writable and ours before any image or weight is read
    try:
        dataset = load_image_dataset(data, split, split_option='--split', image_column=image_column,
                                     label_column=label_column)
        names = class_names(dataset)
        if names is None:
            raise ValueError(f'{data} ({split}) has no labels; a memory is built from labelled images.')
        backbone = create_model_from_spec(spec)
        same_model(backbone, backbone_fingerprint)  # random initialisations differ: the main process's weights
        memory = AnglePrototypeMemory.for_model(
            backbone, names, backbone=spec, layer=layer, img_size=img_size, backbone_id=backbone_id, mode=mode,
            num_bins=num_bins, centre_radius=centre_radius, k=k, dtype=DTYPES[dtype])
        memory.dataset = f'{data}:{split}'
        settings = {'data': data, 'split': split, 'model': spec, 'img_size': img_size, 'image_column': image_column,
                    'label_column': label_column}
        built = stream_build(memory, backbone, dataset, folder, settings, batch_size=batch_size,
                             num_workers=num_workers, save_every=save_every, overwrite=overwrite, progress=progress)
    finally:
        folder.release()  # held by the main process only
    if built is not None:
        empty = [n for n, c in zip(built.class_names, built.class_counts.tolist()) if c == 0]
        if empty:
            _logger.warning('classes %s have no examples in %s (%s); the memory never predicts them.', empty, data,
                            split)
    return built


def predict(
        paths: Sequence[PathLike],
        memory: Union[AnglePrototypeMemory, PathLike],
        model: Optional[nn.Module] = None,
        top_k: int = 5,
        method: Optional[str] = None,
        batch_size: int = 32,
        subfolder: Optional[str] = None,
) -> List[List[Tuple[str, float]]]:
    """The ``top_k`` (class, probability) pairs of every image file (folders are expanded) by a memory
    (an object, a folder or a Hub repo id), with its own backbone unless ``model`` is given."""
    from ..io.factory import create_model_from_spec

    if not isinstance(memory, AnglePrototypeMemory):
        memory = AnglePrototypeMemory.from_pretrained(memory, subfolder=subfolder)
    paths = image_paths(paths)  # a missing file fails before the backbone is loaded
    model = model if model is not None else create_model_from_spec(memory.local_backbone)
    return _predict_images(memory, model, paths, top_k, method, batch_size)
