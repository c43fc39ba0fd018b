""" What an angle-prototype memory holds, and how it grows and merges.

Per (class, angle bin): the sum of the L2-normalised location vectors and their count; per image:
its average-pooled feature vector (for the pooled baselines); in instance mode also every unit
location vector. Sums are kept as integers in units of 2^-32 (:data:`FIXED_POINT`): integer
addition is exact and does not depend on its order, so a memory built in any number of pieces
(batches, a resumed run, shards of several processes) holds bitwise the same sums as one built in
one go. Each component is rounded by at most 2^-33, far below float32's resolution of a unit vector.
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..core.knn import DEFAULT_FAISS_THRESHOLD, ExactIndex
from .bins import MAX_BINS, angle_bins

__all__ = ['MemoryStorage', 'MODES', 'METHODS', 'DTYPES', 'FIXED_POINT']

MODES = ('prototype', 'instance')
# every classifier a memory offers: its two modes and the two pooled-feature baselines
METHODS = ('prototype', 'instance', 'cl2n', 'pooled_knn')
DTYPES = {'float32': torch.float32, 'float16': torch.float16}
FIXED_POINT = 2.0 ** 32
# vectors per (class, bin) before a sum could overflow int64: 2^30 unit components of 2^32 units each
_MAX_COUNT = 2 ** 30


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class MemoryStorage:
    """The sums, counts and kept vectors of a memory (see the module docstring).

    Args:
        class_names: one name per class; more can be added later with :meth:`add_class`.
        mode: 'prototype' keeps per-(class, bin) sums; 'instance' also keeps every vector.
        num_bins: K, the number of angle sectors (plus the centre bin), 0 to 360.
        centre_radius: radius of the centre bin, in grid cells.
        k: neighbours per query in the instance and pooled k-NN classifiers.
        dtype: storage dtype of the kept vectors, torch.float32 or torch.float16.
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
            faiss_threshold: Optional[int] = DEFAULT_FAISS_THRESHOLD,
    ):
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}.')
        if not _is_int(k) or k < 1:
            raise ValueError(f'k must be an integer >= 1, got {k!r}.')
        if not _is_int(num_bins) or not 0 <= num_bins <= MAX_BINS:
            raise ValueError(f'num_bins must be an integer in [0, {MAX_BINS}] (0 = no angle bins), got {num_bins!r}.')
        if isinstance(centre_radius, bool) or not isinstance(centre_radius, (int, float)) or not (
                math.isfinite(centre_radius) and centre_radius >= 0):
            raise ValueError(f'centre_radius must be a finite number >= 0 (grid cells), got {centre_radius!r}.')
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
        self.faiss_threshold = faiss_threshold
        # set by the first features added
        self.num_features: Optional[int] = None
        self.grid_size: Optional[Tuple[int, int]] = None
        self._bins: Optional[torch.Tensor] = None
        self._sums: Optional[torch.Tensor] = None  # (C, num_bins + 1, D) int64, units of 1 / FIXED_POINT
        self._counts: Optional[torch.Tensor] = None  # (C, num_bins + 1) int64
        self._vectors: Optional[ExactIndex] = None  # instance mode: every unit vector
        self._vector_labels: List[torch.Tensor] = []
        self._pooled: Optional[ExactIndex] = None  # one raw pooled vector per image, for baselines
        self._pooled_labels: List[torch.Tensor] = []
        self._cache: Dict[str, Any] = {}  # derived tensors, dropped on every change

    # ---------------------------------------------------------------------------- what it holds

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
    def num_vectors(self) -> Optional[int]:
        """Vectors kept for instance search (None in prototype mode)."""
        return len(self._vectors) if self._vectors is not None else None

    @property
    def methods(self) -> Tuple[str, ...]:
        """The classifiers this memory offers."""
        return tuple(m for m in METHODS if m != 'instance' or self.mode == 'instance')

    def prototype_sums(self) -> torch.Tensor:
        """(C, num_bins + 1, D) float64 sums of the unit vectors of each (class, bin)."""
        self._require_data()
        return self._sums.double() / FIXED_POINT

    def prototypes(self) -> torch.Tensor:
        """(C, num_bins + 1, D) unit prototypes; all-zero where a (class, bin) has no vectors.

        Every image adds a vector to every bin that holds a grid location, so a (class, bin) is
        empty only if the class has no images (it is never predicted) or the bin holds no location
        (the centre of an even grid, or more sectors than cells), which no query reaches either.
        """
        self._require_data()
        if 'prototypes' not in self._cache:
            self._cache['prototypes'] = F.normalize(self._sums.double(), dim=-1).float()
        return self._cache['prototypes']

    # ------------------------------------------------------------------------------- growth

    def add_class(self, name: str) -> int:
        """Add an (empty) class and return its index; add its images with :meth:`add_features`."""
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
        group = (labels[:, None] * (self.num_bins + 1) + self._bins[None, :]).flatten()  # flat (class, bin)
        counts = self._counts.view(-1).index_add(0, group, torch.ones(group.numel(), dtype=torch.long))
        if int(counts.max()) > _MAX_COUNT:
            raise ValueError(f'More than {_MAX_COUNT} vectors in one (class, bin): the memory cannot grow further.')
        fixed = torch.round(vectors.reshape(-1, self.num_features).double() * FIXED_POINT).long()
        # out of place: storage restored under torch.inference_mode cannot be updated in place outside it
        self._sums = self._sums.view(-1, self.num_features).index_add(0, group, fixed).view(self._sums.shape)
        self._counts = counts.view(self._counts.shape)
        self._pooled.add(features.mean(dim=(2, 3)))
        self._pooled_labels.append(labels)
        if self._vectors is not None:
            self._vectors.add(vectors.reshape(-1, self.num_features))
            self._vector_labels.append(labels.repeat_interleave(num_locations))
        self._cache.clear()

    def merge_settings(self) -> Dict[str, Any]:
        """What must match for two memories to merge: options and classes (subclasses add the backbone)."""
        return {'mode': self.mode, 'num_bins': self.num_bins, 'centre_radius': self.centre_radius, 'k': self.k,
                'dtype': self.dtype, 'class_names': self.class_names}

    def merge(self, others: Union['MemoryStorage', Sequence['MemoryStorage']]) -> 'MemoryStorage':
        """Append memories built from the following parts of a dataset (in place; returns self).

        Sums and counts add up (exactly); pooled and instance vectors are appended in the order
        given, so memories of consecutive shards merged in shard order equal, bitwise, one memory
        built over the whole dataset in the same batches.

        Raises:
            ValueError: a memory of another backbone, layer, input size, mode, option, class list or
                feature geometry, naming every difference.
        """
        for other in ([others] if isinstance(others, MemoryStorage) else others):
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
            self._sums = self._sums + other._sums
            self._counts = self._counts + other._counts
            self._pooled.add(other._pooled.vectors)
            self._pooled_labels.extend(other._pooled_labels)
            if self._vectors is not None:
                self._vectors.add(other._vectors.vectors)
                self._vector_labels.extend(other._vector_labels)
            self._cache.clear()
        return self

    # ------------------------------------------------------------------------- exact state

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Everything the memory holds, exactly ({} while it is empty): what a build checkpoints."""
        if self._sums is None:
            return {}
        state = {
            'sums': self._sums, 'counts': self._counts, 'grid_size': torch.tensor(self.grid_size),
            'pooled': self._pooled.vectors,
            'pooled_labels': self._labels('pooled_labels', self._pooled_labels),
        }
        if self._vectors is not None:
            state['vectors'] = self._vectors.vectors
            state['vector_labels'] = self._labels('vector_labels', self._vector_labels)
        return state

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        """Hold exactly what :meth:`state_dict` gave (of a memory of the same classes and options)."""
        self._clear_storage()
        if not state:
            return
        expected = {'sums': torch.int64, 'counts': torch.int64, 'grid_size': torch.int64, 'pooled': self.dtype,
                    'pooled_labels': torch.int64}
        if self.mode == 'instance':
            expected.update(vectors=self.dtype, vector_labels=torch.int64)
        for name, dtype in expected.items():
            if name not in state or state[name].dtype != dtype:
                found = state[name].dtype if name in state else 'missing'
                raise ValueError(f'state {name!r} is {found}, a {self.mode} memory of {self.dtype} needs {dtype}')
        c, nb = self.num_classes, self.num_bins + 1
        d, grid = state['sums'].shape[-1], tuple(state['grid_size'].tolist())
        n = state['pooled'].shape[0]
        shapes = {'sums': (c, nb, d), 'counts': (c, nb), 'grid_size': (2,), 'pooled': (n, d), 'pooled_labels': (n,)}
        if self.mode == 'instance':
            shapes.update(vectors=(n * math.prod(grid), d), vector_labels=(n * math.prod(grid),))
        for name, shape in shapes.items():
            if tuple(state[name].shape) != shape:
                raise ValueError(f'state {name!r} has shape {tuple(state[name].shape)}, expected {shape}')
        self._set_geometry(d, grid)
        self._init_storage()
        self._sums, self._counts = state['sums'].clone(), state['counts'].clone()
        self._pooled.add(state['pooled'])
        self._pooled_labels = [state['pooled_labels'].clone()]
        if self._vectors is not None:
            self._vectors.add(state['vectors'])
            self._vector_labels = [state['vector_labels'].clone()]

    # ------------------------------------------------------------------------------ helpers

    def _init_storage(self) -> None:
        self._sums = torch.zeros(self.num_classes, self.num_bins + 1, self.num_features, dtype=torch.long)
        self._counts = torch.zeros(self.num_classes, self.num_bins + 1, dtype=torch.long)
        self._pooled = ExactIndex(self.num_features, self.dtype, self.faiss_threshold)
        if self.mode == 'instance':
            self._vectors = ExactIndex(self.num_features, self.dtype, self.faiss_threshold)

    def _clear_storage(self) -> None:
        self.num_features = self.grid_size = self._bins = None
        self._sums = self._counts = self._vectors = self._pooled = None
        self._vector_labels, self._pooled_labels = [], []
        self._cache.clear()

    def _set_geometry(self, num_features: int, grid_size: Tuple[int, int]) -> None:
        self.num_features, self.grid_size = num_features, tuple(grid_size)
        self._bins = angle_bins(*self.grid_size, self.num_bins, self.centre_radius)

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

    @staticmethod
    def _unit_vectors(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) L2-normalised location vectors and their (B, L) energies."""
        vectors = features.flatten(2).transpose(1, 2)
        return F.normalize(vectors, dim=-1), vectors.square().sum(-1)

    def _labels(self, key: str, parts: List[torch.Tensor]) -> torch.Tensor:
        if key not in self._cache:
            self._cache[key] = torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)
        return self._cache[key]
