"""timm_u1.analysis.controls and the stats it needs: verdicts on planted and input-only signals, calibrated nulls."""
import math

import numpy as np
import pytest
import timm
import torch

from timm_u1.analysis.angles import channel_orders, hue_vectors
from timm_u1.analysis.circular import class_statistic, rayleigh_log10_p, rayleigh_test
from timm_u1.analysis.claims import CONTRADICTED, NOT_DISTINGUISHABLE, NOT_HUE_SPECIFIC, SUPPORTED, verdicts
from timm_u1.analysis.controls import ControlLevel, controls_from_maps, run_controls
from timm_u1.analysis.decoding import AngleClassAccumulator
from timm_u1.analysis.inputs import input_map
from timm_u1.analysis.random_init import random_init_copy, recalibrate_batchnorm
from timm_u1.analysis.report import controls_markdown as render_markdown
from timm_u1.analysis.signtest import mcnemar_p, sign_test_p as binomial_two_sided_p

CLAIMS = {'sombrero', 'hue_class', 'informative_hue_class', 'logit_hue_class', 'centroid_angle_class'}
LEVEL = ControlLevel(images=None, seeds=5, orders=100, calibration_images=32, permutations=99, order_permutations=99)


def _bump(h, w, cx, cy, width=1.2):
    ys, xs = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing='ij')
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * width ** 2))


