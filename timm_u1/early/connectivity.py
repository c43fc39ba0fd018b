""" What a lateral kernel says about orientation: selectivity, co-axiality, association fields, and
their comparison with the group-based (SE(2)) models of V1 horizontal connections.

Every function reads **connection maps** ``A[i, j, r, c]``: the weight from source filter i at q to
target filter j at q + d, with ``d_x = c - centre`` and ``d_y = centre - r`` (y up), as
:func:`timm_u1.early.lateral.connection_maps` returns them (never the raw conv weight, whose
spatial index is flipped). Orientations are edge orientations in [0, pi), counter-clockwise from +x,
as :mod:`timm_u1.early.fits` reports them (``edge_theta``).

* :func:`orientation_selectivity`: connection strength against the orientation difference of the
  filters it joins: tuning curve, Spearman rho, selectivity index and a permutation p (orientations
  shuffled across filters).
* :func:`co_axiality`: the iso-oriented maps rotated into the source filter's frame and averaged; the
  principal axis of their positive part (0 = along the filter's edge: co-axial).
* :func:`association_field` / :func:`association_error`: at each displacement the orientation of the
  most strongly connected filter; its error against the co-circularity prediction
  ``theta_cc(x, y) = 2 atan2(y, x)`` of the SE(2) model (Citti & Sarti 2006), against an
  orientation-shuffled null (uniformly random orientations give about 45 degrees).
* :func:`direction_process_kernel` / :func:`kernel_correlation`: Mumford's direction process
  (``dx = cos(theta) ds, dy = sin(theta) ds, dtheta = sigma dW``, occupancy weighted by exp(-s / lambda))
  by Monte Carlo, and the Pearson r between it and the learned kernel binned by orientation difference
  in the source's frame (sigma and lambda chosen on a grid), against the same shuffled null.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'wrap_pi', 'orientation_difference', 'orientation_selectivity', 'rotated_maps', 'co_axiality',
    'cocircular_orientation', 'association_field', 'association_error', 'direction_process_kernel',
    'binned_kernel', 'kernel_correlation', 'AssociationField', 'ORIENTATION_BINS', 'SIGMAS', 'LAMBDAS',
]

TUNING_BINS = 6  # 15-degree bins of |delta theta| in [0, 90]
ORIENTATION_BINS = 8  # bins of the signed orientation difference in [0, 180) for the kernel comparison
SIGMAS = (0.1, 0.2, 0.4, 0.8)  # direction-process curvature noise, rad / sqrt(px)
LAMBDAS = (1.0, 2.0, 4.0, 8.0)  # direction-process decay length, px


def wrap_pi(angle: np.ndarray) -> np.ndarray:
    """An orientation difference wrapped to [-pi/2, pi/2)."""
    return (np.asarray(angle, float) + math.pi / 2) % math.pi - math.pi / 2


def orientation_difference(theta: np.ndarray) -> np.ndarray:
    """|wrap_pi(theta_i - theta_j)| for every pair, in [0, pi/2]."""
    theta = np.asarray(theta, float)
    return np.abs(wrap_pi(theta[:, None] - theta[None, :]))


def _grid(k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(dx, dy) of every cell of a k x k map, y up."""
    c = (k - 1) / 2
    rows, cols = np.mgrid[0:k, 0:k].astype(float)
    return cols - c, c - rows


def _check_maps(maps: np.ndarray, theta: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    maps, theta = np.asarray(maps, float), np.asarray(theta, float)
    if maps.ndim != 4 or maps.shape[0] != maps.shape[1] or maps.shape[2] != maps.shape[3] or maps.shape[2] % 2 == 0:
        raise ValueError(f'connection maps must be (n, n, k, k) with k odd, got shape {maps.shape}.')
    if theta.shape != (maps.shape[0],):
        raise ValueError(f'one orientation per filter is needed: {maps.shape[0]} filters, {theta.shape} orientations.')
    return maps, theta


def _spearman_against(ranked: np.ndarray, values: np.ndarray) -> float:
    """Pearson correlation of fixed (centred, unit-norm) ranks with the ranks of ``values``."""
    r = _ranks(values)
    r -= r.mean()
    norm = np.linalg.norm(r)
    return float(ranked @ r / norm) if norm > 0 else math.nan


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values).astype(float)


