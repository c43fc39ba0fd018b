"""Streaming sombrero statistics of activation maps (docs/analysis.md, "What is computed"): energy map, radial
profile and centre concentration, hue-plane density, per-class circular statistics of the hue theta and of the
energy-centroid angle phi, and the within-batch label-permutation test of their class means. Only sums and
histograms are kept; parts of one stream merge exactly."""
import math
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from ..core.hue import activation_hue, energy, energy_centroid, image_plane_grid
from .circular import RAYLEIGH_QUESTION, angle_bins, circular_summary, json_float, rayleigh_log10_p, rayleigh_test
from .streaming import batch_generator, check_mergeable

__all__ = ['SombreroStatistics', 'centre_mask']


def centre_mask(h: int, w: int) -> torch.Tensor:
    """Locations of an h x w grid with r <= R/2, R the grid's half-size (the centre for the concentration)."""
    _, _, _, r = image_plane_grid(h, w)
    half = max((w - 1) / 2, (h - 1) / 2)
    return r <= half / 2 + 1e-6


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
    stream with :meth:`merge` (docs/analysis.md, "Several processes"). With a ``density_extent`` of None, every
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
        self._inner = centre_mask(h, w)
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

        phi_unit = self._add_space(e64, labels, all_row) if self.has_space else torch.zeros(b, 2, dtype=torch.float64)
        hue_unit = self._add_hue(hs, e64, labels, all_row) if hs is not None else torch.zeros(b, 2, dtype=torch.float64)
        if self.permutations and bool(labelled.any()):
            self._add_permutations(labels[labelled], hue_unit[labelled], phi_unit[labelled], index)

    def _add_space(self, e64: torch.Tensor, labels: torch.Tensor, all_row: torch.Tensor) -> torch.Tensor:
        """Add the image-plane figures of a batch's energy maps (B, H, W); returns the (B, 2) centroid-angle vectors."""
        acc = self._acc
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
        phi_bin = angle_bins(phi, self.angle_bins)
        for rows in (labels, all_row):
            use = has_phi & (rows >= 0)
            self._add_images(acc['phi_images'], acc['phi_hist'], rows[use], phi_unit[use], phi_bin[use])
        return phi_unit

    def _add_hue(self, hs, e64: torch.Tensor, labels: torch.Tensor, all_row: torch.Tensor) -> torch.Tensor:
        """Add the activation-hue figures of a batch (``hs``: its HueStats); returns the (B, 2) per-image hue vectors."""
        acc = self._acc
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
        bins = angle_bins(theta, self.angle_bins).flatten(1)  # (B, HW)
        for rows in (labels, all_row):
            use = rows >= 0
            acc['hue_weighted'].index_add_(0, rows[use], per_image[use])
            self._add_images(acc['hue_images'], None, rows[use & has_hue], hue_unit[use & has_hue], None)
            flat = (rows[use].unsqueeze(1) * self.angle_bins + bins[use]).flatten()
            acc['hue_hist'].view(-1).index_add_(0, flat, wgt[use].flatten(1).flatten())
        return hue_unit

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
        order = torch.rand(p, n, generator=batch_generator(self.seed, batch_index)).argsort(1)
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
            groups.append({k: (json_float(v) if isinstance(v, float) else v) for k, v in entry.items()})
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
                'x': json_float(float(cen.x)), 'y': json_float(float(cen.y)),
                'angle_deg': json_float(math.degrees(float(cen.angle))), 'length': json_float(float(cen.length))}
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
            check_mergeable('sombrero statistics', self.settings(), other.settings())
            if other.map_shape is None:
                continue
            if self.map_shape is None:
                self._init_accumulators(*other.map_shape)
            check_mergeable('sombrero statistics', {'map_shape': tuple(self.map_shape)},
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
