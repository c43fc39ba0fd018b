""" Fits of one 2-D filter: Laplacian of Gaussian, difference of Gaussians, Gabor, radial symmetry,
spectral orientation, and the luminance (SVD) part of a colour filter.

Conventions shared by every function here (and by the later lateral-connection analyses):

* A filter is a (H, W) array indexed ``F[row, col]`` as a conv weight is stored (PyTorch and timm
  cross-correlate, so the weight is the template the layer matches).
* Pixel coordinates have their origin at the kernel centre and **y up**: ``x = col - (W - 1) / 2``,
  ``y = (H - 1) / 2 - row``. Angles are counter-clockwise from +x, in radians.
* A Gabor's ``theta`` is its **carrier** (wave-vector) direction, in [0, pi); the edge / bar
  orientation is ``edge_theta = theta + pi/2 (mod pi)``, also in [0, pi). :func:`spectral_orientation`
  reports both the same way.
* Errors are relative: ``e = ||F - model|| / ||F - mean(F)||`` (0 = perfect, 1 = no better than the
  mean); the fraction of variance explained is ``fve = 1 - e**2``. A flat filter (no variance) has
  ``e = nan``.

Kernels smaller than a fit needs are refused by name (:class:`KernelTooSmallError`): Gabor fits need
7x7 (9 parameters), LoG / DoG fits 5x5; the spectral orientation index works on any kernel of 2x2
and more, 3x3 included. Fits use ``scipy.optimize.least_squares`` (trust-region reflective, analytic
Jacobians) from several starts and keep the best.
"""
import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'MIN_GABOR_KERNEL', 'MIN_LOG_KERNEL', 'GABOR_STARTS', 'LOG_STARTS', 'DOG_STARTS', 'MAX_FILTERS', 'ERROR_MAX', 'CLASS_MARGIN', 'CLASSES',
    'KernelTooSmallError', 'Luminance', 'LogFit', 'DogFit', 'GaborFit', 'Orientation',
    'pixel_grid', 'luminance', 'relative_error', 'log_model', 'dog_model', 'gabor_model',
    'fit_log', 'fit_dog', 'fit_gabor', 'radial_symmetry_index', 'rot90_correlation', 'spectral_orientation',
    'classify',
]

MIN_GABOR_KERNEL = 7  # 9 parameters need more than 25 pixels
MIN_LOG_KERNEL = 5
GABOR_STARTS = 8
LOG_STARTS = 4
DOG_STARTS = 2
# the classification rule (docs/filters.md): a fit "explains" a filter at e <= ERROR_MAX
# (FVE >= 0.75) and one model beats the other by at least CLASS_MARGIN
ERROR_MAX = 0.5
CLASS_MARGIN = 0.05
CLASSES = ('gabor-like', 'centre-surround', 'unstructured', 'flat')
# the analysis subsamples a larger bank to this many filters (ViT patch embeddings have 768 of 16x16)
MAX_FILTERS = 128
_SPECTRUM_SIZE = 32  # zero-padded FFT size of the orientation index and the Gabor starts
# per start: relative errors to ~1e-6 are plenty, and a start that has not converged in 200
# evaluations is a poor start (a filter without the model's structure), not one worth waiting for
MAX_NFEV = 200
SCOUT_NFEV = 20
REFINED = 2
TOLERANCE = 1e-6


class KernelTooSmallError(ValueError):
    """A filter is smaller than the fit needs; the message names the kernel size and the minimum."""


def _filter(f: Any) -> np.ndarray:
    arr = np.asarray(f.detach().cpu().numpy() if hasattr(f, 'detach') else f, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f'a filter must be a 2-D (H, W) array, got shape {tuple(arr.shape)}; '
                         f'take the luminance part of a colour filter first (timm_u1.early.fits.luminance)')
    if not np.all(np.isfinite(arr)):
        raise ValueError('the filter has NaN or infinite values; a fit needs finite weights')
    return arr


def _require(arr: np.ndarray, minimum: int, fit: str) -> None:
    h, w = arr.shape
    if min(h, w) < minimum:
        raise KernelTooSmallError(
            f'{fit} fits need kernels of at least {minimum}x{minimum}, got {h}x{w}; use the spectral '
            f'orientation index (timm_u1.early.fits.spectral_orientation) for {h}x{w} kernels')


