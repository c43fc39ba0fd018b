""" Streaming sombrero and symmetry-breaking statistics of activation maps (docs/math.md, "Statistics").

:class:`SombreroStatistics` takes (B, C, H, W) maps batch by batch, with optional class labels,
and keeps only sums and histograms, so memory is bounded by the map size and the number of
classes, never by the number of images:

* energy E(x, y) = ||I(x, y)||^2: mean map, radial profile (mean E per ring of width 1 about the
  grid centre), centre concentration (share of energy within r <= R/2, R the grid's half-size,
  divided by the share of locations there) and energy centroid (docs/math.md, "The image plane");
* activation hue of every location (docs/math.md, "Activation hue"): 2-D density of (a, b) and its ring
  profile (density per unit area against chroma: a peak away from 0 is the sombrero's brim);
* per class, for the activation hue theta (energy-weighted over locations) and for the angle phi of
  each image's energy centroid: circular mean direction, resultant length R, polar histogram, and
  a Rayleigh test of uniformity over images (one unit vector per image);
* a label-permutation test of symmetry breaking: do the class mean directions differ?
  Statistic T = (sum_c |S_c| - |S|) / n over one unit vector per image (S_c: sum over class c).

For the controls of :mod:`timm_u1.analysis.controls`, :class:`AngleClassAccumulator` streams one angle per
image for G variants at once (e.g. G channel orders) and gives T and a cross-validated decoding
accuracy of the class from the angle per variant, with label-permutation p-values; the binomial
helpers :func:`binomial_two_sided_p` (sign test) and :func:`mcnemar_p` compare paired outcomes.

The permutation test shuffles labels *within each batch* (a stratified permutation test, valid
because under the null hypothesis labels are exchangeable within any batch), so the P permuted
labellings stream like the observed one. Feed batches that mix classes (a shuffled loader):
batches of a single class carry no permutation information.

Every accumulator merges exactly (:meth:`SombreroStatistics.merge`,
:meth:`AngleClassAccumulator.merge`): a batch stream cut into parts, accumulated apart (e.g. one
part per process) and merged gives the statistics of the whole stream, up to the order of float64
summation (relative differences of about 1e-12; counts and histograms of counts are exact). For
that, the permutations of a batch come from a generator seeded with (seed, the batch's index in
the whole stream), not from one generator running through the stream: a part that starts at
batch k passes ``batch_index`` (or sets ``next_batch = k``) and draws the permutations the whole
stream would have drawn there. Merging refuses statistics of other settings (map shape, classes,
bins, permutations, seed, density extent), naming the difference.

Angles in results are in degrees; theta in (-180, 180], phi measured from +x towards +y (rows
grow downwards, as in image coordinates).
"""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..core.hue import activation_hue, energy, energy_centroid, image_plane_grid

__all__ = [
    'SombreroStatistics', 'rayleigh_test', 'rayleigh_log10_p', 'RAYLEIGH_QUESTION', 'circular_summary',
    'AngleClassAccumulator', 'class_statistic', 'binomial_two_sided_p', 'mcnemar_p',
]

# what the Rayleigh test asks, said in every report: it is no test of class dependence
RAYLEIGH_QUESTION = (
    'Rayleigh test: are the per-image directions uniform on the circle? Any non-negative (ReLU) '
    'features, trained or not, fail it trivially; it says nothing about classes. Reported as log10 p '
    '(Zar approximation; p itself underflows).')


def rayleigh_test(n: float, resultant: float) -> float:
    """p-value of the Rayleigh test of uniformity for n unit vectors summing to length ``resultant``.

    Uses Zar's (Biostatistical Analysis, eq. 27.4) approximation,
    p = exp(sqrt(1 + 4n + 4(n^2 - Rn^2)) - (1 + 2n)), accurate to about 1e-3 from n = 10 on.
    """
    if n < 2:
        return float('nan')
    p = math.exp(math.sqrt(1 + 4 * n + 4 * (n * n - resultant * resultant)) - (1 + 2 * n))
    return min(1.0, p)


def rayleigh_log10_p(n: float, resultant: float) -> float:
    """log10 of :func:`rayleigh_test`'s p-value, without the underflow of p (p = 0 from about n R^2 > 745)."""
    if n < 2:
        return float('nan')
    log_p = math.sqrt(1 + 4 * n + 4 * (n * n - resultant * resultant)) - (1 + 2 * n)
    return min(0.0, log_p) / math.log(10)


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair coin flips (the sign test); 1.0 for n = 0."""
    if n <= 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(k, n, 0.5, alternative='two-sided').pvalue)


def mcnemar_p(correct_a: torch.Tensor, correct_b: torch.Tensor) -> float:
    """Exact McNemar p of two classifiers' per-image correctness (bool tensors on the same images)."""
    a, b = torch.as_tensor(correct_a, dtype=torch.bool), torch.as_tensor(correct_b, dtype=torch.bool)
    if a.shape != b.shape:
        raise ValueError(f'McNemar needs both methods on the same images, got {tuple(a.shape)} and {tuple(b.shape)}.')
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return binomial_two_sided_p(only_a, only_a + only_b)


