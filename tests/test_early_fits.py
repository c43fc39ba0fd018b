"""timm_u1.early.fits: planted parameters are recovered, small kernels are refused by name, the luminance
part of a grey filter is exact, and the conventions (y up, carrier vs edge) hold."""
import math

import numpy as np
import pytest

pytest.importorskip('scipy')

from timm_u1.early.fits import (  # noqa: E402
    ERROR_MAX, KernelTooSmallError, classify, dog_model, fit_dog, fit_gabor, fit_log, gabor_model, log_model,
    luminance, pixel_grid, radial_symmetry_index, rot90_correlation, spectral_orientation,
)


def _angle_gap(a: float, b: float) -> float:
    """Distance of two orientations modulo pi, in degrees."""
    return math.degrees(abs((a - b + math.pi / 2) % math.pi - math.pi / 2))


def _noisy(clean: np.ndarray, rng: np.random.Generator, snr: float = 10.0) -> np.ndarray:
    return clean + rng.normal(0, clean.std() / snr, clean.shape)


def test_a_noisy_planted_gabor_is_recovered():
    rng = np.random.default_rng(21)
    x, y = pixel_grid((7, 7))
    for _ in range(6):
        # at least ~0.25 carrier periods per envelope sigma: below that f and sigma_x trade off
        theta, freq = rng.uniform(0, math.pi), rng.uniform(0.15, 0.3)
        planted = [1.0, theta, freq, rng.uniform(1.5, 2.2), rng.uniform(1.2, 2.2), rng.uniform(-0.5, 0.5),
                   rng.uniform(-0.5, 0.5), rng.uniform(-math.pi, math.pi), 0.2]
        fit = fit_gabor(_noisy(gabor_model(planted, x, y), rng))
        assert _angle_gap(fit.theta, theta) < 5.0
        assert abs(fit.frequency / freq - 1) < 0.10
        assert 0 <= fit.theta < math.pi and -math.pi <= fit.phase < math.pi and fit.amplitude >= 0
        assert _angle_gap(fit.edge_theta, fit.theta + math.pi / 2) < 1e-9
        assert fit.nx == pytest.approx(fit.sigma_x * fit.frequency) and fit.ny == pytest.approx(fit.sigma_y * fit.frequency)
        assert fit.error < ERROR_MAX and fit.fve == pytest.approx(1 - fit.error ** 2)


def test_pixel_coordinates_have_y_up_and_theta_is_the_carrier():
    rows, cols = np.mgrid[0:9, 0:9]
    # constant along col + row = const, varying along col - row = x + y: the carrier points at 45 degrees
    grating = np.cos(2 * math.pi * 0.2 * (cols - rows) / math.sqrt(2)) * np.exp(-((rows - 4) ** 2 + (cols - 4) ** 2) / 8)
    fit = fit_gabor(grating)
    assert _angle_gap(fit.theta, math.pi / 4) < 2
    assert _angle_gap(fit.edge_theta, 3 * math.pi / 4) < 2
    ori = spectral_orientation(grating)
    assert _angle_gap(ori.theta, math.pi / 4) < 2 and _angle_gap(ori.edge_theta, 3 * math.pi / 4) < 2
    x, y = pixel_grid((3, 5))
    assert x[0].tolist() == [-2, -1, 0, 1, 2] and y[:, 0].tolist() == [1, 0, -1]


@pytest.mark.parametrize('size, sigma', [(7, 0.9), (7, 1.2), (9, 1.5)])
def test_a_noisy_planted_log_is_recovered(size, sigma):
    rng = np.random.default_rng(size * 10 + int(sigma * 10))
    x, y = pixel_grid((size, size))
    planted = _noisy(log_model([-1.5, sigma, 0.3, -0.2, 0.1], x, y), rng)
    fit = fit_log(planted)
    assert abs(fit.sigma / sigma - 1) < 0.10
    assert fit.amplitude < 0  # OFF-centre kept
    assert radial_symmetry_index(planted, (fit.x0, fit.y0)) > radial_symmetry_index(
        _noisy(gabor_model([1, 0.3, 0.25, 1.5, 1.5, 0, 0, 0, 0], x, y), rng))


