""" Angle-prototype memory: training-free classification over a frozen timm backbone.

docs/math.md, "Angle-prototype memory". Bottleneck vectors of a frozen backbone are L2-normalised and grouped by class
and by image-plane angle bin (``num_bins`` sectors of phi around the grid centre, plus bin 0 for
the centre); a prototype is the normalised mean of its group. At query time every location votes,
with weight E(x, y) = ||I(x, y)||^2, for the class whose prototype in its bin is nearest (cosine);
the prediction is the class with most votes. The ``instance`` mode also keeps every vector and lets
each location vote with its exact k nearest stored vectors instead.

Every memory also keeps one average-pooled feature vector per image, so that the baselines on the
same features come for free: nearest class mean after centring and L2 normalisation (SimpleShot
CL2N) and k-NN of the pooled features. :meth:`AnglePrototypeMemory.evaluate` scores all of them
in one pass over the data.

A saved memory is a folder::

    memory.safetensors   prototypes, prototype_norms, counts, pooled, pooled_labels
                         (+ vectors, vector_labels in instance mode)
    memory.json          format, version, mode, backbone (spec), fingerprint, layer, num_features,
                         grid_size, the timm data config (input_size, interpolation, mean, std,
                         crop_pct, crop_mode), num_bins, centre_radius, k, dtype, class_names,
                         dataset, metrics, and the SHA-256 and size of memory.safetensors

and a memory pushed next to a model lives in the repo's ``memory/`` folder.
"""
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path, file_sha256, read_json, write_json
from ..data import DATA_CONFIG_KEYS
from ..core.hue import image_plane_grid
from ..runs.identity import backbone_fingerprint, check_same_run
from ..core.knn import DEFAULT_FAISS_THRESHOLD, ExactIndex
from ..analysis.probe import capture

__all__ = [
    'AnglePrototypeMemory', 'METHODS', 'MODES', 'DTYPES', 'MEMORY_FORMAT', 'MEMORY_VERSION', 'MEMORY_WEIGHTS',
    'MEMORY_CONFIG', 'MEMORY_SUBFOLDER', 'angle_bins',
]

MEMORY_FORMAT = 'timm_u1.memory'
MEMORY_VERSION = 1
MEMORY_WEIGHTS = 'memory.safetensors'
MEMORY_CONFIG = 'memory.json'
MEMORY_SUBFOLDER = 'memory'  # where a memory lives in a model repo
MODES = ('prototype', 'instance')
# every classifier a memory offers: its two modes and the two pooled-feature baselines
METHODS = ('prototype', 'instance', 'cl2n', 'pooled_knn')
DTYPES = {'float32': torch.float32, 'float16': torch.float16}
_REQUIRED_KEYS = frozenset({
    'mode', 'backbone', 'fingerprint', 'layer', 'num_features', 'grid_size', 'num_bins', 'centre_radius', 'k',
    'dtype', 'class_names', 'complete', 'safetensors_sha256', 'safetensors_size'})

PathLike = Union[str, os.PathLike]


def angle_bins(height: int, width: int, num_bins: int, centre_radius: float = 0.5) -> torch.Tensor:
    """Angle bin of every location of an (H, W) grid, flattened row-major to (H * W,).

    Bin 0 holds the locations closer than ``centre_radius`` grid cells to the centre (the centre cell of
    an odd grid; none of an even one with the default 0.5). Bin j = 1..K holds the other locations
    whose phi is within pi / K of (j - 1) 2 pi / K: sector 1 is centred on the +x axis and the
    sectors go round with phi (clockwise on screen, since y grows downwards). A location exactly on
    a sector edge goes to the next sector. ``num_bins=0`` puts every location in bin 0 (plain class
    prototypes, no angle).
    """
    if num_bins < 0:
        raise ValueError(f'num_bins must be >= 0, got {num_bins}.')
    dx, dy, _, r = image_plane_grid(height, width)
    if num_bins == 0:
        return torch.zeros(height * width, dtype=torch.long)
    # float64 and a tolerance: grid cells often lie exactly on a sector edge (e.g. the diagonals of
    # an even grid for K = 4), and must fall on the same side on every machine
    sector_width = 2 * math.pi / num_bins
    phi = torch.atan2(dy.double(), dx.double())
    sector = torch.floor((phi + sector_width / 2) / sector_width + 1e-9).long() % num_bins
    return torch.where(r < centre_radius, 0, sector + 1).flatten()