def pixel_grid(shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y) coordinates of every pixel of an (H, W) kernel: origin at the centre, y up."""
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    return cols - (w - 1) / 2, (h - 1) / 2 - rows


def relative_error(f: np.ndarray, model: np.ndarray) -> float:
    """``||f - model|| / ||f - mean f||``; nan for a flat filter."""
    spread = np.linalg.norm(f - f.mean())
    if spread <= 1e-12 * max(1.0, float(np.abs(f).max())):
        return math.nan
    return float(np.linalg.norm(f - model) / spread)


# --- colour filters -----------------------------------------------------------------------------

@dataclass
class Luminance:
    """The luminance decomposition of a (N, C, H, W) bank.

    ``spatial[i]`` is the filter seen along its best colour direction ``colour[i]`` (unit C-vector
    with a non-negative sum, i.e. towards white), ``achromatic_fraction[i]`` is s1^2 / sum s^2 of
    the SVD of filter i's (C, H*W) matrix (1 = one colour direction carries all of it), and
    ``channel_sum[i]`` is the filter summed over channels.
    """
    spatial: np.ndarray
    colour: np.ndarray
    achromatic_fraction: np.ndarray
    channel_sum: np.ndarray


def luminance(weight: Any) -> Luminance:
    """SVD luminance part of every filter of a (N, C, H, W) conv weight (a (N, H, W) bank is C = 1)."""
    w = np.asarray(weight.detach().cpu().numpy() if hasattr(weight, 'detach') else weight, dtype=np.float64)
    if w.ndim == 3:
        w = w[:, None]
    if w.ndim != 4 or min(w.shape) < 1:
        raise ValueError(f'a filter bank must be (N, C, H, W), got shape {tuple(w.shape)}')
    n, c, h, k = w.shape
    mats = w.reshape(n, c, h * k)
    u, s, vt = np.linalg.svd(mats, full_matrices=False)
    colour, row = u[:, :, 0], vt[:, 0, :]
    flip = np.where(colour.sum(1) < 0, -1.0, 1.0)  # the colour vector points towards white
    colour, row = colour * flip[:, None], row * flip[:, None]
    energy = (s ** 2).sum(1)
    fraction = np.divide(s[:, 0] ** 2, energy, out=np.ones(n), where=energy > 0)
    spatial = (s[:, :1] * row).reshape(n, h, k)
    return Luminance(spatial, colour, fraction, w.sum(1))


# --- Laplacian of Gaussian and difference of Gaussians ------------------------------------------

@dataclass
class LogFit:
    """``A (1 - r^2 / (2 sigma^2)) exp(-r^2 / (2 sigma^2)) + offset`` about (x0, y0); A > 0 is ON-centre."""
    amplitude: float
    sigma: float
    x0: float
    y0: float
    offset: float
    error: float
    fve: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def log_model(p: Sequence[float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The LoG of parameters (A, sigma, x0, y0, offset) at pixel coordinates (x, y)."""
    a, sigma, x0, y0, c = p
    u = ((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2)
    return a * (1 - u) * np.exp(-u) + c


def _log_jac(p, x, y):
    a, sigma, x0, y0, _ = p
    dx, dy = x - x0, y - y0
    u = (dx ** 2 + dy ** 2) / (2 * sigma ** 2)
    e = np.exp(-u)
    dl_du = a * (u - 2) * e
    return np.stack([(1 - u) * e, dl_du * (-2 * u / sigma), dl_du * (-dx / sigma ** 2), dl_du * (-dy / sigma ** 2),
                     np.ones_like(x)], -1)


def _centroid(f: np.ndarray, x: np.ndarray, y: np.ndarray) -> Tuple[float, float]:
    weight = np.abs(f - f.mean())
    total = weight.sum()
    if total <= 0:
        return 0.0, 0.0
    return float((weight * x).sum() / total), float((weight * y).sum() / total)


def _best(fun, jac, starts, bounds, f, x, y):
    """Best least-squares parameters over several starts: every start runs ``SCOUT_NFEV`` evaluations,
    the ``REFINED`` best then run to convergence (a start that is poor after a few steps rarely wins)."""
    try:
        from scipy.optimize import least_squares
    except ImportError as e:
        raise ImportError('the filter fits need scipy (a timm_u1 dependency): pip install scipy') from e

    target = f.ravel()

    def run(p0, max_nfev):
        return least_squares(lambda p: fun(p, x, y).ravel() - target, p0,
                             jac=lambda p: jac(p, x, y).reshape(target.size, -1), bounds=bounds, method='trf',
                             x_scale='jac', max_nfev=max_nfev, ftol=TOLERANCE, xtol=TOLERANCE, gtol=TOLERANCE)

    scouts = [run(np.clip(p0, bounds[0] + 1e-9, bounds[1] - 1e-9), SCOUT_NFEV) for p0 in starts]
    scouts.sort(key=lambda r: r.cost)
    finals = [r if r.status != 0 else run(r.x, MAX_NFEV) for r in scouts[:REFINED]]
    return min(finals, key=lambda r: r.cost).x


def _normalised(f: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """(f - mean) / std, the mean and the std: fits run on unit-scale filters."""
    mean, std = float(f.mean()), float(f.std())
    return (f - mean) / (std if std > 0 else 1.0), mean, std if std > 0 else 1.0


def fit_log(f: Any, starts: int = LOG_STARTS) -> LogFit:
    """Least-squares LoG fit of a 2-D filter (at least 5x5), best of ``starts`` starts.

    Starts: sigma in (0.5, 1, 2, k/3) about the centroid of |F - mean|, A's sign from the pixel
    nearest it. Bounds: sigma in [0.3, k], x0, y0 in [-k/2, k/2].
    """
    f = _filter(f)
    _require(f, MIN_LOG_KERNEL, 'LoG')
    k = min(f.shape)
    x, y = pixel_grid(f.shape)
    g, mean, std = _normalised(f)
    cx, cy = _centroid(g, x, y)
    centre = g[np.unravel_index(np.argmin(x ** 2 + y ** 2 + (x - cx) ** 2 + (y - cy) ** 2), g.shape)]
    a0 = 2.0 if centre >= 0 else -2.0
    sigmas = [0.5, 1.0, 2.0, k / 3][:max(1, starts)]
    bounds = (np.array([-np.inf, 0.3, -k / 2, -k / 2, -np.inf]), np.array([np.inf, float(k), k / 2, k / 2, np.inf]))
    p = _best(log_model, _log_jac, [np.array([a0, s, cx, cy, 0.0]) for s in sigmas], bounds, g, x, y)
    a, sigma, x0, y0, c = p
    error = relative_error(g, log_model(p, x, y))
    return LogFit(float(a * std), float(sigma), float(x0), float(y0), float(c * std + mean), error, 1 - error ** 2)


@dataclass
class DogFit:
    """``A1 exp(-r^2 / (2 sigma1^2)) - A2 exp(-r^2 / (2 sigma2^2)) + offset`` with sigma1 <= sigma2."""
    amplitude_centre: float
    sigma_centre: float
    amplitude_surround: float
    sigma_surround: float
    x0: float
    y0: float
    offset: float
    error: float
    fve: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def dog_model(p: Sequence[float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The DoG of parameters (A1, sigma1, A2, sigma2, x0, y0, offset) at pixel coordinates (x, y)."""
    a1, s1, a2, s2, x0, y0, c = p
    r2 = (x - x0) ** 2 + (y - y0) ** 2
    return a1 * np.exp(-r2 / (2 * s1 ** 2)) - a2 * np.exp(-r2 / (2 * s2 ** 2)) + c


def _dog_jac(p, x, y):
    a1, s1, a2, s2, x0, y0, _ = p
    dx, dy = x - x0, y - y0
    r2 = dx ** 2 + dy ** 2
    e1, e2 = np.exp(-r2 / (2 * s1 ** 2)), np.exp(-r2 / (2 * s2 ** 2))
    gx = a1 * e1 * dx / s1 ** 2 - a2 * e2 * dx / s2 ** 2
    gy = a1 * e1 * dy / s1 ** 2 - a2 * e2 * dy / s2 ** 2
    return np.stack([e1, a1 * e1 * r2 / s1 ** 3, -e2, -a2 * e2 * r2 / s2 ** 3, gx, gy, np.ones_like(x)], -1)


def fit_dog(f: Any, starts: int = DOG_STARTS) -> DogFit:
    """Least-squares difference-of-Gaussians fit of a 2-D filter (at least 5x5), best of ``starts`` starts.

    Starts (the first ``starts`` of): centre sigma 1 with the centre pixel's sign and the other, then
    sigma 1.5 and 0.5; the surround twice as wide. The two Gaussians are ordered after the fit so that
    sigma_centre <= sigma_surround.
    """
    f = _filter(f)
    _require(f, MIN_LOG_KERNEL, 'DoG')
    k = min(f.shape)
    x, y = pixel_grid(f.shape)
    g, mean, std = _normalised(f)
    cx, cy = _centroid(g, x, y)
    sign = 1.0 if g[np.unravel_index(np.argmin((x - cx) ** 2 + (y - cy) ** 2), g.shape)] >= 0 else -1.0
    # the centre pixel does not always tell the narrow Gaussian's sign (a wide positive surround can
    # lift a negative centre): the first two starts try both
    guesses = ((1.0, sign), (1.0, -sign), (1.5, sign), (0.5, sign))[:max(1, starts)]
    p0 = [np.array([3 * sg, s, 1.5 * sg, 2 * s, cx, cy, 0.0]) for s, sg in guesses]
    bounds = (np.array([-np.inf, 0.3, -np.inf, 0.3, -k / 2, -k / 2, -np.inf]),
              np.array([np.inf, float(k), np.inf, 2.0 * k, k / 2, k / 2, np.inf]))
    p = _best(dog_model, _dog_jac, p0, bounds, g, x, y)
    error = relative_error(g, dog_model(p, x, y))
    a1, s1, a2, s2, x0, y0, c = p
    if s1 > s2:  # the same function with the Gaussians' roles swapped
        a1, s1, a2, s2 = -a2, s2, -a1, s1
    return DogFit(float(a1 * std), float(s1), float(a2 * std), float(s2), float(x0), float(y0),
                  float(c * std + mean), error, 1 - error ** 2)


# --- Gabor --------------------------------------------------------------------------------------

@dataclass
class GaborFit:
    """Ringach (2002) Gabor ``A exp(-x'^2/(2 sx^2) - y'^2/(2 sy^2)) cos(2 pi f x' + phase) + offset``.

    ``x' = (x - x0) cos(theta) + (y - y0) sin(theta)`` runs along the carrier, ``theta`` in [0, pi)
    is the carrier (wave-vector) direction, ``edge_theta = theta + pi/2 (mod pi)`` the edge / bar
    orientation, ``frequency`` in cycles per pixel, ``phase`` in [-pi, pi), amplitude >= 0.
    ``nx = sigma_x f`` and ``ny = sigma_y f`` are Ringach's envelope sizes in carrier periods. Near
    f = 0 the fit is a Gaussian blob (phase near 0 or pi) or a Gaussian first derivative (phase near
    +-pi/2): theta then follows the envelope or the derivative's axis, not a grating.
    """
    amplitude: float
    theta: float
    frequency: float
    sigma_x: float
    sigma_y: float
    x0: float
    y0: float
    phase: float
    offset: float
    error: float
    fve: float
    nx: float
    ny: float
    edge_theta: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def gabor_model(p: Sequence[float], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The Gabor of parameters (A, theta, f, sigma_x, sigma_y, x0, y0, phase, offset) at (x, y)."""
    a, theta, f, sx, sy, x0, y0, phase, c = p
    ct, st = math.cos(theta), math.sin(theta)
    xp = (x - x0) * ct + (y - y0) * st
    yp = -(x - x0) * st + (y - y0) * ct
    return a * np.exp(-xp ** 2 / (2 * sx ** 2) - yp ** 2 / (2 * sy ** 2)) * np.cos(2 * math.pi * f * xp + phase) + c


def _gabor_jac(p, x, y):
    a, theta, f, sx, sy, x0, y0, phase, _ = p
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = x - x0, y - y0
    xp, yp = dx * ct + dy * st, -dx * st + dy * ct
    env = np.exp(-xp ** 2 / (2 * sx ** 2) - yp ** 2 / (2 * sy ** 2))
    arg = 2 * math.pi * f * xp + phase
    cos, sin = np.cos(arg), np.sin(arg)
    g_xp = a * env * (-xp / sx ** 2 * cos - 2 * math.pi * f * sin)
    g_yp = a * env * (-yp / sy ** 2) * cos
    return np.stack([
        env * cos, g_xp * yp - g_yp * xp, -a * env * sin * 2 * math.pi * xp,
        a * env * cos * xp ** 2 / sx ** 3, a * env * cos * yp ** 2 / sy ** 3,
        -ct * g_xp + st * g_yp, -st * g_xp - ct * g_yp, -a * env * sin, np.ones_like(x)], -1)


def _spectrum(f: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power of the mean-removed filter zero-padded to 32x32, and each bin's (kx, ky) in cycles per
    pixel with y up."""
    n = max(_SPECTRUM_SIZE, *f.shape)
    power = np.abs(np.fft.fft2(f - f.mean(), s=(n, n))) ** 2
    k_row, k_col = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing='ij')
    return power, k_col, -k_row  # y = -row, so the row frequency changes sign


def _spectral_peaks(f: np.ndarray, count: int) -> List[Tuple[float, float]]:
    """(theta, f) of the ``count`` strongest spectral peaks of distinct orientation (DC excluded)."""
    power, kx, ky = _spectrum(f)
    n = power.shape[0]
    power = np.where(np.hypot(kx, ky) * n <= 1.0, 0.0, power)
    peaks: List[Tuple[float, float]] = []
    for idx in np.argsort(power, axis=None)[::-1]:
        fx, fy = kx.flat[idx], ky.flat[idx]
        theta = math.atan2(fy, fx) % math.pi
        if all(abs((theta - t + math.pi / 2) % math.pi - math.pi / 2) > math.pi / 8 for t, _ in peaks):
            peaks.append((theta, float(math.hypot(fx, fy))))
        if len(peaks) == count:
            break
    return peaks or [(0.0, 1.0 / n)]


def _gabor_starts(g: np.ndarray, x: np.ndarray, y: np.ndarray, starts: int) -> List[np.ndarray]:
    """Starts: carrier from the FFT peak, centre from the energy centroid, sigma from the
    second moments, phase in (0, pi/2, pi, -pi/2), one f = 0 start; then the second peak's phases."""
    energy = g ** 2
    total = energy.sum() or 1.0
    cx, cy = (energy * x).sum() / total, (energy * y).sum() / total
    spread = math.sqrt(max(0.25, float((energy * ((x - cx) ** 2 + (y - cy) ** 2)).sum() / total) / 2))
    (t1, f1), *rest = _spectral_peaks(g, 2)
    t2, f2 = rest[0] if rest else (t1 + math.pi / 2, f1)
    phases = (0.0, math.pi / 2, math.pi, -math.pi / 2)
    out = [np.array([2.0, t1, f1, spread, spread, cx, cy, ph, 0.0]) for ph in phases]
    out.append(np.array([2.0, t1, 0.0, spread, spread, cx, cy, 0.0, 0.0]))
    out += [np.array([2.0, t2, f2, spread, spread, cx, cy, ph, 0.0]) for ph in phases]
    return out[:max(1, starts)]


def _canonical_gabor(p: np.ndarray) -> np.ndarray:
    """The same Gabor with A >= 0, theta in [0, pi) and phase in [-pi, pi)."""
    a, theta, f, sx, sy, x0, y0, phase, c = p
    if a < 0:
        a, phase = -a, phase + math.pi
    theta = theta % (2 * math.pi)
    if theta >= math.pi:  # x' -> -x': the carrier's direction flips and the phase changes sign
        theta, phase = theta - math.pi, -phase
    phase = (phase + math.pi) % (2 * math.pi) - math.pi
    return np.array([a, theta, f, sx, sy, x0, y0, phase, c])


def fit_gabor(f: Any, starts: int = GABOR_STARTS) -> GaborFit:
    """Least-squares Gabor fit of a 2-D filter (at least 7x7), best of ``starts`` starts (default 8).

    Bounds: f in [0, 0.5] cycles per pixel, sigma_x, sigma_y in [0.5, k], x0, y0 in [-k/2, k/2];
    theta, phase and A are free and brought to their canonical ranges after the fit.
    """
    f = _filter(f)
    _require(f, MIN_GABOR_KERNEL, 'Gabor')
    k = min(f.shape)
    x, y = pixel_grid(f.shape)
    g, mean, std = _normalised(f)
    inf = np.inf
    bounds = (np.array([-inf, -inf, 0.0, 0.5, 0.5, -k / 2, -k / 2, -inf, -inf]),
              np.array([inf, inf, 0.5, float(k), float(k), k / 2, k / 2, inf, inf]))
    p = _canonical_gabor(_best(gabor_model, _gabor_jac, _gabor_starts(g, x, y, starts), bounds, g, x, y))
    error = relative_error(g, gabor_model(p, x, y))
    a, theta, freq, sx, sy, x0, y0, phase, c = (float(v) for v in p)
    return GaborFit(a * std, theta, freq, sx, sy, x0, y0, phase, c * std + mean, error, 1 - error ** 2,
                    sx * freq, sy * freq, (theta + math.pi / 2) % math.pi)


# --- symmetry and orientation indices -----------------------------------------------------------

def radial_symmetry_index(f: Any, centre: Optional[Tuple[float, float]] = None, knot_spacing: float = 0.5) -> float:
    """RSI = 1 - ||F - F_rad|| / ||F - mean F||: 1 = radially symmetric about ``centre``; nan if flat.

    ``centre`` is (x0, y0) in pixel coordinates (y up), e.g. a LoG fit's; default the kernel centre.
    F_rad is the least-squares linear spline in r = |(x, y) - centre| with knots every
    ``knot_spacing`` px. (An average in 0.5-px bins of r would call a smooth LoG asymmetric: on a 7x7
    grid radii 2 and sqrt 5 share a bin.)
    """
    f = _filter(f)
    x, y = pixel_grid(f.shape)
    x0, y0 = centre if centre is not None else (0.0, 0.0)
    r = np.hypot(x - x0, y - y0).ravel() / knot_spacing
    knots = np.arange(int(np.ceil(r.max())) + 1)
    hats = np.clip(1 - np.abs(r[:, None] - knots[None, :]), 0, None)  # linear-spline basis
    coef, *_ = np.linalg.lstsq(hats, f.ravel(), rcond=None)
    return 1 - relative_error(f, (hats @ coef).reshape(f.shape))


def rot90_correlation(f: Any) -> float:
    """Pearson correlation of a square filter with itself rotated by 90 degrees about the kernel centre
    (1 for a radially symmetric filter, -1 for an oriented one of zero mean along one axis); nan if flat."""
    f = _filter(f)
    if f.shape[0] != f.shape[1]:
        raise ValueError(f'rot90_correlation needs a square kernel, got {f.shape[0]}x{f.shape[1]}')
    a, b = f - f.mean(), np.rot90(f) - f.mean()
    denom = math.sqrt(float((a ** 2).sum() * (b ** 2).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan


@dataclass
class Orientation:
    """Spectral orientation index: ``osi`` in [0, 1] (0 = isotropic power, 1 = one orientation),
    the power-weighted carrier direction ``theta`` and the edge orientation ``edge_theta``, both in [0, pi)."""
    osi: float
    theta: float
    edge_theta: float

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def spectral_orientation(f: Any) -> Orientation:
    """Orientation index of any kernel of 2x2 and more, 3x3 included.

    P(k) = |FFT(F - mean F)|^2 zero-padded to 32x32, bins with |k| <= 1 (DC and its four nearest
    neighbours) excluded; z = sum P e^{2 i phi_k} / sum P, OSI = |z|, theta = arg(z) / 2 (carrier),
    edge_theta = theta + pi/2 (mod pi). A flat filter has OSI nan.
    """
    f = _filter(f)
    if min(f.shape) < 2:
        raise KernelTooSmallError(f'the orientation index needs kernels of at least 2x2, got {f.shape[0]}x{f.shape[1]}')
    power, kx, ky = _spectrum(f)
    n = power.shape[0]
    power = np.where(np.hypot(kx, ky) * n <= 1.0 + 1e-9, 0.0, power)
    total = power.sum()
    if total <= 1e-24 * max(1.0, float(np.abs(f).max()) ** 2):
        return Orientation(math.nan, math.nan, math.nan)
    z = (power * np.exp(2j * np.arctan2(ky, kx))).sum() / total
    theta = (float(np.angle(z)) / 2) % math.pi
    return Orientation(float(abs(z)), theta, (theta + math.pi / 2) % math.pi)


def classify(gabor_error: Optional[float], log_error: Optional[float]) -> str:
    """'gabor-like', 'centre-surround', 'unstructured' or 'flat' from the two fits' errors.

    Gabor-like: e_G <= ERROR_MAX and e_G < e_LoG - CLASS_MARGIN; centre-surround: e_LoG <= ERROR_MAX
    and e_LoG < e_G - CLASS_MARGIN; a missing fit (None: the kernel was too small for it) loses every
    comparison; a nan error (a flat filter) is 'flat'.
    """
    if any(e is not None and math.isnan(e) for e in (gabor_error, log_error)):
        return 'flat'
    g = math.inf if gabor_error is None else gabor_error
    lo = math.inf if log_error is None else log_error
    if g <= ERROR_MAX and g < lo - CLASS_MARGIN:
        return 'gabor-like'
    if lo <= ERROR_MAX and lo < g - CLASS_MARGIN:
        return 'centre-surround'
    return 'unstructured'
