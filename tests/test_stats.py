"""Streaming statistics (SPEC section 5) against direct computations on small tensors."""
import math

import numpy as np
import pytest
import torch

from timm_u1.analysis.circular import rayleigh_test
from timm_u1.analysis.sombrero import SombreroStatistics


def _grid(h, w):
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    return xs - (w - 1) / 2, ys - (h - 1) / 2


def _hue_ab(v):
    """(a, b) of vectors v (..., N) by the SPEC's explicit basis u_k, w_k."""
    n = v.shape[-1]
    k = np.arange(n)
    u = math.sqrt(2 / n) * np.cos(2 * math.pi * k / n)
    w = math.sqrt(2 / n) * np.sin(2 * math.pi * k / n)
    return v @ u, v @ w


def _vector_with_hue(theta, n=6, chroma=1.0, lum=3.0):
    """A non-negative activation vector of n channels with hue angle theta."""
    k = np.arange(n)
    return lum / math.sqrt(n) + chroma * math.sqrt(2 / n) * np.cos(2 * math.pi * k / n - theta)


def _centred_maps(batch=3, n=4, size=5):
    """Maps whose energy is a radially symmetric bump about the grid centre."""
    dx, dy = _grid(size, size)
    profile = np.exp(-(dx ** 2 + dy ** 2) / 2)
    v = np.array([1.0, 2.0, 0.5, 1.5])[:n]
    fmap = profile[None, None] * v[None, :, None, None] * np.linspace(1, 2, batch)[:, None, None, None]
    return torch.tensor(fmap, dtype=torch.float32)


def test_centred_map_centroid_and_concentration():
    fmap = _centred_maps()
    stats = SombreroStatistics()
    stats.update(fmap)
    res = stats.result()
    energy = (fmap.double() ** 2).sum(1).numpy()
    mean_map = energy.mean(0)
    np.testing.assert_allclose(res['energy']['mean_map'], mean_map, rtol=1e-6)

    c = res['energy']['centroid_of_mean_map']
    assert abs(c['x']) < 1e-6 and abs(c['y']) < 1e-6 and c['length'] < 1e-6
    assert c['angle_deg'] is None  # a centred map has no centroid angle

    # direct: R = grid half-size 2, centre region r <= 1 holds the centre and its 4 neighbours
    dx, dy = _grid(5, 5)
    inner = np.hypot(dx, dy) <= 1.0
    assert inner.sum() == 5
    expected = (mean_map[inner].sum() / mean_map.sum()) / (inner.sum() / 25)
    assert res['energy']['centre_concentration'] == pytest.approx(expected, rel=1e-6)
    assert res['energy']['centre_concentration'] > 1
    assert res['energy']['images_concentrated_share'] == 1.0
    # no centroid angle for any image, so none enters the angle statistics
    assert res['centroid_angle']['all']['images'] == 0


def test_uniform_map_has_concentration_one():
    stats = SombreroStatistics()
    stats.update(torch.ones(2, 3, 7, 7))
    assert stats.result()['energy']['centre_concentration'] == pytest.approx(1.0)


def test_radial_profile_matches_direct_rings():
    torch.manual_seed(0)
    fmap = torch.rand(4, 5, 6, 7)
    stats = SombreroStatistics()
    stats.update(fmap)
    prof = stats.result()['energy']['radial_profile']
    mean_map = (fmap.double() ** 2).sum(1).mean(0).numpy()
    dx, dy = _grid(6, 7)
    r = np.hypot(dx, dy)
    ring = np.round(r).astype(int)
    want_e = [mean_map[ring == k].mean() for k in np.unique(ring)]
    want_r = [r[ring == k].mean() for k in np.unique(ring)]
    np.testing.assert_allclose(prof['mean_energy'], want_e, rtol=1e-6)  # maps are float32
    np.testing.assert_allclose(prof['radius'], want_r, rtol=1e-6)