def _plain_config(config: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """A data config with tuples as lists, as it is once saved, so that loaded and built ones compare equal."""
    if config is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def _file_sha256(path: Path) -> str:
    return 'sha256:' + file_sha256(path)


def _votes(winners: torch.Tensor, weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Sum ``weights`` (B, L) into (B, C) per-class votes by ``winners`` (B, L) class indices."""
    return torch.zeros(winners.shape[0], num_classes, dtype=torch.float64).scatter_add_(
        1, winners, weights.double())


class AnglePrototypeMemory:
    """Training-free classifier over frozen backbone features (see the module docstring).

    Args:
        class_names: one name per class; more can be added later with :meth:`add_class`.
        mode: 'prototype' keeps per-(class, bin) prototypes; 'instance' also keeps every vector
            for exact k-NN voting (the prototypes stay available).
        num_bins: K, the number of angle sectors (plus the centre bin).
        centre_radius: radius of the centre bin, in grid cells.
        k: neighbours per query in the instance and pooled k-NN classifiers.
        dtype: storage dtype of the kept vectors, torch.float32 or torch.float16.
        backbone: spec string of the backbone the memory is built with (what
            ``timm_u1.io.factory.create_model_from_spec`` resolves); ``for_model`` fills these in.
        fingerprint: :func:`backbone_fingerprint` of that backbone.
        layer: feature layer, None for the bottleneck.
        data_config: timm data config of the inputs (input_size, interpolation, mean, std, ...).
        faiss_threshold: search with faiss (when installed) from this many stored vectors on;
            None searches with the blocked torch search only.
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
    ):
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
        if k < 1:
            raise ValueError(f'k must be >= 1, got {k}.')
        if num_bins < 0:
            raise ValueError(f'num_bins must be >= 0 (0 = no angle bins), got {num_bins}.')
        if dtype not in DTYPES.values():
            raise ValueError(f'dtype must be torch.float32 or torch.float16, got {dtype}.')
        names = [str(n) for n in class_names]
        if len(set(names)) != len(names):
            raise ValueError(f'Class names must be unique, got {names}.')
        self.class_names = names
        self.mode = mode
        self.num_bins = num_bins
        self.centre_radius = centre_radius
        self.k = k
        self.dtype = dtype
        self.backbone = backbone
        self.fingerprint = fingerprint
        self.layer = layer
        self.data_config = dict(data_config) if data_config else None
        self.faiss_threshold = faiss_threshold
        # saved as they are in memory.json: what the memory was built from and how it scored
        self.dataset: Optional[str] = None
        self.metrics: Dict[str, Any] = {}
        self.complete = True  # False while a streamed build is still running (see `memory build`)
        self.build_progress: Dict[str, Any] = {}  # how far that build got, for resuming it
        # set by the first features added
        self.num_features: Optional[int] = None
        self.grid_size: Optional[Tuple[int, int]] = None
        self._bins: Optional[torch.Tensor] = None
        self._sums: Optional[torch.Tensor] = None  # (C, num_bins + 1, D) float64 sums of unit vectors
        self._counts: Optional[torch.Tensor] = None  # (C, num_bins + 1) int64
        self._vectors: Optional[ExactIndex] = None  # instance mode: every unit vector
        self._vector_labels: List[torch.Tensor] = []
        self._pooled: Optional[ExactIndex] = None  # one raw pooled vector per image, for baselines
        self._pooled_labels: List[torch.Tensor] = []
        self._cache: Dict[str, Any] = {}  # derived tensors, dropped on every change

    # ---------------------------------------------------------------- construction and growth

    @classmethod
    def for_model(
            cls,
            model: nn.Module,
            class_names: Sequence[str],
            backbone: Optional[str] = None,
            layer: Optional[str] = None,
            img_size: Optional[int] = None,
            **kwargs,
    ) -> 'AnglePrototypeMemory':
        """An empty memory bound to ``model``: its fingerprint, data config and (optional) layer.

        ``backbone`` is the spec that re-creates the model (default: its architecture and tag);
        ``img_size`` overrides the model's input size, and queries must then have that size.
        """
        from timm.data import resolve_model_data_config

        data_config = dict(resolve_model_data_config(model))
        if img_size is not None:
            data_config['input_size'] = (data_config['input_size'][0], img_size, img_size)
        if backbone is None:
            cfg = getattr(model, 'pretrained_cfg', {}) or {}
            arch, tag = cfg.get('architecture', type(model).__name__), cfg.get('tag')
            backbone = f'{arch}.{tag}' if tag else arch
        return cls(
            class_names, backbone=backbone, fingerprint=backbone_fingerprint(model), layer=layer,
            data_config=data_config, **kwargs)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def counts(self) -> torch.Tensor:
        """(C, num_bins + 1) number of vectors behind each prototype."""
        self._require_data()
        return self._counts.clone()

    @property
    def class_counts(self) -> torch.Tensor:
        """(C,) number of images of each class."""
        if not self._pooled_labels:
            return torch.zeros(self.num_classes, dtype=torch.long)
        return torch.bincount(self._labels('pooled_labels', self._pooled_labels), minlength=self.num_classes)

    @property
    def num_images(self) -> int:
        return len(self._pooled) if self._pooled is not None else 0

    @property
    def methods(self) -> Tuple[str, ...]:
        """The classifiers this memory offers."""
        return tuple(m for m in METHODS if m != 'instance' or self.mode == 'instance')

    def add_class(self, name: str) -> int:
        """Add an (empty) class and return its index; add its images with :meth:`add`."""
        name = str(name)
        if name in self.class_names:
            raise ValueError(f'Class {name!r} is already in the memory (index {self.class_names.index(name)}).')
        self.class_names.append(name)
        if self._sums is not None:
            self._sums = torch.cat([self._sums, self._sums.new_zeros(1, *self._sums.shape[1:])])
            self._counts = torch.cat([self._counts, self._counts.new_zeros(1, self._counts.shape[1])])
        self._cache.clear()
        return self.num_classes - 1

    def add_features(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add (B, D, H, W) feature maps of B labelled images."""
        features = self._check_features(features)
        labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
        if labels.numel() != features.shape[0]:
            raise ValueError(f'{labels.numel()} labels for {features.shape[0]} feature maps.')
        self._check_labels(labels, 'add')
        if self._sums is None:
            self._init_storage()
        vectors, _ = self._unit_vectors(features)  # (B, L, D)
        num_locations = vectors.shape[1]
        group = labels[:, None] * (self.num_bins + 1) + self._bins[None, :]  # (B, L) flat (class, bin)
        flat_sums = self._sums.view(-1, self.num_features)
        flat_sums.index_add_(0, group.flatten(), vectors.reshape(-1, self.num_features).double())
        self._counts.view(-1).index_add_(0, group.flatten(), torch.ones(group.numel(), dtype=torch.long))
        self._pooled.add(features.mean(dim=(2, 3)))
        self._pooled_labels.append(labels)
        if self._vectors is not None:
            self._vectors.add(vectors.reshape(-1, self.num_features))
            self._vector_labels.append(labels.repeat_interleave(num_locations))
        self._cache.clear()

    def merge_settings(self) -> Dict[str, Any]:
        """What must match for two memories to merge: backbone, layer, inputs, options and classes."""
        return {
            'backbone': self.backbone, 'fingerprint': self.fingerprint, 'layer': self.layer,
            'data_config': _plain_config(self.data_config), 'mode': self.mode, 'num_bins': self.num_bins,
            'centre_radius': self.centre_radius, 'k': self.k, 'dtype': self.dtype, 'class_names': self.class_names}

    def merge(self, others: Union['AnglePrototypeMemory', Sequence['AnglePrototypeMemory']]) -> 'AnglePrototypeMemory':
        """Append memories built from the following parts of a dataset (in place; returns self).

        Prototype sums and counts add up; pooled and instance vectors are appended in the order
        given, so memories of consecutive shards merged in shard order equal one memory built over
        the whole dataset (prototype sums up to float64 summation order, vectors exactly).

        Raises:
            ValueError: a memory of another backbone, layer, input size, mode, option, class list or
                feature geometry, naming every difference.
        """
        for other in ([others] if isinstance(others, AnglePrototypeMemory) else others):
            mine, theirs = self.merge_settings(), other.merge_settings()
            if other._sums is not None and self._sums is not None:
                mine['geometry'] = (self.num_features, self.grid_size)
                theirs['geometry'] = (other.num_features, other.grid_size)
            diffs = [f'{k}: {mine[k]!r} here, {theirs[k]!r} there' for k in mine if mine[k] != theirs[k]]
            if diffs:
                raise ValueError(
                    f'Cannot merge memories built with other settings ({"; ".join(diffs)}); merge only the '
                    f'shards of one build (same backbone, layer, input size and options).')
            if other._sums is None:
                continue  # an empty shard
            if self._sums is None:
                self._set_geometry(other.num_features, other.grid_size)
                self._init_storage()
            # out of place: tensors made under torch.inference_mode cannot be updated outside it
            self._sums = self._sums + other._sums
            self._counts = self._counts + other._counts
            self._pooled.add(other._pooled.vectors)
            self._pooled_labels.extend(other._pooled_labels)
            if self._vectors is not None:
                self._vectors.add(other._vectors.vectors)
                self._vector_labels.extend(other._vector_labels)
            self._cache.clear()
        return self

    def _init_storage(self) -> None:
        self._sums = torch.zeros(self.num_classes, self.num_bins + 1, self.num_features, dtype=torch.float64)
        self._counts = torch.zeros(self.num_classes, self.num_bins + 1, dtype=torch.long)
        self._pooled = ExactIndex(self.num_features, self.dtype, self.faiss_threshold)
        if self.mode == 'instance':
            self._vectors = ExactIndex(self.num_features, self.dtype, self.faiss_threshold)

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
            save_every: int = 50,
            settings: Optional[Dict[str, Any]] = None,
    ) -> 'AnglePrototypeMemory':
        """Stream labelled images through the frozen ``model`` into the memory.

        Args:
            data: a ``datasets.Dataset`` with ``image`` and ``label`` columns (transformed with the
                memory's data config), or an iterable of transformed (images, labels) batches.
            save_directory: with a dataset, the unfinished memory is saved there every
                ``save_every`` batches (``complete: false`` and how far it got) and the finished
                one at the end. A memory loaded from such a folder
                (``from_pretrained(folder, allow_incomplete=True)``, or :meth:`resume_build`)
                continues after the images it already holds.
            settings: what identifies the build (data, split, options); saved with the progress
                so that :meth:`resume_build` refuses to continue it with other settings.
        """
        from tqdm.auto import tqdm

        self.check_backbone(model)  # once: every batch below goes through the same model
        if not hasattr(data, 'select'):
            if save_directory is not None or self.build_progress:
                raise ValueError(
                    'A resumable build (save_directory, or a memory loaded from an unfinished build) needs '
                    'a datasets.Dataset, so that it can restart after the images already added.')
            for images, labels in tqdm(data, desc='memory build', unit='batch', disable=not progress):
                self.add_features(self._extract(model, images), labels)
            return self

        from ..data import make_loader

        total = len(data)
        done = int(self.build_progress.get('images_done', 0))
        if self.build_progress and self.build_progress.get('images_total') != total:
            raise ValueError(
                f"This unfinished memory was being built from {self.build_progress.get('images_total')} "
                f'images, and the dataset given has {total}; build from the same dataset, or start a new memory.')
        settings = dict(settings if settings is not None else self.build_progress.get('settings') or {})
        loader = make_loader(data.select(range(done, total)), self.data_config, batch_size, num_workers)
        self.complete = False
        with tqdm(total=total, initial=done, desc='memory build', unit='img', disable=not progress) as bar:
            for step, (images, labels) in enumerate(loader, 1):
                self.add_features(self._extract(model, images), labels)
                done += labels.numel()
                bar.update(labels.numel())
                if save_directory is not None and save_every and step % save_every == 0 and done < total:
                    self.build_progress = {'settings': settings, 'images_done': done, 'images_total': total}
                    self.save_pretrained(save_directory)
        self.complete = True
        self.build_progress = {}
        if save_directory is not None:
            self.save_pretrained(save_directory)
        return self

    @classmethod
    def resume_build(
            cls, folder: PathLike, settings: Dict[str, Any], overwrite: bool = False,
    ) -> Optional['AnglePrototypeMemory']:
        """The unfinished build in ``folder`` if it was started with ``settings``; None if there is
        nothing to resume (no memory there, or ``overwrite``).

        Raises:
            ValueError: ``folder`` holds a finished memory (pass ``overwrite=True`` to replace it).
            ResumeMismatchError: ``folder`` holds an unfinished build with other settings.
        """
        folder = Path(folder)
        if overwrite or not (folder / MEMORY_CONFIG).is_file():
            return None
        meta = read_json(folder / MEMORY_CONFIG)
        if not isinstance(meta, dict):
            raise ValueError(f'{folder / MEMORY_CONFIG} is not a memory description; it is damaged.')
        if meta.get('complete', True) is not False:
            raise ValueError(
                f'{folder} already holds a memory; pass --overwrite (overwrite=True) to replace it, or '
                f'write to another folder.')
        check_same_run((meta.get('build_progress') or {}).get('settings'), settings, folder,
                       'pass --overwrite (overwrite=True) to start over')
        return cls.from_pretrained(folder, allow_incomplete=True)

    # --------------------------------------------------------------------------- queries

    def scores_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class scores of (B, D, H, W) feature maps; larger is better.

        'prototype' and 'instance' give energy-weighted votes, 'pooled_knn' neighbour votes,
        'cl2n' minus the squared distance to the class means. Classes without examples score
        -inf: a memory never predicts a class it has not seen.
        """
        method = method or self.mode
        if method not in self.methods:
            raise ValueError(
                f'Unknown method {method!r} for this {self.mode} memory; choose from {self.methods}.')
        self._require_data()
        features = self._check_features(features)
        scorer = {
            'prototype': self._prototype_scores, 'instance': self._instance_scores,
            'cl2n': self._cl2n_scores, 'pooled_knn': self._pooled_knn_scores,
        }[method]
        scores = scorer(features)
        return scores.masked_fill(self.class_counts[None, :] == 0, -math.inf)

    def predict_proba_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class probabilities: vote shares, or a softmax over -distance for 'cl2n'.

        An image without any evidence (all votes zero, e.g. an all-zero feature map) gets a
        uniform distribution over the classes seen.
        """
        method = method or self.mode
        scores = self.scores_from_features(features, method)
        if method == 'cl2n':
            return scores.softmax(dim=1).float()
        seen = torch.isfinite(scores)
        votes = scores.masked_fill(~seen, 0)
        total = votes.sum(dim=1, keepdim=True)
        uniform = seen.double() / seen.sum(dim=1, keepdim=True)
        return torch.where(total > 0, votes / total.clamp_min(1e-300), uniform).float()

    def predict_from_features(self, features: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B,) predicted class indices; -1 for an image without any evidence (no votes)."""
        scores = self.scores_from_features(features, method)
        prediction = scores.argmax(dim=1)
        if (method or self.mode) != 'cl2n':
            prediction = prediction.masked_fill(scores.clamp_min(0).sum(dim=1) == 0, -1)
        return prediction

    def predict(self, model: nn.Module, images: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B,) predicted class indices of transformed ``images``."""
        self.check_backbone(model)
        return self.predict_from_features(self._extract(model, images), method)

    def predict_proba(self, model: nn.Module, images: torch.Tensor, method: Optional[str] = None) -> torch.Tensor:
        """(B, C) class probabilities of transformed ``images``."""
        self.check_backbone(model)
        return self.predict_proba_from_features(self._extract(model, images), method)

    def evaluate(
            self,
            model: nn.Module,
            loader: Iterable,
            methods: Optional[Sequence[str]] = None,
            progress: bool = True,
            per_class: bool = False,
    ) -> Dict[str, Any]:
        """Top-1 accuracy of every method (default: all the memory offers) over (images, labels)
        batches; one backbone pass serves them all.

        Returns ``{method: accuracy, ..., 'num_images': n}``, and with ``per_class`` also
        ``'per_class': {method: [accuracy of each class, None for a class without images]}``.
        """
        from tqdm.auto import tqdm

        methods = tuple(methods or self.methods)
        self.check_backbone(model)
        correct = {m: torch.zeros(self.num_classes, dtype=torch.long) for m in methods}
        seen = torch.zeros(self.num_classes, dtype=torch.long)
        for images, labels in tqdm(loader, desc='memory eval', unit='batch', disable=not progress):
            labels = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
            self._check_labels(labels, 'evaluate')
            features = self._extract(model, images)
            for method in methods:
                hits = self.predict_from_features(features, method) == labels
                correct[method] += torch.bincount(labels[hits], minlength=self.num_classes)
            seen += torch.bincount(labels, minlength=self.num_classes)
        total = int(seen.sum())
        if total == 0:
            raise ValueError('evaluate got no images.')
        results: Dict[str, Any] = {m: int(correct[m].sum()) / total for m in methods}
        results['num_images'] = total
        if per_class:
            results['per_class'] = {
                m: [int(c) / int(n) if n else None for c, n in zip(correct[m], seen)] for m in methods}
        return results

    # ------------------------------------------------------------------------- checks

    def check_backbone(self, model: nn.Module) -> None:
        """Raise if ``model`` is not the backbone this memory was built with."""
        if self.fingerprint is None:
            raise ValueError(
                'This memory records no backbone fingerprint (it was made from raw features); use '
                'the *_from_features methods, or create it with AnglePrototypeMemory.for_model.')
        found = backbone_fingerprint(model)
        if found != self.fingerprint:
            raise ValueError(
                f"Backbone mismatch: this memory was built with '{self.backbone}' (fingerprint "
                f'{self.fingerprint[:19]}...), but the model given has fingerprint {found[:19]}.... '
                f"Its features are not comparable. Load the memory's backbone "
                f'(timm_u1.io.factory.create_model_from_spec(memory.backbone)) or build a new memory with '
                f'this model.')

    def create_transform(self):
        """The timm eval transform the memory's inputs must go through (size, normalisation)."""
        from timm.data import create_transform
        if self.data_config is None:
            raise ValueError('This memory records no data config; create it with AnglePrototypeMemory.for_model.')
        return create_transform(**self.data_config, is_training=False)

    def _require_data(self) -> None:
        if self._sums is None or int(self._counts.sum()) == 0:
            raise ValueError('The memory is empty; add labelled images (build / add) before querying it.')

    def _check_labels(self, labels: torch.Tensor, action: str) -> None:
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.numel():
            if int(bad.min()) < 0:
                raise ValueError(f'{action} needs labelled images; got label {int(bad.min())} (unlabelled).')
            raise ValueError(
                f'{action}: label {int(bad.max())} is not one of the memory\'s {self.num_classes} classes '
                f'{self.class_names}. Add the class first with memory.add_class(name), then its images.')

    def _check_features(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4:
            raise ValueError(f'Expected (B, D, H, W) feature maps, got shape {tuple(features.shape)}.')
        features = features.detach().to('cpu', torch.float32)
        if not torch.isfinite(features).all():
            raise ValueError(
                'The feature maps hold NaN or inf values; the backbone (or its input) is broken, and its '
                'votes would be meaningless. Check the model weights and the input normalisation.')
        d, h, w = features.shape[1:]
        if self.num_features is None:
            self._set_geometry(d, (h, w))
        elif (d, (h, w)) != (self.num_features, tuple(self.grid_size)):
            raise ValueError(
                f'Feature maps of shape (D, H, W) = {(d, h, w)} do not match the memory\'s '
                f'{(self.num_features, *self.grid_size)}: the images have another size or come from '
                f'another layer. Transform them with memory.create_transform().')
        return features

    def _set_geometry(self, num_features: int, grid_size: Tuple[int, int]) -> None:
        self.num_features, self.grid_size = num_features, tuple(grid_size)
        self._bins = angle_bins(*self.grid_size, self.num_bins, self.centre_radius)

    def _extract(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.data_config is not None:
            expected = tuple(self.data_config['input_size'])
            if images.dim() != 4 or tuple(images.shape[1:]) != expected:
                raise ValueError(
                    f'Images of shape {tuple(images.shape)} do not match the memory\'s input size '
                    f'{expected} (C, H, W); transform them with memory.create_transform().')
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()  # the backbone is frozen: no dropout, BatchNorm running stats
        try:
            with torch.inference_mode():
                return capture(model, images.to(device), self.layer).float().cpu()
        finally:
            model.train(was_training)

    # ---------------------------------------------------------------------- classifiers

    def _unit_vectors(self, features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) L2-normalised location vectors and their (B, L) energies."""
        vectors = features.flatten(2).transpose(1, 2)
        return F.normalize(vectors, dim=-1), vectors.square().sum(-1)

    def prototypes(self) -> torch.Tensor:
        """(C, num_bins + 1, D) unit prototypes; all-zero where a (class, bin) has no vectors.

        Every image adds a vector to every bin that holds a grid location, so a (class, bin) is
        empty only if the class has no images (it is never predicted) or the bin holds no location
        (the centre of an even grid, or more sectors than cells), which no query reaches either.
        """
        self._require_data()
        if 'prototypes' not in self._cache:
            self._cache['prototypes'] = F.normalize(self._sums, dim=-1).float()
        return self._cache['prototypes']

    def _prototype_scores(self, features: torch.Tensor) -> torch.Tensor:
        vectors, energy = self._unit_vectors(features)
        protos = self.prototypes()
        unseen = self.class_counts == 0
        winners = torch.empty(vectors.shape[:2], dtype=torch.long)
        for b in self._bins.unique().tolist():
            where = self._bins == b
            sims = vectors[:, where] @ protos[:, b].T  # (B, L_b, C)
            winners[:, where] = sims.masked_fill(unseen, -math.inf).argmax(dim=-1)
        return _votes(winners, energy, self.num_classes)

    def _instance_scores(self, features: torch.Tensor) -> torch.Tensor:
        vectors, energy = self._unit_vectors(features)
        b, num_locations, d = vectors.shape
        _, idx = self._vectors.search(vectors.reshape(-1, d), self.k)
        neighbour_labels = self._labels('vector_labels', self._vector_labels)[idx]  # (B*L, k)
        weights = (energy.reshape(-1, 1) / idx.shape[1]).expand_as(neighbour_labels)
        return _votes(neighbour_labels.reshape(b, -1), weights.reshape(b, -1), self.num_classes)

    def _pooled_knn_scores(self, features: torch.Tensor) -> torch.Tensor:
        queries = F.normalize(features.mean(dim=(2, 3)), dim=1)
        if 'pooled_unit' not in self._cache:
            unit = ExactIndex(self.num_features, self.dtype, self.faiss_threshold)
            unit.add(F.normalize(self._pooled.vectors.float(), dim=1))
            self._cache['pooled_unit'] = unit
        _, idx = self._cache['pooled_unit'].search(queries, self.k)
        neighbour_labels = self._labels('pooled_labels', self._pooled_labels)[idx]
        return _votes(neighbour_labels, torch.ones_like(neighbour_labels, dtype=torch.float64), self.num_classes)

    def _cl2n_scores(self, features: torch.Tensor) -> torch.Tensor:
        if 'cl2n' not in self._cache:
            pooled = self._pooled.vectors.float()
            mean = pooled.mean(dim=0)
            unit = F.normalize(pooled - mean, dim=1)
            labels = self._labels('pooled_labels', self._pooled_labels)
            sums = torch.zeros(self.num_classes, unit.shape[1]).index_add_(0, labels, unit)
            centroids = sums / self.class_counts.clamp_min(1)[:, None]
            self._cache['cl2n'] = mean, centroids
        mean, centroids = self._cache['cl2n']
        queries = F.normalize(features.mean(dim=(2, 3)) - mean, dim=1)
        return -torch.cdist(queries.double(), centroids.double()).square()

    def _labels(self, key: str, parts: List[torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = torch.cat(parts)
        return self._cache[key]

    # ------------------------------------------------------------------------------ files

    def _tensors(self) -> Dict[str, torch.Tensor]:
        norms = self._sums.norm(dim=-1)
        tensors = {
            'prototypes': self.prototypes().contiguous(),
            'prototype_norms': norms.float(),
            'counts': self._counts.contiguous(),
            'pooled': self._pooled.vectors.contiguous(),
            'pooled_labels': self._labels('pooled_labels', self._pooled_labels).contiguous(),
        }
        if self._vectors is not None:
            tensors['vectors'] = self._vectors.vectors.contiguous()
            tensors['vector_labels'] = self._labels('vector_labels', self._vector_labels).contiguous()
        return tensors

    def _metadata(self, checksum: str, size: int) -> Dict[str, Any]:
        # flat, like a timm pretrained_cfg, so that model cards can show it as a table
        return {
            'format': MEMORY_FORMAT,
            'version': MEMORY_VERSION,
            'mode': self.mode,
            'backbone': self.backbone,
            'fingerprint': self.fingerprint,
            'layer': self.layer,
            'num_features': self.num_features,
            'grid_size': list(self.grid_size),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in (self.data_config or {}).items()},
            'num_bins': self.num_bins,
            'centre_radius': self.centre_radius,
            'k': self.k,
            'dtype': str(self.dtype).replace('torch.', ''),
            'class_names': self.class_names,
            'num_images': self.num_images,
            'num_vectors': len(self._vectors) if self._vectors is not None else None,
            'dataset': self.dataset,
            'metrics': self.metrics,
            'complete': self.complete,
            'build_progress': self.build_progress,
            'safetensors_sha256': checksum,
            'safetensors_size': size,
        }

    def save_pretrained(self, save_directory: PathLike) -> Path:
        """Write ``memory.safetensors`` then ``memory.json`` (its checksum inside), each atomically.

        An interrupted save leaves either the old pair or a JSON whose checksum no longer matches,
        which :meth:`from_pretrained` reports instead of loading.
        """
        from safetensors.torch import save_file

        self._require_data()
        save_directory = Path(save_directory)
        with atomic_path(save_directory / MEMORY_WEIGHTS) as tmp:
            save_file(self._tensors(), str(tmp), metadata={'format': MEMORY_FORMAT})
            checksum, size = _file_sha256(tmp), tmp.stat().st_size
        write_json(save_directory / MEMORY_CONFIG, self._metadata(checksum, size))
        return save_directory

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
        folder with one (a memory pushed next to a model) loads from there. The safetensors file
        is checked against the size and SHA-256 in ``memory.json`` before it is read.
        """
        folder = _resolve_memory_folder(name_or_path, subfolder, revision, cache_dir)
        meta = read_json(folder / MEMORY_CONFIG)  # a Hub folder was checked against the Hub's hashes
        _check_metadata(meta, folder)
        if not meta['complete'] and not allow_incomplete:
            raise ValueError(
                f"{folder} holds a memory whose build stopped after {meta['build_progress'].get('images_done')} "
                f'images; rerun `timm-u1 memory build` with the same arguments to resume it.')
        path = folder / MEMORY_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f'{path} is missing; {MEMORY_CONFIG} describes a memory stored there.')
        size = path.stat().st_size
        if size != meta['safetensors_size'] or _file_sha256(path) != meta['safetensors_sha256']:
            raise ValueError(
                f'{path} is corrupt or truncated: it does not match the size and SHA-256 recorded in '
                f"{MEMORY_CONFIG} ({size} vs {meta['safetensors_size']} bytes). Re-download or rebuild "
                f'the memory.')
        from safetensors.torch import load_file
        tensors = load_file(str(path))

        data_config = {k: tuple(meta[k]) if isinstance(meta[k], list) else meta[k] for k in DATA_CONFIG_KEYS if k in meta}
        memory = cls(
            meta['class_names'], mode=meta['mode'], num_bins=meta['num_bins'], centre_radius=meta['centre_radius'],
            k=meta['k'], dtype=DTYPES[meta['dtype']], backbone=meta['backbone'], fingerprint=meta['fingerprint'],
            layer=meta['layer'], data_config=data_config or None, faiss_threshold=faiss_threshold)
        memory.dataset = meta.get('dataset')
        memory.metrics = meta.get('metrics') or {}
        memory.complete = meta['complete']
        memory.build_progress = meta.get('build_progress') or {}
        memory._restore(tensors, meta['num_features'], tuple(meta['grid_size']), path)
        return memory

    def _restore(
            self, tensors: Dict[str, torch.Tensor], num_features: int, grid_size: Tuple[int, int], path: Path,
    ) -> None:
        c, nb, d = self.num_classes, self.num_bins + 1, num_features
        expected = {'prototypes': (c, nb, d), 'prototype_norms': (c, nb), 'counts': (c, nb)}
        if self.mode == 'instance':
            expected['vector_labels'] = (tensors.get('vectors', torch.empty(0)).shape[0],)
        for name, shape in expected.items():
            if name not in tensors or tuple(tensors[name].shape) != shape:
                found = tuple(tensors[name].shape) if name in tensors else 'missing'
                raise ValueError(f'{path}: tensor {name!r} is {found}, the metadata implies {shape}.')
        self._set_geometry(d, grid_size)
        self._sums = tensors['prototypes'].double() * tensors['prototype_norms'].double()[..., None]
        self._counts = tensors['counts'].long()
        self._pooled = ExactIndex(d, self.dtype, self.faiss_threshold)
        self._pooled.add(tensors['pooled'])
        self._pooled_labels = [tensors['pooled_labels'].long()]
        if self.mode == 'instance':
            self._vectors = ExactIndex(d, self.dtype, self.faiss_threshold)
            self._vectors.add(tensors['vectors'])
            self._vector_labels = [tensors['vector_labels'].long()]

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


def _resolve_memory_folder(
        name_or_path: PathLike,
        subfolder: Optional[str],
        revision: Optional[str],
        cache_dir: Optional[PathLike],
) -> Path:
    """The checked folder of a memory: a local folder, or a Hub repo downloaded and verified
    through the one Hub layer (:func:`timm_u1.io.download.download_folder`), as models are."""
    from ..io.download import download_folder
    from ..io.specs import model_source

    source = model_source(name_or_path, revision)
    if source is None:
        raise FileNotFoundError(f"'{name_or_path}' is neither a local folder nor a Hub repo id of the form ORG/NAME.")
    if isinstance(source, Path):
        path = source  # checked below against the size and SHA-256 memory.json records
    else:
        prefixes = [subfolder.strip('/')] if subfolder else ['', MEMORY_SUBFOLDER]
        patterns = [f'{p}/{n}' if p else n for p in prefixes for n in (MEMORY_CONFIG, MEMORY_WEIGHTS)]
        path = download_folder(source.repo_id, revision=source.revision, cache_dir=cache_dir, allow_patterns=patterns)
    if subfolder:
        path = path / subfolder
    elif not (path / MEMORY_CONFIG).is_file() and (path / MEMORY_SUBFOLDER / MEMORY_CONFIG).is_file():
        path = path / MEMORY_SUBFOLDER
    if not (path / MEMORY_CONFIG).is_file():
        raise FileNotFoundError(
            f'{path} holds no {MEMORY_CONFIG}; a saved memory folder holds {MEMORY_CONFIG} and '
            f'{MEMORY_WEIGHTS} (see AnglePrototypeMemory.save_pretrained).')
    return path


# memory.json fields and the types they must have; a hand-edited or tampered file is named, never half-loaded
_FIELD_TYPES = {
    'mode': str, 'backbone': (str, type(None)), 'fingerprint': (str, type(None)), 'layer': (str, type(None)),
    'num_features': int, 'grid_size': list, 'num_bins': int, 'centre_radius': (int, float), 'k': int, 'dtype': str,
    'class_names': list, 'complete': bool, 'safetensors_sha256': str, 'safetensors_size': int,
    'build_progress': (dict, type(None)), 'metrics': (dict, type(None)),
}


def _check_metadata(meta: Any, folder: Path) -> None:
    if not isinstance(meta, dict) or meta.get('format') != MEMORY_FORMAT:
        raise ValueError(f'{folder / MEMORY_CONFIG} is not a timm_u1 memory (format != {MEMORY_FORMAT!r}).')
    version = meta.get('version', 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f'{folder / MEMORY_CONFIG}: "version" must be an integer, got {version!r}; the file is damaged.')
    if version > MEMORY_VERSION:
        raise ValueError(
            f'{folder} holds a version {meta["version"]} memory; this timm_u1 reads up to version '
            f'{MEMORY_VERSION}. Upgrade timm_u1.')
    missing = _REQUIRED_KEYS - set(meta)
    if missing:
        raise ValueError(f'{folder / MEMORY_CONFIG} lacks {sorted(missing)}; the file is damaged.')

    def bad(key: str, what: str) -> ValueError:
        return ValueError(
            f'{folder / MEMORY_CONFIG}: "{key}" {what}, got {meta[key]!r}; the file is damaged or was edited '
            f'by hand. Rebuild or re-download the memory.')

    for key, kind in _FIELD_TYPES.items():
        if key not in meta:
            continue
        value = meta[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = ' or '.join('null' if k is type(None) else k.__name__ for k in kinds)
            raise bad(key, f'must be {names}')
    if meta['mode'] not in MODES:
        raise bad('mode', f'must be one of {MODES}')
    if meta['dtype'] not in DTYPES:
        raise bad('dtype', f'must be one of {sorted(DTYPES)}')
    names = meta['class_names']
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise bad('class_names', 'must be a list of distinct strings')
    grid = meta['grid_size']
    if len(grid) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid):
        raise bad('grid_size', 'must be two positive integers')
    for key in ('num_features', 'k', 'safetensors_size'):
        if meta[key] < (0 if key == 'safetensors_size' else 1):
            raise bad(key, 'must be positive')
    if meta['num_bins'] < 0:
        raise bad('num_bins', 'must be >= 0')
    if not meta['complete'] and not isinstance(meta.get('build_progress'), dict):
        raise bad('build_progress', 'must describe where an unfinished build stopped')
