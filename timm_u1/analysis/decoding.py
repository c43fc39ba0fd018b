"""Class dependence of one angle per image, for G variants at once (e.g. channel orders): the class statistic T and
a cross-validated decoding accuracy, with label-permutation p-values; memory O(variants x folds x classes x bins)."""
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

from .circular import angle_bins, class_statistic, json_float
from .streaming import batch_generator, check_mergeable

__all__ = ['AngleClassAccumulator', 'group_permutations', 'order_null']

# bytes the per-variant label nulls may take (permutations x variants x classes x 3 float64)
_GROUP_NULL_BYTES = 1 << 26


def group_permutations(level, groups: int, num_classes: int) -> int:
    """The label permutations that give each of ``groups`` variants its own null: the level's
    ``order_permutations`` (at most its ``permutations``), fewer where they would take over 64 MB (many classes),
    and none for a single variant."""
    if groups < 2:
        return 0
    fits = _GROUP_NULL_BYTES // (groups * max(num_classes, 1) * 3 * 8)
    return max(0, min(level.order_permutations, level.permutations, max(fits, 19)))


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

    Per variant g: the class statistic T (:func:`timm_u1.analysis.circular.class_statistic`) and the k-fold cross-validated
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
        permutations: Label permutations for variant 0's p-values and its standardised T (0: none).
        seed: Seed of the permutations.
        group_permutations: The first this many of the permutations also give every variant's T its own
            label null, so that variants whose angles spread differently compare by standardised T.
    """

    def __init__(self, num_classes: int, groups: int = 1, folds: int = 5, bins: int = 12,
                 permutations: int = 199, seed: int = 0, group_permutations: int = 0):
        if num_classes < 2:
            raise ValueError(f'AngleClassAccumulator needs >= 2 classes, got {num_classes}.')
        if folds < 2 or bins < 1 or groups < 1:
            raise ValueError(f'Need folds >= 2, bins >= 1, groups >= 1; got {folds}, {bins}, {groups}.')
        self.num_classes, self.groups, self.folds, self.bins = num_classes, groups, folds, bins
        if not 0 <= group_permutations <= permutations:
            raise ValueError(f'group_permutations must be in [0, permutations={permutations}], got {group_permutations}.')
        self.permutations, self.seed, self.group_permutations = permutations, seed, group_permutations
        self.next_batch = 0  # index of the next batch in the whole stream: seeds its permutations
        f64 = dict(dtype=torch.float64)
        self.sums = torch.zeros(groups, num_classes, 3, **f64)
        self.hist = torch.zeros(groups, folds, num_classes, bins, **f64)
        self.perm_sums = torch.zeros(permutations, num_classes, 3, **f64)
        self.perm_hist = torch.zeros(permutations, folds, num_classes, bins, **f64)
        self.group_perm_sums = torch.zeros(group_permutations, groups, num_classes, 3, **f64)
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
        sector = angle_bins(angle, self.bins)  # (B, G)
        values = torch.cat([u * valid.unsqueeze(-1), valid.unsqueeze(-1)], -1)  # (B, G, 3)
        gi = torch.arange(g).unsqueeze(0)
        self.sums.view(-1, 3).index_add_(0, (gi * self.num_classes + labels.unsqueeze(1)).flatten(), values.reshape(-1, 3))
        flat = ((gi * self.folds + fold.unsqueeze(1)) * self.num_classes + labels.unsqueeze(1)) * self.bins + sector
        self.hist.view(-1).index_add_(0, flat.flatten(), valid.flatten())
        if self.permutations:
            p = self.permutations
            perm = labels[torch.rand(p, b, generator=batch_generator(self.seed, index)).argsort(1)]  # (P, B)
            pi = torch.arange(p).unsqueeze(1)
            self.perm_sums.view(-1, 3).index_add_(
                0, (pi * self.num_classes + perm).flatten(), values[:, 0].unsqueeze(0).expand(p, b, 3).reshape(-1, 3))
            flat = ((pi * self.folds + fold.unsqueeze(0)) * self.num_classes + perm) * self.bins + sector[:, 0].unsqueeze(0)
            self.perm_hist.view(-1).index_add_(0, flat.flatten(), valid[:, 0].unsqueeze(0).expand(p, b).flatten())
            if self.group_permutations:
                q = self.group_permutations  # the first q of the same draws, for every variant
                rows = ((pi[:q].unsqueeze(-1) * g + gi.unsqueeze(0)) * self.num_classes + perm[:q].unsqueeze(-1))
                self.group_perm_sums.view(-1, 3).index_add_(
                    0, rows.flatten(), values.unsqueeze(0).expand(q, b, g, 3).reshape(-1, 3))

    def settings(self) -> Dict[str, Any]:
        """What must match for two accumulators to merge."""
        return {'num_classes': self.num_classes, 'groups': self.groups, 'folds': self.folds, 'bins': self.bins,
                'permutations': self.permutations, 'seed': self.seed, 'group_permutations': self.group_permutations}

    def merge(
            self, others: Union['AngleClassAccumulator', Sequence['AngleClassAccumulator']],
    ) -> 'AngleClassAccumulator':
        """Add other parts of the stream into this one (in place; returns self)."""
        for other in ([others] if isinstance(others, AngleClassAccumulator) else others):
            check_mergeable('angle-class accumulators', self.settings(), other.settings())
            for key in ('sums', 'hist', 'perm_sums', 'perm_hist', 'group_perm_sums'):
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
            'statistic': [json_float(float(v)) for v in t],
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
                'statistic_null_sd': float(t_perm.std()),
                'statistic_z': _standardised(t[0], t_perm),
                'p_value': (1 + int((t_perm >= t[0] - tol).sum())) / (self.permutations + 1),
                'accuracy_null_mean': float(acc_perm.mean()),
                'accuracy_p_value': (1 + int((acc_perm >= acc[0] - 1e-12).sum())) / (self.permutations + 1),
            })
            if self.group_permutations >= 2:
                null = class_statistic(self.group_perm_sums)  # (Q, G)
                out['statistic_z_groups'] = [_standardised(t[g], null[:, g]) for g in range(self.groups)]
        return out


def _standardised(statistic: torch.Tensor, null: torch.Tensor) -> Optional[float]:
    """(T - mean of its null) / sd of its null; None where T or the null's spread is undefined."""
    sd = float(null.std())
    if not sd > 0 or math.isnan(float(statistic)):
        return None
    return (float(statistic) - float(null.mean())) / sd


def order_null(values: Dict[str, Optional[List[Optional[float]]]]) -> Dict[str, Any]:
    """Where the natural order (entry 0 of each list) falls among the random orders (the rest), per named figure."""
    out: Dict[str, Any] = {}
    for name, listed in values.items():
        if not listed:
            continue
        v = torch.tensor([float('nan') if x is None else x for x in listed], dtype=torch.float64)
        out.setdefault('orders', len(v) - 1)
        null = v[1:][~torch.isnan(v[1:])]
        nat = float(v[0])
        if null.numel() == 0 or math.isnan(nat):
            continue
        out[name] = {
            'natural': nat,
            'median': float(null.median()),
            'q05': float(null.quantile(0.05)), 'q95': float(null.quantile(0.95)),
            # share of random orders strictly below the natural one: 0.5 = a typical order
            'percentile': float((null < nat).double().mean()),
            'p_value': (1 + int((null >= nat - 1e-12 * max(1.0, abs(nat))).sum())) / (null.numel() + 1),
            'values': null.tolist(),
        }
    return out