def test_streaming_equals_one_batch():
    torch.manual_seed(1)
    fmap = torch.rand(10, 8, 4, 4)
    labels = torch.arange(10) % 3
    # a fixed density extent: by default it comes from the first batch, which differs here
    one, many = (SombreroStatistics(3, density_extent=0.5, permutations=0) for _ in range(2))
    one.update(fmap, labels)
    for chunk in (slice(0, 3), slice(3, 4), slice(4, 10)):
        many.update(fmap[chunk], labels[chunk])
    a, b = one.result(), many.result()
    np.testing.assert_allclose(a['energy']['mean_map'], b['energy']['mean_map'], rtol=1e-12)
    for key in ('hue', 'centroid_angle'):
        for ga, gb in zip(a[key]['classes'] + [a[key]['all']], b[key]['classes'] + [b[key]['all']]):
            assert ga['images'] == gb['images']
            # float32 maps: only the summation order differs
            assert ga['resultant_length'] == pytest.approx(gb['resultant_length'], rel=1e-6)
            np.testing.assert_allclose(ga['histogram'], gb['histogram'], rtol=1e-6)
    np.testing.assert_array_equal(a['hue']['density']['counts'], b['hue']['density']['counts'])


def test_hue_circular_statistics_match_direct_computation():
    torch.manual_seed(2)
    fmap = torch.rand(6, 7, 3, 3)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    stats = SombreroStatistics(2, class_names=['cat', 'dog'], permutations=0)
    stats.update(fmap, labels)
    res = stats.result()['hue']

    v = fmap.permute(0, 2, 3, 1).double().numpy()  # (B, H, W, N)
    a, b = _hue_ab(v)
    theta = np.arctan2(b, a)
    e = (v ** 2).sum(-1)
    for c, group in enumerate(res['classes']):
        sel = labels.numpy() == c
        wc, ws, ww = (e[sel] * np.cos(theta[sel])).sum(), (e[sel] * np.sin(theta[sel])).sum(), e[sel].sum()
        assert group['class'] == ['cat', 'dog'][c]
        # tolerances of float32 maps
        assert group['mean_direction_deg'] == pytest.approx(math.degrees(math.atan2(ws, wc)), abs=1e-3)
        assert group['resultant_length'] == pytest.approx(math.hypot(wc, ws) / ww, rel=1e-5)
        # image level: one unit vector per image, the direction of its energy-weighted hue sum
        per_image = np.stack([(e[sel] * np.cos(theta[sel])).sum((1, 2)), (e[sel] * np.sin(theta[sel])).sum((1, 2))], 1)
        units = per_image / np.linalg.norm(per_image, axis=1, keepdims=True)
        resultant = np.linalg.norm(units.sum(0))
        assert group['image_resultant_length'] == pytest.approx(resultant / sel.sum(), rel=1e-5)
        assert group['rayleigh_z'] == pytest.approx(resultant ** 2 / sel.sum(), rel=1e-5)
        # energy-weighted histogram: 36 sectors from -180 degrees
        hist = np.zeros(36)
        np.add.at(hist, np.clip(np.floor((theta[sel] + np.pi) / (2 * np.pi) * 36).astype(int), 0, 35), e[sel])
        np.testing.assert_allclose(group['histogram'], hist, rtol=1e-5)