def orientation_selectivity(maps: np.ndarray, theta: np.ndarray, permutations: int = 10000,
                            seed: int = 0) -> Dict[str, Any]:
    """Strength of the connections between filters against their orientation difference (pairs i != j).

    Excitatory strength ``w_ij = sum_d [A_ij(d)]_+`` (inhibitory: ``[-A]_+``). Returns the tuning curve
    (mean w in 15-degree bins of delta theta), Spearman rho(w, delta theta) (negative: iso-orientation
    preferred), the selectivity index ``SI = (w_iso - w_orth) / (w_iso + w_orth)`` (iso: delta theta < 22.5
    degrees, orth: > 67.5), and the one-sided permutation p of rho (orientations shuffled across filters).
    """
    maps, theta = _check_maps(maps, theta)
    n = len(theta)
    off = ~np.eye(n, dtype=bool)
    excit = np.clip(maps, 0, None).sum((2, 3))[off]
    inhib = np.clip(-maps, 0, None).sum((2, 3))[off]
    dtheta = orientation_difference(theta)[off]
    out = {'pairs': int(off.sum()), 'filters': n}
    for name, w in (('excitatory', excit), ('inhibitory', inhib)):
        out[name] = _tuning(w, dtheta, theta, off, permutations if name == 'excitatory' else 0, seed)
    return out


def _tuning(w: np.ndarray, dtheta: np.ndarray, theta: np.ndarray, off: np.ndarray, permutations: int,
            seed: int) -> Dict[str, Any]:
    edges = np.linspace(0, math.pi / 2, TUNING_BINS + 1)
    which = np.clip(np.digitize(dtheta, edges) - 1, 0, TUNING_BINS - 1)
    curve = [float(w[which == b].mean()) if np.any(which == b) else None for b in range(TUNING_BINS)]
    iso, orth = w[dtheta < math.pi / 8], w[dtheta > 3 * math.pi / 8]
    si = None
    if len(iso) and len(orth) and iso.mean() + orth.mean() > 0:
        si = float((iso.mean() - orth.mean()) / (iso.mean() + orth.mean()))
    ranked = _ranks(w)
    ranked -= ranked.mean()
    ranked /= np.linalg.norm(ranked) or 1.0
    rho = _spearman_against(ranked, dtheta)
    result: Dict[str, Any] = {'bin_edges_deg': np.degrees(edges).tolist(), 'tuning': curve,
                              'spearman_rho': rho if math.isfinite(rho) else None,
                              'selectivity_index': si, 'permutations': permutations, 'p': None}
    if permutations and not math.isnan(rho):
        rng = np.random.default_rng(seed)
        hits = 0
        for _ in range(permutations):
            shuffled = orientation_difference(rng.permutation(theta))[off]
            hits += _spearman_against(ranked, shuffled) <= rho
        result['p'] = (hits + 1) / (permutations + 1)
    return result


def rotated_maps(maps: np.ndarray, theta: np.ndarray, pairs: Sequence[Tuple[int, int]]) -> np.ndarray:
    """``A_ij`` of each pair resampled in the frame of source i (its edge along +x): the value at d' is
    A_ij(R(theta_i) d'), bilinear, 0 outside the map."""
    from scipy.ndimage import map_coordinates

    k = maps.shape[-1]
    c = (k - 1) / 2
    dx, dy = _grid(k)
    out = np.zeros((len(pairs), k, k))
    for n, (i, j) in enumerate(pairs):
        ct, st = math.cos(theta[i]), math.sin(theta[i])
        x, y = ct * dx - st * dy, st * dx + ct * dy  # d = R(theta_i) d'
        out[n] = map_coordinates(maps[i, j], [c - y, c + x], order=1, mode='constant', cval=0.0)
    return out