def class_statistic(class_sums: torch.Tensor) -> torch.Tensor:
    """T = (sum_c |S_c| - |S|) / n from per-class sums (..., C, 3) of [cos, sin, count] of unit vectors.

    The label-permutation statistic of :class:`SombreroStatistics`; NaN where n = 0.
    """
    n = class_sums[..., 2].sum(-1)
    within = torch.hypot(class_sums[..., 0], class_sums[..., 1]).sum(-1)
    total = torch.hypot(class_sums[..., 0].sum(-1), class_sums[..., 1].sum(-1))
    return torch.where(n > 0, (within - total) / n.clamp_min(1), torch.full_like(n, float('nan')))


def _cv_accuracy(hist: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(accuracy, chance) of k-fold decoding from binned-angle counts (..., F, C, K).

    Fold f is predicted with the counts of the other folds: in each angle sector the class seen
    most often there (the Bayes rule of the binned angle), ties and empty sectors going to the
    class seen most often overall. Chance: always predicting that majority class.
    """
    total = hist.sum(-3, keepdim=True)
    train = total - hist  # (..., F, C, K)
    class_train = train.sum(-1, keepdim=True)  # (..., F, C, 1)
    # the prior breaks ties: it is below one count, so it never beats a real difference
    score = train + class_train / (class_train.sum(-2, keepdim=True) + 1) * 0.5
    pred = score.argmax(-2, keepdim=True)  # (..., F, 1, K)
    hits = hist.gather(-2, pred).sum((-1, -2, -3))
    majority = class_train.argmax(-2, keepdim=True)  # (..., F, 1, 1)
    base = hist.sum(-1, keepdim=True).gather(-2, majority).sum((-1, -2, -3))
    n = hist.sum((-1, -2, -3)).clamp_min(1)
    return hits / n, base / n


class AngleClassAccumulator:
    """Streams one unit vector per image for G variants (e.g. channel orders) and its class label.

    Per variant g: the class statistic T (:func:`class_statistic`) and the k-fold cross-validated
    accuracy of decoding the class from the angle alone (a Bayes classifier of the angle binned in
    ``bins`` sectors; images go to folds round-robin in stream order, so feed them shuffled). For
    variant 0, ``permutations`` within-batch label permutations give p-values of both. Memory:
    O(G x folds x classes x bins), never O(images).

    Parts of one stream merge exactly (:meth:`merge`) when each part starts at its place in the
    stream: ``seen`` (labelled images before it, which sets the folds) and ``next_batch`` (batches
    before it, which sets the permutations).

    Args:
        num_classes: Number of classes (>= 2).
        groups: Number G of variants per image.
        folds: Cross-validation folds.
        bins: Angle sectors of the decoder.
        permutations: Label permutations for variant 0's p-values (0: none).
        seed: Seed of the permutations.
    """

    def __init__(self, num_classes: int, groups: int = 1, folds: int = 5, bins: int = 12,
                 permutations: int = 199, seed: int = 0):
        if num_classes < 2:
            raise ValueError(f'AngleClassAccumulator needs >= 2 classes, got {num_classes}.')
        if folds < 2 or bins < 1 or groups < 1:
            raise ValueError(f'Need folds >= 2, bins >= 1, groups >= 1; got {folds}, {bins}, {groups}.')
        self.num_classes, self.groups, self.folds, self.bins = num_classes, groups, folds, bins
        self.permutations, self.seed = permutations, seed
        self.next_batch = 0  # index of the next batch in the whole stream: seeds its permutations
        f64 = dict(dtype=torch.float64)
        self.sums = torch.zeros(groups, num_classes, 3, **f64)
        self.hist = torch.zeros(groups, folds, num_classes, bins, **f64)
        self.perm_sums = torch.zeros(permutations, num_classes, 3, **f64)
        self.perm_hist = torch.zeros(permutations, folds, num_classes, bins, **f64)
        self.seen = 0  # labelled images so far: their position sets the fold

    def update(self, unit: torch.Tensor, labels: torch.Tensor, batch_index: Optional[int] = None) -> None:
        """Add (B, G, 2) vectors (a zero vector = no angle, left out) with (B,) labels (-1 = unlabelled).

        ``batch_index``: the batch's index in the whole stream (default: the one after the last).
        """
        index = self.next_batch if batch_index is None else batch_index
        self.next_batch = index + 1
        unit = unit.detach().to('cpu', torch.float64)
        if unit.dim() == 2:
            unit = unit.unsqueeze(1)
        b, g, _ = unit.shape
        if g != self.groups:
            raise ValueError(f'Expected {self.groups} variants per image, got {g}.')
        labels = torch.as_tensor(labels).to('cpu', torch.long).flatten()
        keep = labels >= 0
        unit, labels = unit[keep], labels[keep]
        b = labels.numel()
        if b == 0:
            return
        if int(labels.max()) >= self.num_classes:
            raise ValueError(f'Label {int(labels.max())} out of range for {self.num_classes} classes.')
        fold = (self.seen + torch.arange(b)) % self.folds
        self.seen += b
        norm = torch.hypot(unit[..., 0], unit[..., 1])
        valid = (norm > 0).double()  # (B, G)
        u = unit / norm.clamp_min(1e-300).unsqueeze(-1)
        angle = torch.atan2(u[..., 1], u[..., 0])
        sector = _angle_bins(angle, self.bins)  # (B, G)
        values = torch.cat([u * valid.unsqueeze(-1), valid.unsqueeze(-1)], -1)  # (B, G, 3)
        gi = torch.arange(g).unsqueeze(0)
        self.sums.view(-1, 3).index_add_(0, (gi * self.num_classes + labels.unsqueeze(1)).flatten(), values.reshape(-1, 3))
        flat = ((gi * self.folds + fold.unsqueeze(1)) * self.num_classes + labels.unsqueeze(1)) * self.bins + sector
        self.hist.view(-1).index_add_(0, flat.flatten(), valid.flatten())
        if self.permutations:
            p = self.permutations
            perm = labels[torch.rand(p, b, generator=_batch_generator(self.seed, index)).argsort(1)]  # (P, B)
            pi = torch.arange(p).unsqueeze(1)
            self.perm_sums.view(-1, 3).index_add_(
                0, (pi * self.num_classes + perm).flatten(), values[:, 0].unsqueeze(0).expand(p, b, 3).reshape(-1, 3))
            flat = ((pi * self.folds + fold.unsqueeze(0)) * self.num_classes + perm) * self.bins + sector[:, 0].unsqueeze(0)
            self.perm_hist.view(-1).index_add_(0, flat.flatten(), valid[:, 0].unsqueeze(0).expand(p, b).flatten())

    def settings(self) -> Dict[str, Any]:
        """What must match for two accumulators to merge."""
        return {'num_classes': self.num_classes, 'groups': self.groups, 'folds': self.folds, 'bins': self.bins,
                'permutations': self.permutations, 'seed': self.seed}

    def merge(
            self, others: Union['AngleClassAccumulator', Sequence['AngleClassAccumulator']],
    ) -> 'AngleClassAccumulator':
        """Add other parts of the stream into this one (in place; returns self)."""
        for other in ([others] if isinstance(others, AngleClassAccumulator) else others):
            _check_mergeable('angle-class accumulators', self.settings(), other.settings())
            for key in ('sums', 'hist', 'perm_sums', 'perm_hist'):
                setattr(self, key, getattr(self, key) + getattr(other, key))  # out of place: see SombreroStatistics
            self.seen += other.seen
            self.next_batch = max(self.next_batch, other.next_batch)
        return self

    def result(self) -> Dict[str, Any]:
        """T and decoding accuracy per variant (lists), chance, and variant 0's permutation p-values."""
        t = class_statistic(self.sums)
        acc, chance = _cv_accuracy(self.hist)
        counts = self.sums[..., 2].sum(-1)  # images with an angle, per variant
        out: Dict[str, Any] = {
            'images': int(counts[0]),
            'statistic': [_json_float(float(v)) for v in t],
            # no image with an angle: no decoding either (not an accuracy of 0)
            'accuracy': [float(v) if n > 0 else None for v, n in zip(acc, counts)],
            'chance': float(chance[0]) if counts[0] > 0 else None,
        }
        if self.permutations and out['images'] >= 2 and out['accuracy'][0] is not None:
            t_perm = class_statistic(self.perm_sums)
            acc_perm, _ = _cv_accuracy(self.perm_hist)
            tol = 1e-9 * max(1.0, abs(float(t[0])))
            out.update({
                'permutations': self.permutations,
                'statistic_null_mean': float(t_perm.mean()),
                'p_value': (1 + int((t_perm >= t[0] - tol).sum())) / (self.permutations + 1),
                'accuracy_null_mean': float(acc_perm.mean()),
                'accuracy_p_value': (1 + int((acc_perm >= acc[0] - 1e-12).sum())) / (self.permutations + 1),
            })
        return out


def circular_summary(cos_sum: float, sin_sum: float, weight: float) -> Dict[str, float]:
    """Mean direction (degrees) and mean resultant length R in [0, 1] of weighted unit vectors."""
    if weight <= 0:
        return {'mean_direction_deg': float('nan'), 'resultant_length': float('nan')}
    length = math.hypot(cos_sum, sin_sum)
    direction = math.degrees(math.atan2(sin_sum, cos_sum)) if length > 0 else float('nan')
    return {'mean_direction_deg': direction, 'resultant_length': length / weight}


def _batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The permutation generator of batch ``batch_index``: a pure function of (seed, index), so that a
    stream split into parts draws, batch for batch, the permutations of the whole stream."""
    return torch.Generator().manual_seed(((seed & 0xFFFFFFFF) << 32) | (batch_index & 0xFFFFFFFF))


def _check_mergeable(what: str, mine: Dict[str, Any], theirs: Dict[str, Any]) -> None:
    """Refuse to merge accumulators of other settings, naming every setting that differs."""
    diffs = [f'{k}: {mine[k]!r} here, {theirs.get(k)!r} there' for k in mine if mine[k] != theirs.get(k)]
    if diffs:
        raise ValueError(
            f'Cannot merge {what} accumulated with other settings ({"; ".join(diffs)}); merge only parts of '
            f'one run (same model, layer, input size, classes, permutations and seed).')


def _angle_bins(angle: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index of angles in (-pi, pi] on ``bins`` equal sectors starting at -pi."""
    idx = torch.floor((angle + math.pi) / (2 * math.pi) * bins).long()
    return idx.clamp_(0, bins - 1)


def _json_float(x: float) -> Optional[float]:
    return None if math.isnan(x) else float(x)


class SombreroStatistics:
    """Accumulates section-5 statistics over batches of activation maps.

    Args:
        num_classes: Number of classes of the labels passed to :meth:`update`; 0 when unlabelled.
        class_names: Optional names for the report.
        angle_bins: Sectors of the polar histograms.
        density_bins: Bins per axis of the (a, b) hue-plane histogram.
        density_extent: The histogram covers [-extent, extent]^2; by default 1.25 x the largest chroma
            of the first batch. Points outside are counted, not binned. Fix it to compare runs.
        permutations: Number P of label permutations (0 disables the permutation test).
        seed: Seed of the permutations (with each batch's index in the stream, see :meth:`update`).

    Parts of one batch stream, each accumulated apart, merge into the statistics of the whole
    stream with :meth:`merge` (see the module docstring). With a ``density_extent`` of None, every
    part must be given the extent of the stream's first batch (read it from a part holding that
    batch as ``statistics.extent``).
    """

    def __init__(
            self,
            num_classes: int = 0,
            class_names: Optional[Sequence[str]] = None,
            angle_bins: int = 36,
            density_bins: int = 64,
            density_extent: Optional[float] = None,
            permutations: int = 999,
            seed: int = 0,
    ):
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f'{len(class_names)} class names given for num_classes={num_classes}.')
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
        self.angle_bins = angle_bins
        self.density_bins = density_bins
        if density_extent is not None and not density_extent > 0:
            raise ValueError(f'density_extent must be > 0, got {density_extent}.')
        self.density_extent = density_extent
        self.permutations = permutations if num_classes >= 2 else 0
        self.seed = seed
        self.next_batch = 0  # index of the next batch in the whole stream: seeds its permutations
        self.map_shape: Optional[torch.Size] = None  # (C, H, W) of the first batch
        self._acc: Dict[str, torch.Tensor] = {}

    # --- accumulation -------------------------------------------------------------------------

    def _init_accumulators(self, c: int, h: int, w: int) -> None:
        self.map_shape = torch.Size((c, h, w))
        self._inner = self._inner_mask(h, w)
        k = self.num_classes + 1  # one row per class, the last row for all images
        f64 = dict(dtype=torch.float64)
        self._acc = {
            'images': torch.zeros((), **f64),
            'energy_sum': torch.zeros(h, w, **f64),
            'image_concentration_sum': torch.zeros((), **f64),
            'images_concentrated': torch.zeros((), **f64),
            'centroid_sum': torch.zeros(3, **f64),  # x, y, length over images with energy
            'centroid_images': torch.zeros((), **f64),
            # per group: [sum w cos, sum w sin, sum w] over locations, energy-weighted
            'hue_weighted': torch.zeros(k, 3, **f64),
            # per group: [sum cos, sum sin, n] of one unit vector per image (Rayleigh test)
            'hue_images': torch.zeros(k, 3, **f64),
            'hue_hist': torch.zeros(k, self.angle_bins, **f64),
            'phi_images': torch.zeros(k, 3, **f64),
            'phi_hist': torch.zeros(k, self.angle_bins, **f64),
            'density': torch.zeros(self.density_bins, self.density_bins, **f64),
            'density_extent': torch.zeros((), **f64),
            'density_outside': torch.zeros((), **f64),
            'locations': torch.zeros((), **f64),
            'achromatic': torch.zeros((), **f64),
        }
        if self.permutations:
            # per permutation and class: summed unit vectors of theta and of phi
            self._acc['perm_hue'] = torch.zeros(self.permutations, self.num_classes, 2, **f64)
            self._acc['perm_phi'] = torch.zeros(self.permutations, self.num_classes, 2, **f64)
            self._acc['mixed_batches'] = torch.zeros((), **f64)

    @property
    def images(self) -> int:
        return int(self._acc['images']) if self._acc else 0

    @property
    def has_hue(self) -> bool:
        return self.map_shape is not None and self.map_shape[0] >= 3

    @property
    def has_space(self) -> bool:
        return self.map_shape is not None and self.map_shape[1] * self.map_shape[2] >= 2

    @staticmethod
    def _inner_mask(h: int, w: int) -> torch.Tensor:
        """Locations with r <= R/2, R the grid's half-size (the centre for the concentration)."""
        _, _, _, r = image_plane_grid(h, w)
        half = max((w - 1) / 2, (h - 1) / 2)
        return r <= half / 2 + 1e-6

    def _concentration_defined(self) -> bool:
        return bool(self._inner.any()) and not bool(self._inner.all())

    @property
    def extent(self) -> Optional[float]:
        """The half-width of the hue-plane histogram in use (None before the first batch with hue)."""
        value = float(self._acc['density_extent']) if self._acc else 0.0
        return value if value > 0 else self.density_extent

    @torch.no_grad()
    def update(
            self, fmap: torch.Tensor, labels: Optional[torch.Tensor] = None, batch_index: Optional[int] = None,
    ) -> None:
        """Add a batch of maps (B, C, H, W); ``labels`` (B,) are class indices, -1 for unlabelled.

        ``batch_index`` is the batch's index in the whole stream (default: the one after the last
        batch added); it seeds the batch's label permutations.
        """
        if fmap.dim() != 4:
            raise ValueError(f'Expected activation maps of shape (B, C, H, W), got {tuple(fmap.shape)}.')
        b, c, h, w = fmap.shape
        if self.map_shape is not None and fmap.shape[1:] != self.map_shape:
            raise ValueError(
                f'Activation map shape {tuple(fmap.shape[1:])} differs from the first batch\'s '
                f'{tuple(self.map_shape)}; resize every image to one input size.')
        if labels is None:
            labels = torch.full((b,), -1, dtype=torch.long)
        labels = labels.detach().to('cpu', torch.long).flatten()
        if labels.numel() != b:
            raise ValueError(f'{labels.numel()} labels for a batch of {b} maps.')
        if labels.numel() and int(labels.max()) >= self.num_classes:
            raise ValueError(
                f'Label {int(labels.max())} out of range for num_classes={self.num_classes}; '
                f'pass the dataset\'s number of classes to SombreroStatistics.')
        fmap = fmap.detach().to('cpu', torch.float32)
        hs = activation_hue(fmap, dim=1) if c >= 3 else None  # hue needs N >= 3 channels, energy does not
        e = hs.energy if hs is not None else energy(fmap, dim=1)
        # a NaN or infinite activation makes its location's energy non-finite: one cheap check
        bad = ~torch.isfinite(e.sum((1, 2)))
        if bad.any():
            nan, inf = int(torch.isnan(fmap).sum()), int(torch.isinf(fmap).sum())
            raise ValueError(
                f'Activation map has {nan} NaN and {inf} infinite values, or energies beyond float32 '
                f'(images {bad.nonzero().flatten().tolist()} of this batch); check the input images and '
                f'the model weights (fp16 overflow?).')
        if self.map_shape is None:
            self._init_accumulators(c, h, w)
        index = self.next_batch if batch_index is None else batch_index
        self.next_batch = index + 1
        acc = self._acc
        acc['images'] += b
        # group rows: the image's class (if labelled) and the last "all images" row
        labelled = labels >= 0
        all_row = torch.full((b,), self.num_classes, dtype=torch.long)
        e64 = e.double()
        acc['energy_sum'] += e64.sum(0)

        phi_unit = torch.zeros(b, 2, dtype=torch.float64)
        if self.has_space:
            total = e64.sum((1, 2))
            if self._concentration_defined():
                inner = self._inner
                share = inner.double().mean()
                has_energy = total > 0
                conc = (e64[:, inner].sum(1) / total.clamp_min(1e-300)) / share
                acc['image_concentration_sum'] += conc[has_energy].sum()
                acc['images_concentrated'] += (conc[has_energy] > 1).sum()
            cen = energy_centroid(e64)
            ok = ~torch.isnan(cen.length)
            acc['centroid_sum'] += torch.stack([cen.x[ok].sum(), cen.y[ok].sum(), cen.length[ok].sum()])
            acc['centroid_images'] += ok.sum()
            has_phi = ~torch.isnan(cen.angle)
            phi = cen.angle.nan_to_num(0.0)
            phi_unit = torch.stack([torch.cos(phi), torch.sin(phi)], 1) * has_phi.unsqueeze(1)
            phi_bin = _angle_bins(phi, self.angle_bins)
            for rows in (labels, all_row):
                use = has_phi & (rows >= 0)
                self._add_images(acc['phi_images'], acc['phi_hist'], rows[use], phi_unit[use], phi_bin[use])

        hue_unit = torch.zeros(b, 2, dtype=torch.float64)
        if hs is not None:
            self._add_density(hs.a, hs.b, hs.chroma)
            valid = hs.valid
            acc['locations'] += valid.numel()
            acc['achromatic'] += (~valid).sum()
            theta = hs.angle.nan_to_num(0.0).double()
            wgt = e64 * valid
            wc, ws = (wgt * torch.cos(theta)).sum((1, 2)), (wgt * torch.sin(theta)).sum((1, 2))
            per_image = torch.stack([wc, ws, wgt.sum((1, 2))], 1)  # (B, 3)
            length = torch.hypot(wc, ws)
            has_hue = length > 0
            hue_unit = torch.stack([wc, ws], 1) / length.clamp_min(1e-300).unsqueeze(1) * has_hue.unsqueeze(1)
            bins = _angle_bins(theta, self.angle_bins).flatten(1)  # (B, HW)
            for rows in (labels, all_row):
                use = rows >= 0
                acc['hue_weighted'].index_add_(0, rows[use], per_image[use])
                self._add_images(acc['hue_images'], None, rows[use & has_hue], hue_unit[use & has_hue], None)
                flat = (rows[use].unsqueeze(1) * self.angle_bins + bins[use]).flatten()
                acc['hue_hist'].view(-1).index_add_(0, flat, wgt[use].flatten(1).flatten())

        if self.permutations and bool(labelled.any()):
            self._add_permutations(labels[labelled], hue_unit[labelled], phi_unit[labelled], index)

    @staticmethod
    def _add_images(sums: torch.Tensor, hist: Optional[torch.Tensor], rows, unit, bins) -> None:
        ones = torch.ones(rows.numel(), 1, dtype=torch.float64)
        sums.index_add_(0, rows, torch.cat([unit, ones], 1))
        if hist is not None:
            hist.view(-1).index_add_(0, rows * hist.shape[1] + bins, ones.flatten())

    def _add_density(self, a: torch.Tensor, b: torch.Tensor, chroma: torch.Tensor) -> None:
        acc = self._acc
        if float(acc['density_extent']) == 0:
            extent = self.density_extent or float(chroma.max()) * 1.25
            acc['density_extent'] += max(extent, 1e-12)
        extent = float(acc['density_extent'])
        n = self.density_bins
        ia = torch.floor((a.flatten().double() + extent) / (2 * extent) * n).long()
        ib = torch.floor((b.flatten().double() + extent) / (2 * extent) * n).long()
        inside = (ia >= 0) & (ia < n) & (ib >= 0) & (ib < n)
        acc['density_outside'] += (~inside).sum()
        # rows of the histogram are b (vertical axis), columns a
        acc['density'].view(-1).index_add_(
            0, ib[inside] * n + ia[inside], torch.ones(int(inside.sum()), dtype=torch.float64))

    def _add_permutations(
            self, labels: torch.Tensor, hue_unit: torch.Tensor, phi_unit: torch.Tensor, batch_index: int) -> None:
        acc = self._acc
        p, n = self.permutations, labels.numel()
        if int(labels.unique().numel()) >= 2:
            acc['mixed_batches'] += 1
        order = torch.rand(p, n, generator=_batch_generator(self.seed, batch_index)).argsort(1)
        index = labels[order].unsqueeze(-1).expand(p, n, 2)  # permuted class of each image, (P, n, 2)
        for key, unit in (('perm_hue', hue_unit), ('perm_phi', phi_unit)):
            acc[key].scatter_add_(1, index, unit.unsqueeze(0).expand(p, n, 2))

    # --- results ------------------------------------------------------------------------------

    def _permutation_test(self, key: str, observed: torch.Tensor) -> Dict[str, Any]:
        """Statistic T = (sum_c |S_c| - |S|) / n over per-image unit vectors, against its permutations.

        T is 0 when every class has the same mean direction and grows as class means differ.
        """
        n = float(observed[:, 2].sum())
        if n < 2:
            return {'statistic': None, 'p_value': None, 'permutations': 0}
        total = float(torch.hypot(*observed[:, :2].sum(0)))
        t_obs = (float(torch.hypot(observed[:, 0], observed[:, 1]).sum()) - total) / n
        perm = self._acc[key]
        t_perm = (torch.hypot(perm[..., 0], perm[..., 1]).sum(1) - total) / n
        # relative tolerance: the observed labelling is one of the permutations' equals under rounding
        exceed = int((t_perm >= t_obs - 1e-9 * max(1.0, abs(t_obs))).sum())
        return {
            'statistic': t_obs,
            'null_mean': float(t_perm.mean()),
            'p_value': (1 + exceed) / (self.permutations + 1),
            'permutations': self.permutations,
            'batches_with_mixed_labels': int(self._acc['mixed_batches']),
        }

    def _circular_groups(self, images_key: str, hist_key: Optional[str], weighted_key: Optional[str]):
        acc = self._acc
        groups = []
        names = self.class_names + ['all']
        for row, name in enumerate(names):
            ci, si, ni = acc[images_key][row].tolist()
            entry = {'class': name, 'images': int(ni)}
            image_level = circular_summary(ci, si, ni)
            if weighted_key is not None:
                cw, sw, ww = acc[weighted_key][row].tolist()
                entry.update(circular_summary(cw, sw, ww))  # energy-weighted over locations
                entry['image_mean_direction_deg'] = image_level['mean_direction_deg']
                entry['image_resultant_length'] = image_level['resultant_length']
            else:
                entry.update(image_level)
            entry['rayleigh_z'] = (ci * ci + si * si) / ni if ni > 0 else float('nan')
            entry['rayleigh_p'] = rayleigh_test(ni, math.hypot(ci, si))
            entry['rayleigh_log10_p'] = rayleigh_log10_p(ni, math.hypot(ci, si))
            entry['histogram'] = acc[hist_key][row].tolist()
            groups.append({k: (_json_float(v) if isinstance(v, float) else v) for k, v in entry.items()})
        return groups[:-1], groups[-1]

    def radial_profile(self) -> Dict[str, List[float]]:
        """Mean energy per ring of width 1 about the grid centre (ring k holds round(r) == k)."""
        mean_map = self._acc['energy_sum'] / max(self.images, 1)
        h, w = self.map_shape[1:]
        _, _, _, r = image_plane_grid(h, w)
        ring = torch.round(r).long().flatten()
        k = int(ring.max()) + 1
        count = torch.bincount(ring, minlength=k).double()
        esum = torch.bincount(ring, weights=mean_map.flatten(), minlength=k)
        rsum = torch.bincount(ring, weights=r.flatten().double(), minlength=k)
        keep = count > 0
        return {'radius': (rsum[keep] / count[keep]).tolist(), 'mean_energy': (esum[keep] / count[keep]).tolist()}

    def hue_ring_profile(self) -> Dict[str, Any]:
        """Hue-plane density per unit area against chroma |(a, b)|, from the 2-D histogram.

        A peak away from chroma 0 with a low resultant length is the ring (brim) of the sombrero;
        a peak in the first ring means the density is concentrated at the achromatic origin.
        """
        n, extent = self.density_bins, float(self._acc['density_extent'])
        width = 2 * extent / n
        centres = -extent + width * (torch.arange(n, dtype=torch.float64) + 0.5)
        radius = torch.hypot(centres.unsqueeze(1), centres.unsqueeze(0)).flatten()
        ring = torch.floor(radius / width).long()  # rings one bin wide
        k = int(ring.max()) + 1
        count = torch.bincount(ring, minlength=k).double()
        mass = torch.bincount(ring, weights=self._acc['density'].flatten(), minlength=k)
        density = mass / count.clamp_min(1) / max(float(mass.sum()), 1.0)
        inside = torch.arange(k) < n // 2  # rings that fit inside the square
        chroma = (torch.arange(k, dtype=torch.float64) + 0.5) * width
        peak = int(density[inside].argmax())
        return {'chroma': chroma[inside].tolist(), 'density': density[inside].tolist(),
                'peak_chroma': float(chroma[peak]), 'peak_ring': peak}

    def mean_energy_map(self) -> torch.Tensor:
        return self._acc['energy_sum'] / max(self.images, 1)

    def result(self) -> Dict[str, Any]:
        """Every statistic as JSON-ready numbers; figures that cannot be computed are in 'skipped'."""
        if self.map_shape is None:
            raise ValueError('No activation maps were added; the dataset is empty.')
        acc = self._acc
        c, h, w = self.map_shape
        n = self.images
        skipped: Dict[str, str] = {}
        mean_map = self.mean_energy_map()
        out: Dict[str, Any] = {
            'images': n,
            'map': {'channels': c, 'height': h, 'width': w},
            'energy': {'mean': float(mean_map.mean()), 'mean_map': mean_map.tolist()},
        }
        if self.has_space:
            energy = out['energy']
            energy['radial_profile'] = self.radial_profile()
            if self._concentration_defined():
                inner = self._inner
                share = float(inner.double().mean())
                total = float(mean_map.sum())
                energy['centre_concentration'] = (
                    float(mean_map[inner].sum()) / total / share if total > 0 else None)
                energy['centre_radius'] = max((w - 1) / 2, (h - 1) / 2) / 2
                energy['centre_location_share'] = share
                with_energy = max(float(acc['centroid_images']), 1)  # images whose map is not all zero
                energy['image_concentration_mean'] = float(acc['image_concentration_sum']) / with_energy
                energy['images_concentrated_share'] = float(acc['images_concentrated']) / with_energy
            else:
                skipped['centre_concentration'] = (
                    f'no location of the {h}x{w} grid lies within r <= R/2 (or every one does); '
                    f'use a larger input or an earlier layer')
            cen = energy_centroid(mean_map)
            energy['centroid_of_mean_map'] = {
                'x': _json_float(float(cen.x)), 'y': _json_float(float(cen.y)),
                'angle_deg': _json_float(math.degrees(float(cen.angle))), 'length': _json_float(float(cen.length))}
            m = max(float(acc['centroid_images']), 1)
            cx, cy, cl = (acc['centroid_sum'] / m).tolist()
            energy['image_centroid_mean'] = {'x': cx, 'y': cy, 'length': cl}
            classes, overall = self._circular_groups('phi_images', 'phi_hist', None)
            out['centroid_angle'] = {'all': overall, 'rayleigh_question': RAYLEIGH_QUESTION}
            if self.num_classes:
                out['centroid_angle']['classes'] = classes
        else:
            for fig in ('radial_profile', 'centre_concentration', 'energy_centroid', 'centroid_angle'):
                skipped[fig] = f'the map is a {h}x{w} grid; image-plane statistics need at least 2 locations'
        if self.has_hue:
            classes, overall = self._circular_groups('hue_images', 'hue_hist', 'hue_weighted')
            extent = float(acc['density_extent'])
            out['hue'] = {
                'all': overall,
                'rayleigh_question': RAYLEIGH_QUESTION,
                'achromatic_share': float(acc['achromatic']) / max(float(acc['locations']), 1),
                'density': {
                    'extent': extent, 'bins': self.density_bins,
                    'outside_share': float(acc['density_outside']) / max(float(acc['locations']), 1),
                    'counts': acc['density'].tolist(),
                },
                'ring_profile': self.hue_ring_profile(),
            }
            if self.num_classes:
                out['hue']['classes'] = classes
        else:
            for fig in ('hue_density', 'activation_hue'):
                skipped[fig] = f'the map has {c} channels; activation hue needs at least 3'
        if not self.num_classes:
            skipped['class_statistics'] = 'the dataset has no labels'
        elif self.permutations:
            tests = {}
            if self.has_hue:
                tests['hue'] = self._permutation_test('perm_hue', acc['hue_images'][:-1])
            if self.has_space:
                tests['centroid_angle'] = self._permutation_test('perm_phi', acc['phi_images'][:-1])
            out['permutation_test'] = tests
            if int(acc['mixed_batches']) == 0:
                skipped['permutation_test'] = (
                    'no batch held two classes, so within-batch permutations are all the identity; '
                    'shuffle the loader')
        out['skipped'] = skipped
        return out

    # --- merging ------------------------------------------------------------------------------

    def settings(self) -> Dict[str, Any]:
        """What must match for two statistics to merge (the map shape and extent once known)."""
        return {
            'num_classes': self.num_classes, 'class_names': self.class_names, 'angle_bins': self.angle_bins,
            'density_bins': self.density_bins, 'permutations': self.permutations, 'seed': self.seed}

    def merge(self, others: Union['SombreroStatistics', Sequence['SombreroStatistics']]) -> 'SombreroStatistics':
        """Add the statistics of other parts of the batch stream into these (in place; returns self).

        Exact up to float64 summation order. Parts without any batch only have their settings checked.

        Raises:
            ValueError: a part has other settings, another map shape or another hue-plane extent
                (named, with both values).
        """
        for other in ([others] if isinstance(others, SombreroStatistics) else others):
            _check_mergeable('sombrero statistics', self.settings(), other.settings())
            if other.map_shape is None:
                continue
            if self.map_shape is None:
                self._init_accumulators(*other.map_shape)
            _check_mergeable('sombrero statistics', {'map_shape': tuple(self.map_shape)},
                             {'map_shape': tuple(other.map_shape)})
            mine, theirs = float(self._acc['density_extent']), float(other._acc['density_extent'])
            if mine and theirs and mine != theirs:
                raise ValueError(
                    f'Cannot merge sombrero statistics with other hue-plane histogram extents ({mine!r} here, '
                    f'{theirs!r} there); give every part the extent of the first batch (density_extent=).')
            # out of place: accumulators made under torch.inference_mode cannot be updated outside it
            for key, value in other._acc.items():
                if key != 'density_extent':
                    self._acc[key] = self._acc[key] + value
            if not mine:
                self._acc['density_extent'] = torch.tensor(theirs, dtype=torch.float64)
            self.next_batch = max(self.next_batch, other.next_batch)
        return self

    # --- checkpointing ------------------------------------------------------------------------

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """Accumulators and the stream position (it seeds the permutations), for a resumable run."""
        if self.map_shape is None:
            return {}
        state = {k: v.clone() for k, v in self._acc.items()}
        state['map_shape'] = torch.tensor(list(self.map_shape))
        state['next_batch'] = torch.tensor(self.next_batch)
        return state

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        if not state:
            return
        self._init_accumulators(*state['map_shape'].tolist())
        missing = set(self._acc) - set(state)
        if missing:
            raise ValueError(f'Statistics checkpoint lacks {sorted(missing)}; it was written with other settings.')
        for k in self._acc:
            if state[k].shape != self._acc[k].shape:
                raise ValueError(
                    f'Statistics checkpoint entry {k!r} has shape {tuple(state[k].shape)}, expected '
                    f'{tuple(self._acc[k].shape)}; it was written with other settings.')
            self._acc[k] = state[k].to(torch.float64).clone()
        if 'next_batch' not in state:
            raise ValueError('Statistics checkpoint lacks its stream position; it was written by an older timm_u1.')
        self.next_batch = int(state['next_batch'])