def _planted_batches(n=200, num_classes=4, channels=16, batch=40, seed=0):
    """Model maps with a class-dependent hue (in the natural channel order) and centroid; flat noise
    inputs and random maps without any class signal."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    k = torch.arange(channels)
    out = []
    for i in range(0, n, batch):
        y = labels[i:i + batch]
        b = len(y)
        angle = 2 * math.pi * y / num_classes
        theta = angle + 0.5 * torch.randn(b, generator=gen)
        profile = 1 + torch.cos(2 * math.pi * k[None] / channels - theta[:, None])  # hue theta in natural order
        phi = angle + 0.5 * torch.randn(b, generator=gen)
        bumps = torch.stack([_bump(7, 7, 1.2 * math.cos(p), 1.2 * math.sin(p)) for p in phi.tolist()])
        # per-image channel noise: the planted hue stands out of it only in the natural order
        profile = (profile + torch.rand(b, channels, generator=gen)).clamp_min(0)
        fmap = profile[:, :, None, None] * bumps[:, None] + 0.05 * torch.rand(b, channels, 7, 7, generator=gen)
        inp = torch.rand(b, 48, 7, 7, generator=gen)
        rand = [torch.rand(b, channels, 7, 7, generator=gen) for _ in range(LEVEL.seeds)]
        out.append((y, fmap, inp, rand))
    return out


def _class_images(n, num_classes, gen, size=28):
    """Images whose class is a bright blob at a class-dependent place and colour."""
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=gen)]
    images = 0.1 * torch.rand(n, 3, size, size, generator=gen)
    for i, y in enumerate(labels.tolist()):
        a = 2 * math.pi * y / num_classes + 0.3 * float(torch.randn(1, generator=gen))
        blob = _bump(size, size, 6 * math.cos(a), 6 * math.sin(a), width=3.0)
        images[i, y % 3] += blob
        images[i] += 0.5 * blob
    return images, labels


def _projection_batches(n=200, num_classes=4, channels=32, batch=40, seed=0):
    """Class signal only in the input: every 'network' is a fixed random projection of the input cells."""
    gen = torch.Generator().manual_seed(seed)
    images, labels = _class_images(n, num_classes, gen)
    weights = [torch.randn(channels, 48, generator=gen) for _ in range(1 + LEVEL.seeds)]
    out = []
    for i in range(0, n, batch):
        inp = input_map(images[i:i + batch], (7, 7))
        maps = [torch.relu(torch.einsum('oc,bchw->bohw', w, inp)) for w in weights]
        out.append((labels[i:i + batch], maps[0], inp, maps[1:]))
    return out


def test_planted_class_hue_is_supported():
    controls = controls_from_maps(_planted_batches(), num_classes=4, level=LEVEL)
    v = verdicts(controls)
    assert v['hue_class']['verdict'] == SUPPORTED, v['hue_class']
    assert v['centroid_angle_class']['verdict'] == SUPPORTED, v['centroid_angle_class']
    # centred bumps over flat inputs and flat random maps: the sombrero too
    assert v['sombrero']['verdict'] == SUPPORTED, v['sombrero']
    null = controls['sources']['model']['theta']['channel_orders']['statistic']
    assert null['p_value'] == pytest.approx(1 / 101) and len(null['values']) == 100
    md = '\n'.join(render_markdown(controls, v))
    assert '**supported**' in md and 'random init' in md


def test_class_signal_only_in_the_input_is_not_distinguishable():
    controls = controls_from_maps(_projection_batches(), num_classes=4, level=LEVEL)
    v = verdicts(controls)
    model = controls['sources']['model']
    # the projection does carry the class (the tests alone would call it symmetry breaking) ...
    assert model['theta']['p_value'] < 0.05 and model['phi']['p_value'] < 0.05
    # ... but the controls carry it too
    assert v['hue_class']['verdict'] == NOT_DISTINGUISHABLE, v['hue_class']
    assert v['centroid_angle_class']['verdict'] == NOT_DISTINGUISHABLE, v['centroid_angle_class']


def test_no_class_signal_is_contradicted():
    batches = [(y[torch.randperm(len(y), generator=torch.Generator().manual_seed(i))], f, inp, r)
               for i, (y, f, inp, r) in enumerate(_planted_batches())]
    # labels shuffled against the maps: the trained model's angles carry no class
    v = verdicts(controls_from_maps(batches, num_classes=4, level=LEVEL))
    assert v['hue_class']['verdict'] == CONTRADICTED
    assert v['centroid_angle_class']['verdict'] == CONTRADICTED


def _binomial_bounds(trials, p, tail=0.001):
    """The central 1 - 2 tail range of a Binomial(trials, p) count."""
    cdf, lo, hi = 0.0, None, None
    for k in range(trials + 1):
        cdf += math.comb(trials, k) * p ** k * (1 - p) ** (trials - k)
        if lo is None and cdf >= tail:
            lo = k
        if hi is None and cdf >= 1 - tail:
            hi = k
    return lo, hi


def test_channel_order_null_is_calibrated():
    # 200 simulated data sets whose channels are exchangeable (class means drawn i.i.d. per channel):
    # the natural order is one of the random orders, so its p is uniform
    sims, n, channels, num_classes, orders = 200, 40, 8, 4, 100
    gen = torch.Generator().manual_seed(0)
    means = torch.rand(sims, num_classes, channels, generator=gen)
    labels = torch.randint(0, num_classes, (sims, n), generator=gen)
    x = means[torch.arange(sims)[:, None], labels] + 0.5 * torch.rand(sims, n, channels, generator=gen)
    order = channel_orders(channels, orders, seed=1)
    unit = hue_vectors(x.reshape(sims * n, channels, 1, 1), order).reshape(sims, n, orders + 1, 2)
    sums = torch.zeros(sims, orders + 1, num_classes, 3, dtype=torch.float64)
    values = torch.cat([unit, torch.ones(sims, n, orders + 1, 1, dtype=torch.float64)], -1)
    index = labels[:, :, None, None].expand(sims, n, orders + 1, 3)
    sums.scatter_add_(2, index.permute(0, 2, 1, 3), values.permute(0, 2, 1, 3))
    t = class_statistic(sums)  # (sims, orders + 1)
    p = (1 + (t[:, 1:] >= t[:, :1]).sum(1)) / (orders + 1)
    rejections = int((p <= 0.05).sum())
    lo, hi = _binomial_bounds(sims, 5 / 101)
    assert lo <= rejections <= hi, rejections
    # and the class statistic sees the class means in every natural order (T above its label null)
    assert float(t[:, 0].mean()) > 0


def test_label_permutation_tests_are_calibrated():
    sims, n, num_classes = 200, 30, 3
    gen = torch.Generator().manual_seed(1)
    rej_t = rej_acc = 0
    for s in range(sims):
        angle = torch.rand(n, generator=gen) * 2 * math.pi
        unit = torch.stack([torch.cos(angle), torch.sin(angle)], 1)
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        acc = AngleClassAccumulator(num_classes, folds=3, bins=6, permutations=39, seed=s)
        for i in range(0, n, 10):
            acc.update(unit[i:i + 10], labels[i:i + 10])
        res = acc.result()
        rej_t += res['p_value'] <= 0.05
        rej_acc += res['accuracy_p_value'] <= 0.05
    lo, hi = _binomial_bounds(sims, 2 / 40)
    assert lo <= rej_t <= hi and rej_acc <= hi, (rej_t, rej_acc)


def test_cross_validated_decoding_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    n, num_classes, folds, bins = 97, 3, 4, 6
    labels = rng.integers(0, num_classes, n)
    angle = 2 * np.pi * labels / num_classes + rng.normal(0, 0.8, n)
    unit = torch.tensor(np.stack([np.cos(angle), np.sin(angle)], 1))
    unit[5] = 0  # no angle: left out
    acc = AngleClassAccumulator(num_classes, folds=folds, bins=bins, permutations=0)
    for i in range(0, n, 13):  # streamed in uneven batches
        acc.update(unit[i:i + 13], torch.tensor(labels[i:i + 13]))
    res = acc.result()
    keep = np.arange(n) != 5
    fold = np.arange(n) % folds
    sector = np.clip(np.floor((np.arctan2(np.sin(angle), np.cos(angle)) + np.pi) / (2 * np.pi) * bins), 0, bins - 1)
    hits = base = 0
    for f in range(folds):
        tr, te = keep & (fold != f), keep & (fold == f)
        prior = np.bincount(labels[tr], minlength=num_classes)
        for i in np.flatnonzero(te):
            counts = np.bincount(labels[tr & (sector == sector[i])], minlength=num_classes)
            pred = max(range(num_classes), key=lambda c: (counts[c], prior[c], -c))
            hits += pred == labels[i]
            base += prior.argmax() == labels[i]
    assert res['images'] == n - 1
    assert res['accuracy'][0] == pytest.approx(hits / (n - 1))
    assert res['chance'] == pytest.approx(base / (n - 1))
    assert res['accuracy'][0] > res['chance'] + 0.2


def test_rayleigh_log_p_and_binomial_helpers():
    for n, r in ((20, 5.0), (100, 30.0)):
        assert rayleigh_log10_p(n, r) == pytest.approx(math.log10(rayleigh_test(n, r)), rel=1e-9)
    # where p underflows to 0 the log stays finite and ordered
    assert rayleigh_test(2000, 1900.0) == 0.0
    assert -math.inf < rayleigh_log10_p(2000, 1900.0) < rayleigh_log10_p(2000, 1000.0) < 0
    assert binomial_two_sided_p(0, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided_p(5, 10) == 1.0
    assert binomial_two_sided_p(3, 10) == pytest.approx(2 * sum(math.comb(10, i) for i in range(4)) / 1024)
    a = torch.tensor([True] * 10 + [False] * 5)
    b = torch.tensor([False] * 10 + [False] * 5)
    assert mcnemar_p(a, b) == pytest.approx(2 / 1024) and mcnemar_p(a, a) == 1.0
    with pytest.raises(ValueError, match='same images'):
        mcnemar_p(a, b[:3])


# --- on a tiny timm model ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return timm.create_model('test_efficientnet', num_classes=4).eval()


def test_input_map_undoes_normalisation_and_pools_cells():
    x = torch.rand(2, 3, 32, 32)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normed = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    m = input_map(normed, (2, 2), mean, std, patch=4)
    assert m.shape == (2, 48, 2, 2)
    # channel (row i, column j, colour c) of location (y, x) is the mean of that 4x4 block of pixels
    block = x[1, 2, 16 + 4:16 + 8, 0 + 12:0 + 16].mean()
    assert float(m[1, (1 * 4 + 3) * 3 + 2, 1, 0]) == pytest.approx(float(block), abs=1e-5)
    # a grey image keeps a hue (a colour-major layout would cancel it)
    grey = input_map(x[:, :1].expand(2, 3, 32, 32), (2, 2), patch=4)
    assert bool((hue_vectors(grey).abs().sum(-1) > 0).all())


def test_random_init_and_batchnorm_recalibration(tiny):
    a, how = random_init_copy(tiny, 3)
    b, _ = random_init_copy(tiny, 3)
    c, _ = random_init_copy(tiny, 4)
    assert how == 'timm initialisation'
    key = next(k for k, v in tiny.state_dict().items() if v.dim() == 4)
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])  # seeded
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], tiny.state_dict()[key])
    images = [(torch.randn(8, 3, 32, 32), torch.zeros(8)) for _ in range(3)]
    bn = a.bn1
    seen = []
    handle = bn.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    used = recalibrate_batchnorm(a, images, max_images=20)
    handle.remove()
    assert used == 20 and not bn.training
    x = torch.cat(seen)
    assert x.shape[0] == 20
    # cumulative average of the per-batch means (batches of 8, 8, 4)
    batch_means = [s.mean((0, 2, 3)) for s in seen]
    want = (batch_means[0] + batch_means[1] + batch_means[2]) / 3
    torch.testing.assert_close(bn.running_mean, want, rtol=1e-4, atol=1e-5)


def test_run_controls_on_a_tiny_model(tiny):
    gen = torch.Generator().manual_seed(0)
    images, labels = _class_images(16, 4, gen, size=96)  # a 3x3 bottleneck
    loader = [(images[i:i + 8], labels[i:i + 8]) for i in range(0, 16, 8)]
    level = ControlLevel(images=None, seeds=2, orders=10, calibration_images=16, permutations=19)
    rng_state = torch.get_rng_state()
    controls = run_controls(tiny, loader, class_names=list('abcd'), level=level, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's RNG is left alone
    src = controls['sources']
    assert controls['images'] == 16 and len(src['random_init']) == 2
    assert controls['random_init']['batchnorm'] == 'running statistics recalibrated on the first 16 images'
    assert src['input']['centre_concentration'] is not None
    assert len(src['model']['theta']['channel_orders']['statistic']['values']) == 10
    # the input baseline is the input: its statistics do not depend on the network
    again = run_controls(timm.create_model('test_efficientnet', num_classes=4).eval(), loader,
                         class_names=list('abcd'), level=level, progress=False)
    assert again['sources']['input']['centre_concentration'] == src['input']['centre_concentration']
    assert again['sources']['input']['phi'] == src['input']['phi']
    v = verdicts(controls)
    assert set(v) == CLAIMS
    assert all(x['verdict'] in (SUPPORTED, NOT_HUE_SPECIFIC, NOT_DISTINGUISHABLE, CONTRADICTED, None) for x in v.values())
    # the tiny model's 4 outputs are the data's 4 classes: its logits' hue (and each random network's) is analysed
    assert 'alignment' in src['model']['logits'] and len(src['model']['logits']['class_orders']['alignment']['values']) == 10
    assert all('alignment' in r['logits'] for r in src['random_init'])
    assert v['logit_hue_class']['verdict'] is not None


def test_analyze_reports_controls_and_verdicts(tiny, tmp_path, monkeypatch):
    import json

    from timm_u1.analysis import controls as controls_mod

    from PIL import Image

    from timm_u1.analysis.analyzer import analyze

    folder = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for c, name in enumerate(('cat', 'dog', 'owl')):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(arr).save(folder / name / f'{i}.png')
    model = timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 64, 64))).eval()
    # a smaller 'fast' level keeps the test quick; what is tested is the wiring into the report
    monkeypatch.setitem(controls_mod.CONTROL_LEVELS, 'fast', ControlLevel(
        images=None, seeds=2, orders=10, calibration_images=6, permutations=19))
    with pytest.raises(ValueError, match='controls must be one of'):
        analyze(model, str(folder), controls='some', progress=False)
    analyze(model, str(folder), batch_size=6, out=tmp_path / 'out', permutations=19, progress=False,
              controls='fast')
    saved = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert saved['controls']['images'] == 9 and len(saved['controls']['sources']['random_init']) == 2
    assert set(saved['verdicts']) == CLAIMS
    # test_efficientnet has 1000 outputs, the data 3 classes: no logit claim, and the report says why
    assert saved['verdicts']['logit_hue_class']['verdict'] is None
    assert '1000 outputs' in saved['verdicts']['logit_hue_class']['reason']
    md = (tmp_path / 'out' / 'report.md').read_text()
    assert '## Verdicts' in md and '(controls.png)' in md and 'Rayleigh test: are the per-image' in md
    assert (tmp_path / 'out' / 'controls.png').read_bytes()[:4] == b'\x89PNG'
    assert analyze(model, str(folder), controls='none', progress=False).to_dict().keys() == {'meta', 'figures'}


def test_memory_baselines_and_comparison():
    from timm_u1.memory.baselines import compare_methods, position_kept_nn, raw_pixel_nn

    gen = torch.Generator().manual_seed(0)
    # class = which corner is bright: pooled features cannot tell, the layout-kept 1-NN can
    def maps(n):
        y = torch.arange(n) % 4
        m = 0.1 * torch.rand(n, 5, 2, 2, generator=gen)
        m[torch.arange(n), :, y // 2, y % 2] += 1.0
        return m, y
    train, ytr = maps(40)
    test, yte = maps(20)
    assert torch.equal(position_kept_nn(train, ytr, test), yte)
    assert torch.equal(raw_pixel_nn(train, ytr, test), yte)
    pooled = position_kept_nn(train.mean((2, 3), keepdim=True), ytr, test.mean((2, 3), keepdim=True))
    res = compare_methods({'pooled': pooled, 'layout': position_kept_nn(train, ytr, test)}, yte)
    assert res['best'] == 'layout' and res['methods']['layout']['accuracy'] == 1.0
    wrong = int((pooled != yte).sum())
    assert res['methods']['pooled']['mcnemar_p_vs_best'] == pytest.approx(binomial_two_sided_p(0, wrong))
    with pytest.raises(ValueError, match='differ in shape'):
        position_kept_nn(train, ytr, test[:, :3])


def test_full_level_runs_the_image_plane_transform_test(tiny):
    from timm_u1.analysis.inputs import transformed_copies

    x = torch.zeros(1, 3, 8, 8)
    x[..., 0, 0] = 1  # bright top-left corner pixel
    copies = dict(transformed_copies(x))
    assert set(copies) == {'rot90', 'rot180', 'rot270', 'crop_top_left', 'crop_top_right', 'crop_bottom_left',
                           'crop_bottom_right'}
    assert copies['rot180'][0, 0, 7, 7] == 1 and copies['crop_bottom_right'].shape == x.shape
    gen = torch.Generator().manual_seed(0)
    images, labels = _class_images(6, 3, gen, size=64)  # a 2x2 bottleneck: the smallest with a centroid
    level = ControlLevel(images=None, seeds=1, orders=5, calibration_images=6, permutations=9, transforms=True)
    controls = run_controls(tiny, [(images, labels)], class_names=list('abc'), level=level, progress=False)
    fol = controls['follows_input']
    assert fol['model']['images'] <= 6 * 7 and len(fol['random_init']) == 1
    assert 0 <= fol['model']['follow_resultant_length'] <= 1
    assert 'R of φ_net - φ_input' in '\n'.join(render_markdown(controls, verdicts(controls)))