def test_hue_density_bins_points():
    # one location per map, each with a known (a, b); 2x1 grids so both points share a batch
    # (a, b) = (cos 0.3, sin 0.3) and 0.5 (cos 2pi/3, sin 2pi/3), both well inside a bin
    v1, v2 = _vector_with_hue(0.3, chroma=1.0), _vector_with_hue(2 * math.pi / 3, chroma=0.5)
    fmap = torch.tensor(np.stack([v1, v2], 1)[None, :, :, None], dtype=torch.float32)  # (1, N, 2, 1)
    stats = SombreroStatistics(density_bins=8)
    stats.update(fmap)
    dens = stats.result()['hue']['density']
    assert dens['extent'] == pytest.approx(1.25, rel=1e-5)  # 1.25 x the largest chroma of the first batch
    counts = np.asarray(dens['counts'])
    assert counts.sum() == 2
    # bin = floor((x + extent) / (2 extent) * 8); rows are b, columns a
    assert counts[4, 7] == 1 and counts[5, 3] == 1
    # a later point beyond the extent is counted as outside, not binned
    far = np.stack([_vector_with_hue(0.0, chroma=3.0)] * 2, 1)[None, :, :, None]
    stats.update(torch.tensor(far, dtype=torch.float32))
    dens = stats.result()['hue']['density']
    assert np.asarray(dens['counts']).sum() == 2 and dens['outside_share'] == pytest.approx(0.5)


def test_rayleigh_test():
    rng = np.random.default_rng(0)
    n = 20
    pvals = []
    for _ in range(2000):
        t = rng.uniform(-np.pi, np.pi, n)
        pvals.append(rayleigh_test(n, math.hypot(np.cos(t).sum(), np.sin(t).sum())))
    # calibrated under the uniform null
    assert 0.035 < np.mean(np.array(pvals) < 0.05) < 0.065
    # large n: approaches exp(-Z), Z = n Rbar^2
    n, rbar = 10000, 0.015
    assert rayleigh_test(n, n * rbar) == pytest.approx(math.exp(-n * rbar ** 2), rel=0.01)
    assert rayleigh_test(50, 45.0) < 1e-10  # 50 vectors nearly aligned
    assert math.isnan(rayleigh_test(1, 1.0))