def _principal_axis(field: np.ndarray) -> Tuple[Optional[float], Optional[float]]:
    """Angle in [-90, 90) degrees and elongation of the second-moment tensor of a map's positive part
    (the centre cell left out: it has no direction)."""
    k = field.shape[0]
    dx, dy = _grid(k)
    w = np.clip(field, 0, None)
    w[k // 2, k // 2] = 0.0
    total = w.sum()
    if total <= 0:
        return None, None
    txx, tyy, txy = (w * dx * dx).sum() / total, (w * dy * dy).sum() / total, (w * dx * dy).sum() / total
    alpha = 0.5 * math.atan2(2 * txy, txx - tyy)
    spread = math.hypot(txx - tyy, 2 * txy)
    return math.degrees(alpha), spread / (txx + tyy) if txx + tyy > 0 else None


def co_axiality(maps: np.ndarray, theta: np.ndarray) -> Dict[str, Any]:
    """The iso-oriented maps (pairs i != j with delta theta < 22.5 degrees) rotated into the source's frame
    and averaged; its principal-axis angle (0: co-axial, +-90: side by side) and elongation."""
    maps, theta = _check_maps(maps, theta)
    dtheta = orientation_difference(theta)
    pairs = [(i, j) for i in range(len(theta)) for j in range(len(theta)) if i != j and dtheta[i, j] < math.pi / 8]
    if not pairs:
        return {'pairs': 0, 'mean_map': None, 'axis_deg': None, 'elongation': None}
    mean = rotated_maps(maps, theta, pairs).mean(0)
    axis, elongation = _principal_axis(mean)
    return {'pairs': len(pairs), 'mean_map': mean.tolist(), 'axis_deg': axis, 'elongation': elongation}


def cocircular_orientation(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The SE(2) co-circularity prediction in a frame whose reference edge lies along +x: the orientation
    at (x, y) of the circle through the origin tangent to +x, ``2 atan2(y, x) mod pi``."""
    return (2 * np.arctan2(dy, dx)) % math.pi


@dataclass
class AssociationField:
    """Per (reference filter, displacement d != 0): the displacement in the reference's frame (x, y), the
    orientation of the most strongly connected filter relative to the reference's (in [0, pi)), and
    that connection's strength."""
    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    strength: np.ndarray


def association_field(maps: np.ndarray, theta: np.ndarray) -> AssociationField:
    """For each source i and d != 0: j*(d) = argmax_j A_ij(d); the field is theta_j* - theta_i at R(-theta_i) d."""
    maps, theta = _check_maps(maps, theta)
    n, k = maps.shape[0], maps.shape[-1]
    dx, dy = _grid(k)
    centre = (dx == 0) & (dy == 0)
    best = maps.argmax(axis=1)  # (i, r, c): the target filter most strongly connected at d
    strength = np.take_along_axis(maps, best[:, None], axis=1)[:, 0]
    xs, ys, angles, strengths = [], [], [], []
    for i in range(n):
        ct, st = math.cos(theta[i]), math.sin(theta[i])
        xs.append((ct * dx + st * dy)[~centre])  # d' = R(-theta_i) d
        ys.append((-st * dx + ct * dy)[~centre])
        angles.append(((theta[best[i]] - theta[i]) % math.pi)[~centre])
        strengths.append(strength[i][~centre])
    return AssociationField(*(np.concatenate(v) for v in (xs, ys, angles, strengths)))


def association_error(maps: np.ndarray, theta: np.ndarray, shuffles: int = 1000, seed: int = 0) -> Dict[str, Any]:
    """E_theta: the strength-weighted mean |wrap_pi(field - theta_cc)| in degrees over the displacements whose
    strength is positive and above its median, beside the same number for orientations shuffled across
    filters (``shuffles`` times): its mean, and the one-sided p of the observed error being that low."""
    observed = _field_error(association_field(maps, theta))
    rng = np.random.default_rng(seed)
    null = np.array([_field_error(association_field(maps, rng.permutation(theta))) for _ in range(shuffles)])
    null = null[np.isfinite(null)]
    p = float((np.sum(null <= observed) + 1) / (len(null) + 1)) if len(null) and math.isfinite(observed) else None
    return {'error_deg': observed if math.isfinite(observed) else None, 'shuffled_mean_deg': float(null.mean()) if len(null) else None,
            'shuffled_sd_deg': float(null.std()) if len(null) else None, 'shuffles': len(null), 'p': p}


def _field_error(field: AssociationField) -> float:
    s = field.strength
    keep = s > max(0.0, float(np.median(s)))
    if not np.any(keep):
        return math.nan
    err = np.abs(wrap_pi(field.angle[keep] - cocircular_orientation(field.x[keep], field.y[keep])))
    return float(np.degrees((s[keep] * err).sum() / s[keep].sum()))


def _orientation_bin(angle: Any, bins: int) -> Any:
    """The bin of an orientation (mod pi) among ``bins`` bins centred on 0, pi / bins, ...: bin 0 holds
    (-pi / 2 bins, pi / 2 bins), so that 'the same orientation' is one bin, not the edge of two."""
    return np.rint((np.asarray(angle, float) % math.pi) / math.pi * bins).astype(int) % bins


def direction_process_kernel(k: int, sigma: float, lambdas: Sequence[float] = LAMBDAS, bins: int = ORIENTATION_BINS,
                             paths: int = 20000, step: float = 0.1, seed: int = 0) -> Dict[float, np.ndarray]:
    """Gamma(d, delta theta) of Mumford's direction process on a k x k grid, one per decay length lambda.

    Paths ``dx = cos(theta) ds, dy = sin(theta) ds, dtheta = sigma dW`` start at the origin along +x and
    along -x (the process run both ways), and their occupancy of each (grid cell, orientation bin) is
    weighted by exp(-s / lambda); orientations are taken mod pi. Returns lambda -> (bins, k, k), each
    summing to 1, bin b centred on delta theta = b pi / bins (:func:`_orientation_bin`).
    """
    rng = np.random.default_rng(seed)
    c = (k - 1) / 2
    reach = math.hypot(c + 0.5, c + 0.5)
    length = min(reach * 1.5, 6 * max(lambdas))  # beyond the grid or the longest decay, nothing counts
    theta = np.where(np.arange(paths) % 2 == 0, 0.0, math.pi)
    x, y = np.zeros(paths), np.zeros(paths)
    hists = {lam: np.zeros((bins, k, k)) for lam in lambdas}
    for n in range(1, int(math.ceil(length / step)) + 1):
        x += np.cos(theta) * step
        y += np.sin(theta) * step
        theta += sigma * math.sqrt(step) * rng.standard_normal(paths)
        col, row = np.rint(c + x).astype(int), np.rint(c - y).astype(int)
        inside = (col >= 0) & (col < k) & (row >= 0) & (row < k)
        b = _orientation_bin(theta[inside], bins)
        for lam, hist in hists.items():
            np.add.at(hist, (b, row[inside], col[inside]), math.exp(-n * step / lam))
    return {lam: hist / hist.sum() if hist.sum() > 0 else hist for lam, hist in hists.items()}


def binned_kernel(maps: np.ndarray, theta: np.ndarray, bins: int = ORIENTATION_BINS,
                  sources: Optional[Sequence[int]] = None) -> np.ndarray:
    """The learned kernel in the frame of its source, by signed orientation difference theta_j - theta_i
    (mod pi, bins centred on multiples of pi / bins): (bins, k, k), the mean of the rotated maps A_ij of the
    pairs in each bin (i != j)."""
    maps, theta = _check_maps(maps, theta)
    n, k = maps.shape[0], maps.shape[-1]
    sources = range(n) if sources is None else sources
    pairs = [(i, j) for i in sources for j in range(n) if i != j]
    rotated = rotated_maps(maps, theta, pairs)
    which = np.array([_orientation_bin(theta[j] - theta[i], bins) for i, j in pairs], dtype=int)
    out = np.zeros((bins, k, k))
    for b in range(bins):
        if np.any(which == b):
            out[b] = rotated[which == b].mean(0)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def _centre_out(arr: np.ndarray) -> np.ndarray:
    k = arr.shape[-1]
    mask = np.ones((k, k), bool)
    mask[k // 2, k // 2] = False
    return arr[..., mask]


def kernel_correlation(maps: np.ndarray, theta: np.ndarray, models: Dict[Tuple[float, float], np.ndarray],
                       shuffles: int = 200, boots: int = 200, seed: int = 0) -> Dict[str, Any]:
    """Pearson r between the binned learned kernel (:func:`binned_kernel`, centre cell left out) and the
    best of the direction-process kernels ``models`` ((sigma, lambda) -> (bins, k, k)); beside the best r
    of the same search for orientations shuffled across filters (one-sided p) and a bootstrap 95 % CI of
    r at the chosen (sigma, lambda) over source filters."""
    maps, theta = _check_maps(maps, theta)

    def best(kernel: np.ndarray) -> Tuple[float, Tuple[float, float]]:
        scores = {key: _pearson(_centre_out(kernel), _centre_out(model)) for key, model in models.items()}
        key = max(scores, key=lambda q: -math.inf if math.isnan(scores[q]) else scores[q])
        return scores[key], key

    r, key = best(binned_kernel(maps, theta))
    rng = np.random.default_rng(seed)
    null = np.array([best(binned_kernel(maps, rng.permutation(theta)))[0] for _ in range(shuffles)])
    null = null[np.isfinite(null)]  # a flat kernel (all zeros: K at a V1 stem's initialisation) has no r
    n = len(theta)
    boot = np.array([_pearson(_centre_out(binned_kernel(maps, theta, sources=rng.integers(0, n, n))),
                              _centre_out(models[key])) for _ in range(boots)])
    boot = boot[np.isfinite(boot)]
    return {'r': r if math.isfinite(r) else None, 'sigma': key[0], 'lambda': key[1],
            'ci95': [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if len(boot) else None,
            'shuffled_mean_r': float(null.mean()) if len(null) else None, 'shuffles': len(null),
            'p': float((np.sum(null >= r) + 1) / (len(null) + 1)) if math.isfinite(r) else None}