def test_a_planted_dog_is_recovered_with_the_gaussians_ordered():
    x, y = pixel_grid((9, 9))
    planted = dog_model([2.0, 2.4, 1.0, 0.9, 0.2, 0.1, 0.0], x, y)  # given with the wide Gaussian first
    fit = fit_dog(planted)
    assert fit.sigma_centre < fit.sigma_surround
    assert fit.error < 0.01
    assert fit.sigma_centre == pytest.approx(0.9, rel=0.1) and fit.sigma_surround == pytest.approx(2.4, rel=0.1)


def test_random_filters_are_not_called_gabor_like():
    rng = np.random.default_rng(7)
    classes, errors = [], []
    for _ in range(32):
        f = rng.normal(size=(7, 7))
        g, lo = fit_gabor(f), fit_log(f)
        errors.append(g.error)
        classes.append(classify(g.error, lo.error))
    assert 'gabor-like' not in classes
    assert np.median(errors) > 0.6


@pytest.mark.parametrize('size', [3, 5])
def test_kernels_too_small_for_a_gabor_fit_are_refused_by_size(size):
    with pytest.raises(KernelTooSmallError, match=f'at least 7x7, got {size}x{size}'):
        fit_gabor(np.ones((size, size)) + np.eye(size))


@pytest.mark.parametrize('size', [3, 4])
def test_kernels_too_small_for_a_log_fit_are_refused_but_keep_an_orientation(size):
    f = np.zeros((size, size))
    f[:, 0], f[:, -1] = -1, 1  # a vertical edge: the carrier runs along x
    with pytest.raises(KernelTooSmallError, match=f'at least 5x5, got {size}x{size}'):
        fit_log(f)
    with pytest.raises(KernelTooSmallError, match=f'{size}x{size}'):
        fit_dog(f)
    ori = spectral_orientation(f)
    assert ori.osi > 0.3 and _angle_gap(ori.theta, 0.0) < 1 and _angle_gap(ori.edge_theta, math.pi / 2) < 1


def test_orientation_index_is_low_for_isotropic_and_high_for_oriented_filters():
    x, y = pixel_grid((7, 7))
    assert spectral_orientation(log_model([1, 1.2, 0, 0, 0], x, y)).osi < 0.1
    assert spectral_orientation(gabor_model([1, 1.0, 0.25, 2, 2, 0, 0, 0, 0], x, y)).osi > 0.8


def test_luminance_of_a_grey_filter_repeated_over_rgb_is_exact():
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(4, 7, 7))
    for sign in (1, -1):
        lum = luminance(np.repeat(sign * grey[:, None], 3, axis=1))
        np.testing.assert_allclose(lum.spatial, sign * math.sqrt(3) * grey, rtol=0, atol=1e-12)
        np.testing.assert_allclose(lum.colour, np.full((4, 3), 1 / math.sqrt(3)), rtol=0, atol=1e-12)
        np.testing.assert_allclose(lum.achromatic_fraction, 1.0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(lum.channel_sum, sign * 3 * grey, rtol=0, atol=1e-12)
    opponent = np.stack([grey[0], -grey[0], 0.5 * grey[1]])[None]
    assert luminance(opponent).achromatic_fraction[0] < 1 - 1e-3


def test_radial_symmetry_and_rot90_correlation():
    x, y = pixel_grid((7, 7))
    blob = log_model([1, 1.2, 0, 0, 0], x, y)
    assert radial_symmetry_index(blob) > 0.99 and rot90_correlation(blob) > 0.99
    bar = gabor_model([1, 0.0, 0.2, 1.5, 3, 0, 0, 0, 0], x, y)
    assert radial_symmetry_index(bar) < 0.5 and rot90_correlation(bar) < 0.5


def test_a_flat_filter_is_flat_not_a_fit():
    flat = np.full((7, 7), 0.3)
    assert math.isnan(fit_gabor(flat).error) and math.isnan(spectral_orientation(flat).osi)
    assert classify(fit_gabor(flat).error, fit_log(flat).error) == 'flat'
    assert classify(0.2, None) == 'gabor-like' and classify(None, 0.2) == 'centre-surround'
    assert classify(0.3, 0.32) == 'unstructured' and classify(None, None) == 'unstructured'
    with pytest.raises(ValueError, match='NaN'):
        fit_log(np.full((7, 7), np.nan))