def _class_angle_batches(num_classes=4, per_class=24, batch=16, seed=0, angle_shift=True):
    """Maps whose activation hue and energy-centroid angle both depend on the class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    rng.shuffle(labels)
    dx, dy = _grid(7, 7)
    maps = []
    for y in labels:
        angle = 2 * math.pi * y / num_classes if angle_shift else 0.0
        theta = angle + rng.normal(0, 0.6)
        phi = angle + rng.normal(0, 0.6)
        bump = np.exp(-((dx - 2 * math.cos(phi)) ** 2 + (dy - 2 * math.sin(phi)) ** 2) / 2)
        v = _vector_with_hue(theta, n=6)
        maps.append(bump[None] * v[:, None, None])
    fmap = torch.tensor(np.stack(maps), dtype=torch.float32)
    labels = torch.tensor(labels)
    return [(fmap[i:i + batch], labels[i:i + batch]) for i in range(0, len(labels), batch)]


def _permutation_p(batches, num_classes=4, seed=0):
    stats = SombreroStatistics(num_classes, permutations=199, seed=seed)
    for fmap, labels in batches:
        stats.update(fmap, labels)
    return stats.result()


def test_permutation_test_detects_class_dependent_angle():
    res = _permutation_p(_class_angle_batches())
    for key in ('hue', 'centroid_angle'):
        test = res['permutation_test'][key]
        assert test['p_value'] == pytest.approx(1 / 200)  # no permutation reaches the observed statistic
        assert test['statistic'] > 5 * test['null_mean']
    # the class mean directions are the planted angles
    for c, group in enumerate(res['centroid_angle']['classes']):
        want = math.degrees(math.atan2(math.sin(2 * math.pi * c / 4), math.cos(2 * math.pi * c / 4)))
        assert abs((group['mean_direction_deg'] - want + 180) % 360 - 180) < 20
        assert group['rayleigh_p'] < 1e-3


def test_permutation_test_does_not_fire_on_shuffled_labels():
    batches = _class_angle_batches()
    gen = torch.Generator().manual_seed(123)
    pvals = []
    for trial in range(5):
        shuffled = [(fmap, labels[torch.randperm(len(labels), generator=gen)]) for fmap, labels in batches]
        res = _permutation_p(shuffled, seed=trial)
        pvals += [res['permutation_test'][k]['p_value'] for k in ('hue', 'centroid_angle')]
    # shuffled labels carry no class signal: p-values spread over (0, 1], none is extreme
    assert min(pvals) > 0.01
    assert np.mean(pvals) > 0.25


def test_permutation_test_without_class_difference():
    # every class shares one angle: the statistic stays at its null level
    res = _permutation_p(_class_angle_batches(angle_shift=False))
    assert res['permutation_test']['centroid_angle']['p_value'] > 0.01


def test_single_class_batches_are_reported():
    batches = [(fmap[:1], labels[:1]) for fmap, labels in _class_angle_batches()]
    res = _permutation_p(batches)
    assert 'permutation_test' in res['skipped']


def test_unlabelled_skips_class_figures():
    stats = SombreroStatistics()
    stats.update(torch.rand(3, 4, 5, 5))
    res = stats.result()
    assert 'class_statistics' in res['skipped']
    assert 'classes' not in res['hue'] and 'permutation_test' not in res
    assert res['hue']['all']['images'] == 3 and 'centre_concentration' in res['energy']


def test_too_few_channels_or_locations_are_skipped_with_reasons():
    stats = SombreroStatistics(2)
    stats.update(torch.rand(4, 2, 5, 5), torch.tensor([0, 1, 0, 1]))
    res = stats.result()
    assert 'hue' not in res and '2 channels' in res['skipped']['activation_hue']
    assert 'centre_concentration' in res['energy']

    stats = SombreroStatistics(2)
    stats.update(torch.rand(4, 8, 1, 1), torch.tensor([0, 1, 0, 1]))
    res = stats.result()
    assert '1x1 grid' in res['skipped']['centre_concentration']
    assert 'centroid_angle' not in res and 'radial_profile' not in res['energy']
    assert res['hue']['all']['images'] == 4 and 'hue' in res['permutation_test']


def test_bad_input_errors():
    stats = SombreroStatistics(3)
    bad = torch.rand(2, 4, 3, 3)
    bad[1, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match=r'1 NaN.*images \[1\]'):
        stats.update(bad)
    stats.update(torch.rand(2, 4, 3, 3))
    with pytest.raises(ValueError, match='differs from the first batch'):
        stats.update(torch.rand(2, 4, 5, 5))
    with pytest.raises(ValueError, match='out of range'):
        stats.update(torch.rand(2, 4, 3, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match='dataset is empty'):
        SombreroStatistics().result()


def test_state_dict_resume_is_exact():
    batches = _class_angle_batches()
    full = SombreroStatistics(4, permutations=49, seed=7)
    for fmap, labels in batches:
        full.update(fmap, labels)
    first = SombreroStatistics(4, permutations=49, seed=7)
    for fmap, labels in batches[:3]:
        first.update(fmap, labels)
    resumed = SombreroStatistics(4, permutations=49, seed=7)
    resumed.load_state_dict(first.state_dict())
    for fmap, labels in batches[3:]:
        resumed.update(fmap, labels)
    assert resumed.result() == full.result()


def test_hue_ring_profile_finds_the_brim():
    # locations spread evenly over a circle of chroma 1 in the hue plane: a ring, not a blob at 0
    angles = torch.linspace(-math.pi, math.pi, 64)[:-1]
    v = np.stack([_vector_with_hue(float(t), chroma=1.0) for t in angles], 1)  # (N, L)
    stats = SombreroStatistics(density_bins=32, density_extent=2.0)
    stats.update(torch.tensor(v[None, :, :, None], dtype=torch.float32))
    res = stats.result()['hue']
    ring = res['ring_profile']
    assert ring['peak_chroma'] == pytest.approx(1.0, abs=2 * 2.0 * 2 / 32)
    assert ring['density'][0] == 0 and sum(ring['density']) > 0
    assert res['all']['resultant_length'] < 0.05  # spread over every angle
