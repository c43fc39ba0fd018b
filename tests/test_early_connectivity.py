"""The lateral-kernel analyses follow planted kernels: co-circular fields have no orientation error and
random ones about 45 degrees, iso-orientation kernels are selective and random ones are not, co-axial
maps lie along the edge; and the whole V1 analysis reads a planted model through conv2d's direction
convention into supported verdicts, and a random one into none."""
import math

import numpy as np
import pytest
import timm
import torch

pytest.importorskip('scipy')

from timm_u1.analysis.controls import CONTRADICTED, NOT_DISTINGUISHABLE, SUPPORTED  # noqa: E402
from timm_u1.early import connectivity as C  # noqa: E402
from timm_u1.early.fits import gabor_model, log_model, pixel_grid  # noqa: E402
from timm_u1.early.lateral import connection_maps  # noqa: E402

K = 7


def _orientations(n: int) -> np.ndarray:
    return (np.arange(n) * math.pi / n + 0.1) % math.pi


def _cocircular(theta: np.ndarray, width: float = 0.25) -> np.ndarray:
    """A[i, j, d]: strong where theta_j - theta_i is the co-circular orientation at R(-theta_i) d."""
    dx, dy = C._grid(K)
    n = len(theta)
    maps = np.zeros((n, n, K, K))
    for i in range(n):
        ct, st = math.cos(theta[i]), math.sin(theta[i])
        x, y = ct * dx + st * dy, -st * dx + ct * dy
        want = C.cocircular_orientation(x, y)
        for j in range(n):
            miss = C.wrap_pi((theta[j] - theta[i]) - want)
            maps[i, j] = np.exp(-miss ** 2 / (2 * width ** 2)) * np.exp(-(dx ** 2 + dy ** 2) / 8)
    maps[:, :, K // 2, K // 2] = 0
    return maps


def _iso(theta: np.ndarray) -> np.ndarray:
    dx, dy = C._grid(K)
    gauss = np.exp(-(dx ** 2 + dy ** 2) / 4)
    return np.cos(C.orientation_difference(theta))[:, :, None, None] ** 4 * gauss


def test_a_cocircular_kernel_has_no_orientation_error_and_a_random_one_about_45_degrees():
    theta = _orientations(16)
    planted = C.association_error(_cocircular(theta), theta, shuffles=100, seed=0)
    assert planted['error_deg'] < 6 and planted['p'] < 0.02
    assert 35 < planted['shuffled_mean_deg'] < 55  # the null it is judged against
    random = C.association_error(np.random.default_rng(0).normal(size=(16, 16, K, K)), theta, shuffles=100, seed=0)
    assert 35 < random['error_deg'] < 55 and random['p'] > 0.05


def test_orientation_selectivity_of_an_iso_kernel_and_of_a_random_one():
    theta = _orientations(12)
    iso = C.orientation_selectivity(_iso(theta), theta, permutations=500, seed=0)['excitatory']
    assert iso['spearman_rho'] < -0.5 and iso['selectivity_index'] > 0.5 and iso['p'] < 0.01
    assert iso['tuning'][0] > iso['tuning'][-1]
    rng = np.random.default_rng(1)
    random = C.orientation_selectivity(rng.normal(size=(12, 12, K, K)), theta, permutations=500, seed=0)['excitatory']
    assert abs(random['spearman_rho']) < 0.2 and random['p'] > 0.05


def test_co_axial_maps_lie_along_the_source_edge():
    theta = _orientations(16)  # neighbours 11.25 degrees apart: iso-oriented pairs (< 22.5) exist
    dx, dy = C._grid(K)
    n = len(theta)
    along, across = np.zeros((n, n, K, K)), np.zeros((n, n, K, K))
    for i in range(n):
        ct, st = math.cos(theta[i]), math.sin(theta[i])
        x, y = ct * dx + st * dy, -st * dx + ct * dy  # the source's frame
        along[i] = np.exp(-(x ** 2 / 8 + y ** 2 / 0.5))
        across[i] = np.exp(-(x ** 2 / 0.5 + y ** 2 / 8))
    assert abs(C.co_axiality(along, theta)['axis_deg']) < 5
    assert abs(abs(C.co_axiality(across, theta)['axis_deg']) - 90) < 5


def test_the_direction_process_follows_the_reference_edge():
    gamma = C.direction_process_kernel(K, sigma=0.1, lambdas=(4.0,), paths=4000, seed=0)[4.0]
    assert gamma.shape == (C.ORIENTATION_BINS, K, K) and math.isclose(gamma.sum(), 1.0)
    c = K // 2
    assert gamma[0, c, :].sum() > 0.6  # straight paths along +-x keep orientation 0 on the x axis
    curvy = C.direction_process_kernel(K, sigma=0.8, lambdas=(4.0,), paths=4000, seed=0)[4.0]
    assert curvy[0, c, :].sum() < gamma[0, c, :].sum()


def test_kernel_correlation_finds_a_planted_direction_process_kernel():
    from scipy.ndimage import map_coordinates

    theta = _orientations(16)
    models = {(s, lam): g for s in (0.2, 0.8) for lam, g in
              C.direction_process_kernel(K, s, lambdas=(2.0, 4.0), paths=4000, seed=0).items()}
    target = models[(0.8, 4.0)]
    # the kernel whose binned form is the model: A_ij(d) = Gamma(R(-theta_i) d, bin(theta_j - theta_i))
    n, c = len(theta), K // 2
    maps = np.zeros((n, n, K, K))
    dx, dy = C._grid(K)
    for i in range(n):
        ct, st = math.cos(theta[i]), math.sin(theta[i])
        x, y = ct * dx + st * dy, -st * dx + ct * dy
        for j in range(n):
            b = C._orientation_bin(theta[j] - theta[i], C.ORIENTATION_BINS)
            maps[i, j] = map_coordinates(target[b], [c - y, c + x], order=1, mode='constant')
    result = C.kernel_correlation(maps, theta, models, shuffles=30, boots=30, seed=0)
    assert result['r'] > 0.8 and result['sigma'] == 0.8
    assert result['p'] < 0.05 and result['shuffled_mean_r'] < result['r'] - 0.2 and result['ci95'][0] > 0.6


# --- the whole analysis on planted models ------------------------------------------------------

def _planted_model(seed: int, planted: bool) -> torch.nn.Module:
    """lgn_v1net_s with 8 filters: planted, a LoG pre-filter, 8 Gabor filters of 8 orientations and an
    iso-orientation, co-circular lateral kernel (written through the conv layout); else as initialised."""
    torch.manual_seed(seed)
    model = timm.create_model('lgn_v1net_s', num_classes=3, width=8, widths=(8, 8)).eval()
    if not planted:
        return model
    x, y = pixel_grid((7, 7))
    theta = _orientations(8)  # edge orientations; the carrier is 90 degrees off
    gabors = np.stack([gabor_model([1, (t + math.pi / 2) % math.pi, 0.22, 1.6, 2.0, 0, 0, 0, 0], x, y) for t in theta])
    maps = _cocircular(theta) * (0.2 + _iso(theta))
    with torch.no_grad():
        model.lgn.weight.copy_(torch.from_numpy(log_model([1, 1.2, 0, 0, 0], x, y))[None, None])
        model.v1.conv.weight.copy_(torch.from_numpy(gabors)[:, None])
        model.v1.lateral.weight.copy_(connection_maps(torch.from_numpy(maps)))  # its own inverse
    return model


def test_the_v1_analysis_supports_planted_structure_and_not_random_weights(tmp_path):
    from timm_u1.early.v1analysis import analyze_v1
    from timm_u1.early.v1report import read_v1_report

    step0 = _planted_model(1, planted=False)
    settings = dict(seeds=1, starts=3, permutations=300, shuffles=60, progress=False)
    report = analyze_v1(_planted_model(0, planted=True), step0=step0, out=tmp_path / 'planted', **settings)
    for claim in ('l0', 'gabor', 'lateral_orientation', 'association'):
        assert report.verdicts[claim]['verdict'] == SUPPORTED, (claim, report.verdicts[claim]['reason'])
    assert report.kernels['meta']['oriented_filters'] == list(range(8))
    data = read_v1_report(tmp_path / 'planted' / 'report.json')
    assert data['verdicts']['association']['verdict'] == SUPPORTED
    assert {'l0.png', 'tuning.png', 'association.png', 'co_axial.png', 'kernel_model.png'} <= {
        p.name for p in (tmp_path / 'planted').iterdir()}
    assert '| the learned lateral kernel is orientation-selective' in (tmp_path / 'planted' / 'report.md').read_text()

    random = analyze_v1(_planted_model(2, planted=False), step0=step0, out=tmp_path / 'random', **settings)
    assert random.verdicts['l0']['verdict'] in (CONTRADICTED, NOT_DISTINGUISHABLE)
    assert random.verdicts['gabor']['verdict'] == CONTRADICTED
    assert random.verdicts['lateral_orientation']['verdict'] is None  # no oriented filter to read it with


def test_a_damaged_report_is_named_by_field(tmp_path):
    import json

    from timm_u1.early.v1report import REPORT_FORMAT, read_v1_report

    path = tmp_path / 'report.json'
    path.write_text(json.dumps({'format': REPORT_FORMAT, 'meta': {'subject': 'm'}, 'verdicts': {}, 'l0': {},
                                'kernels': {}, 'decision_rule': 'r'}))
    with pytest.raises(ValueError, match='verdicts.l0 is missing'):
        read_v1_report(path)
    good = {k: {'verdict': None, 'reason': 'x', 'numbers': {}} for k in ('l0', 'gabor', 'orientation',
                                                                          'lateral_orientation', 'association')}
    good['association']['verdict'] = 'maybe'
    path.write_text(json.dumps({'format': REPORT_FORMAT, 'meta': {'subject': 'm'}, 'verdicts': good, 'l0': {},
                                'kernels': {}, 'decision_rule': 'r'}))
    with pytest.raises(ValueError, match='verdicts.association.verdict must be one of'):
        read_v1_report(path)
