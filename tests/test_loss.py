import math

import pytest
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from timm_u1 import U1Loss, U1Output, activation_hue, label_hue


def _documented_hue_loss(x, t, floor, eps=1e-6, guard=0.1, weight=None):
    """docs/math.md's hue loss, written out independently in float64: 1 - <h, t> with
    h = z / sqrt(|z|^2 + g^2), g^2 = eps^2 + guard^2 (sigma^2 + floor^2), sigma the rms of the centred x."""
    x = x.double()
    c = x.shape[1]
    k = torch.arange(c, dtype=torch.float64)
    basis = math.sqrt(2 / c) * torch.stack([torch.cos(2 * math.pi * k / c), torch.sin(2 * math.pi * k / c)], 1)
    xl = x.movedim(1, -1)
    z = xl @ basis
    sigma2 = (xl - xl.mean(-1, keepdim=True)).square().mean(-1, keepdim=True)
    g2 = eps ** 2 + guard ** 2 * (sigma2 + floor ** 2)
    h = z / (z.square().sum(-1, keepdim=True) + g2).sqrt()
    if x.dim() == 2:
        return (1 - (h * t.double()).sum(-1)).mean()
    agreement = (h * t.double()[:, None, None, :]).sum(-1)
    return (1 - (weight.double() * agreement).sum(dim=(1, 2))).mean()


def _roots(c):
    theta = 2 * math.pi * torch.arange(c, dtype=torch.float64) / c
    return torch.stack([torch.cos(theta), torch.sin(theta)], 1)


def test_zero_weight_is_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(16, 7)
    target = torch.randint(0, 7, (16,))
    assert torch.allclose(U1Loss(hue_weight=0)(logits, target), F.cross_entropy(logits, target))
    assert torch.allclose(
        U1Loss(hue_weight=0, smoothing=0.1)(logits, target),
        LabelSmoothingCrossEntropy(smoothing=0.1)(logits, target), atol=1e-6)
    soft = torch.softmax(torch.randn(16, 7), dim=1)
    assert torch.allclose(U1Loss(hue_weight=0)(logits, soft), SoftTargetCrossEntropy()(logits, soft), atol=1e-6)


def test_parts_match_the_definition():
    torch.manual_seed(1)
    c = 5
    logits = torch.randn(32, c)
    target = torch.randint(0, c, (32,))
    parts = U1Loss(hue_weight=0.3).parts(logits, target)
    torch.testing.assert_close(parts.hue.double(), _documented_hue_loss(logits, _roots(c)[target], 1.0))
    assert torch.allclose(parts.ce, F.cross_entropy(logits, target))
    assert torch.allclose(parts.total, parts.ce + 0.3 * parts.hue)


def test_soft_target_hue_term_uses_target_length():
    c = 6
    logits = torch.randn(4, c)
    p = torch.zeros(4, c)
    p[:, 1], p[:, 2] = 0.5, 0.5  # |t| = cos(pi / 6), angle halfway between classes 1 and 2
    hue = U1Loss().parts(logits, p).hue
    theta_t = 1.5 * 2 * math.pi / c
    t = math.cos(math.pi / c) * torch.tensor([[math.cos(theta_t), math.sin(theta_t)]] * 4, dtype=torch.float64)
    torch.testing.assert_close(hue.double(), _documented_hue_loss(logits, t, 1.0))


def test_works_with_timm_mixup_targets():
    torch.manual_seed(2)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=10)
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 10, (8,))
    x, soft = mixup(x, y)
    loss = U1Loss(hue_weight=0.5)(torch.randn(8, 10, requires_grad=True), soft)
    loss.backward()
    assert torch.isfinite(loss)


def test_probs_input_takes_the_hue_of_the_softmax():
    torch.manual_seed(3)
    logits = torch.randn(8, 4) * 3
    target = torch.randint(0, 4, (8,))
    hue_probs = U1Loss(hue_input='probs').parts(logits, target).hue
    torch.testing.assert_close(hue_probs.double(), _documented_hue_loss(logits.softmax(1), _roots(4)[target], 1 / 4))
    assert not torch.allclose(hue_probs, U1Loss().parts(logits, target).hue)


def test_gradients_stay_finite_at_and_near_zero_chroma():
    for logits in (torch.zeros(4, 10), torch.full((4, 10), 2.0) + 1e-9 * torch.randn(4, 10)):
        logits = logits.clone().requires_grad_(True)
        loss = U1Loss(hue_weight=1.0)(logits, torch.tensor([0, 1, 2, 3]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_hue_term_rotates_logits_towards_the_target_hue():
    torch.manual_seed(4)
    logits = torch.randn(16, 8, requires_grad=True)
    target = torch.randint(0, 8, (16,))
    loss_fn = U1Loss(hue_weight=1.0)
    opt = torch.optim.Adam([logits], lr=0.05)
    first = float(loss_fn.parts(logits, target).hue.detach())
    for _ in range(100):
        opt.zero_grad()
        loss_fn.parts(logits, target).hue.backward()
        opt.step()
    assert float(loss_fn.parts(logits, target).hue.detach()) < 0.05 * first


def test_spatial_variant_weights_locations_by_energy():
    torch.manual_seed(5)
    b, c, n, h, w = 2, 5, 16, 3, 3
    features = torch.rand(b, n, h, w)
    spatial = torch.randn(b, c, h, w)
    logits = torch.randn(b, c)
    out = U1Output(logits, activation_hue(logits, dim=-1), features, spatial)
    target = torch.tensor([1, 4])
    hue = U1Loss(spatial=True).parts(out, target).hue

    e = (features ** 2).sum(1)
    weight = e / e.sum(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(hue.double(), _documented_hue_loss(spatial, _roots(c)[target], 1.0, weight=weight))

    # all locations equal: the spatial loss is the global one
    same = logits[:, :, None, None].expand(b, c, h, w)
    out_same = U1Output(logits, activation_hue(logits, dim=-1), features, same)
    assert torch.allclose(U1Loss(spatial=True).parts(out_same, target).hue, U1Loss().parts(logits, target).hue, atol=1e-5)

    with pytest.raises(ValueError, match='forward_u1'):
        U1Loss(spatial=True)(logits, target)


@pytest.mark.parametrize('logits, target, match', [
    (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), 'C >= 3'),
    (torch.randn(4, 5), torch.tensor([0, 1, 5, 1]), 'out of range'),
    (torch.randn(4, 5), torch.tensor([0, -1, 2, 1]), 'out of range'),
    (torch.randn(4, 5), torch.tensor([0, 1, 2]), 'Batch size mismatch'),
    (torch.randn(4, 5), torch.rand(4, 6), 'Soft targets must match'),
    (torch.randn(4, 5), torch.tensor([[0], [1], [2], [3]]), 'Hard targets'),
    (torch.randn(4, 5), torch.tensor([True, False, True, False]), 'Hard targets'),
    (torch.randn(4, 5, 2), torch.tensor([0, 1, 2, 3]), r'\(B, C\)'),
    (torch.tensor([[0.0, float('nan'), 1.0]] * 2), torch.tensor([0, 1]), 'Non-finite'),
    (torch.tensor([[0.0, float('inf'), 1.0]] * 2), torch.tensor([0, 1]), r'rows \[0, 1\]'),
])
def test_bad_input_is_named(logits, target, match):
    with pytest.raises(ValueError, match=match):
        U1Loss()(logits, target)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match='hue_input'):
        U1Loss(hue_input='angles')
    with pytest.raises(ValueError, match='smoothing'):
        U1Loss(smoothing=1.0)
    with pytest.raises(ValueError, match='hue_weight'):
        U1Loss(hue_weight=-1)


def test_bfloat16_autocast_computes_the_loss_in_float32():
    # issue 12 item 5: the AMP recipe computes the loss inside autocast
    logits = 50 + 3 * torch.randn(64, 100, generator=torch.Generator().manual_seed(7))
    target = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(8))
    loss_fn = U1Loss(hue_weight=1.0)
    reference = loss_fn.parts(logits, target)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = loss_fn.parts(logits, target)
        spatial = loss_fn.parts(logits.to(torch.bfloat16), target)
    assert inside.total.dtype == torch.float32
    torch.testing.assert_close(inside.hue, reference.hue, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(inside.ce, reference.ce)
    # bfloat16 logits themselves are upcast, not recomputed: same as their float32 value
    torch.testing.assert_close(spatial.hue, loss_fn.parts(logits.to(torch.bfloat16).float(), target).hue)


def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match='empty batch'):
        U1Loss()(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long))


def test_integer_targets_of_any_integer_dtype_are_class_indices():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(9))
    target = torch.tensor([0, 1, 2, 3, 4, 0])
    expected = U1Loss(smoothing=0.1)(logits, target)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(U1Loss(smoothing=0.1)(logits, target.to(dtype)), expected)


@pytest.mark.parametrize('soft, match', [
    (torch.tensor([[1.47, -0.47, 0.0, 0.0, 0.0]] * 2), 'negative'),
    (torch.tensor([[0.97, 0.97, 0.0, 0.0, 0.0]] * 2), 'sum to 1'),
    (torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.1]] * 2), 'sum to 1'),
])
def test_soft_targets_must_be_distributions(soft, match):
    with pytest.raises(ValueError, match=match):
        U1Loss()(torch.randn(2, 5), soft)
    # rounding-level deviations are accepted
    ok = torch.full((2, 5), 0.2) + 1e-7
    assert torch.isfinite(U1Loss()(torch.randn(2, 5), ok))


@pytest.mark.parametrize('setting', [{'hue_weight': float('nan')}, {'eps': float('nan')},
                                     {'hue_weight': float('inf')}, {'eps': float('inf')}])
def test_non_finite_settings_are_refused_at_construction(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        U1Loss(**setting)


@pytest.mark.parametrize('scale', [1e20, 1e30])
def test_huge_logits_have_the_hue_of_their_direction(scale):
    # at this scale the floor and eps are negligible: the loss is that of the direction, smoothed
    # relative to its own scale only
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(10))
    target = torch.randint(0, 6, (8,), generator=torch.Generator().manual_seed(11))
    hue = U1Loss().parts(logits * scale, target).hue
    assert torch.isfinite(hue)
    expected = _documented_hue_loss(logits, _roots(6)[target], floor=0.0, eps=0.0)
    torch.testing.assert_close(hue.double(), expected, rtol=1e-5, atol=1e-6)


def test_float64_logits_give_a_float64_loss():
    logits = torch.randn(8, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12), requires_grad=True)
    target = torch.randint(0, 6, (8,), generator=torch.Generator().manual_seed(13))
    parts = U1Loss(smoothing=0.1).parts(logits, target)
    assert parts.total.dtype == parts.ce.dtype == parts.hue.dtype == torch.float64
    parts.total.backward()
    assert logits.grad.dtype == torch.float64
    assert U1Loss()(logits.detach().half().float(), target).dtype == torch.float32


@pytest.mark.parametrize('logits', [
    torch.zeros(4, 10),
    torch.full((4, 10), 2.0) + 1e-6 * torch.randn(4, 10, generator=torch.Generator().manual_seed(14)),
    1e-4 * torch.randn(4, 10, generator=torch.Generator().manual_seed(15)),
])
def test_hue_gradient_near_zero_chroma_is_of_the_order_of_the_cross_entropy_s(logits):
    target = torch.tensor([0, 1, 2, 3])
    grads = {}
    for name in ('ce', 'hue'):
        x = logits.clone().requires_grad_(True)
        getattr(U1Loss(hue_weight=1.0).parts(x, target), name).backward()
        grads[name] = float(x.grad.norm())
    assert math.isfinite(grads['hue'])
    assert grads['hue'] <= 20 * grads['ce'], grads


def test_hue_gradient_away_from_zero_chroma_is_close_to_the_unsmoothed_one():
    # the smoothing bounds the gradient near zero chroma; elsewhere it is close to d/dx of the
    # unsmoothed 1 - |t| cos(theta(x) - theta(t))
    logits = 5 * torch.randn(64, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(16))
    target = torch.randint(0, 7, (64,), generator=torch.Generator().manual_seed(17))
    x = logits.clone().requires_grad_(True)
    U1Loss().parts(x, target).hue.backward()
    y = logits.clone().requires_grad_(True)
    (1 - torch.cos(torch.atan2(*reversed(_ab(y))) - label_hue(7).double()[target])).mean().backward()
    # rows whose chroma is at least the rms of their centred logits: 10x the guard (0.1 x that rms)
    chroma = torch.hypot(*_ab(logits))
    far = chroma >= (logits - logits.mean(1, keepdim=True)).square().mean(1).sqrt()
    assert far.sum() >= 16
    error = (x.grad - y.grad).norm(dim=1)[far]
    # relative to the gradient's scale |t| / (|z| B): sin(angle error) may make the exact one ~0
    assert (error <= 0.02 / (chroma[far] * len(logits))).all()


def _ab(x):
    from timm_u1.core.hue import hue_basis
    ab = x @ hue_basis(x.shape[1], dtype=x.dtype)
    return ab[:, 0], ab[:, 1]


def test_compiled_loss_has_no_graph_break_and_still_checks():
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(18))
    target = torch.randint(0, 6, (8,), generator=torch.Generator().manual_seed(19))
    loss_fn = U1Loss(hue_weight=0.5)
    explained = torch._dynamo.explain(loss_fn)(logits, target)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(loss_fn, backend='aot_eager')
    torch.testing.assert_close(compiled(logits, target), loss_fn(logits, target))
    bad = logits.clone()
    bad[3, 2] = float('nan')
    with pytest.raises(Exception, match='[Nn]on-finite'):
        compiled(bad, target)
    with pytest.raises(Exception, match='out of range'):
        compiled(logits, torch.full((8,), 6))


# --- the differentiated function is the documented one (issue 20, item 5) ---------------------

def _rows_with_zero_and_small_chroma(b, c, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(b, c, generator=g, dtype=dtype)
    x[0] = 0.0  # zero chroma: the guard holds the gradient finite
    x[1] = 2.0 + 1e-3 * torch.randn(c, generator=g, dtype=dtype)  # chroma far below the guard
    x[2] = 0.05 * torch.randn(c, generator=g, dtype=dtype)  # chroma about the guard
    return x


def _soft_target(b, c, seed):
    return torch.softmax(2 * torch.randn(b, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), 1)


@pytest.mark.parametrize('settings, soft', [
    ({}, False),
    ({'hue_input': 'probs'}, False),
    ({'smoothing': 0.1}, False),
    ({}, True),
    ({'hue_input': 'probs'}, True),
    ({'hue_weight': 0.3, 'smoothing': 0.2, 'eps': 1e-3}, False),
])
def test_gradcheck_in_float64(settings, soft):
    b, c = 6, 5
    x = _rows_with_zero_and_small_chroma(b, c, seed=20).requires_grad_(True)
    target = _soft_target(b, c, 21) if soft else torch.tensor([0, 1, 2, 3, 4, 0])
    loss_fn = U1Loss(**settings)
    assert torch.autograd.gradcheck(lambda v: loss_fn(v, target), (x,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_gradcheck_in_float64_spatial():
    b, c, n, h, w = 3, 4, 6, 2, 3
    g = torch.Generator().manual_seed(22)
    logits = torch.randn(b, c, generator=g, dtype=torch.float64, requires_grad=True)
    spatial = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    spatial[0, :, 0, 0] = 0.0  # a location with zero chroma
    spatial.requires_grad_(True)
    features = torch.rand(b, n, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, 2])
    loss_fn = U1Loss(spatial=True, smoothing=0.1)

    def total(lg, sp, ft):
        return loss_fn(U1Output(lg, activation_hue(lg, dim=-1), ft, sp), target)
    assert torch.autograd.gradcheck(total, (logits, spatial, features), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize('hue_input, soft', [('logits', False), ('probs', False), ('logits', True)])
def test_hue_term_is_the_documented_function(hue_input, soft):
    b, c = 8, 5
    x = _rows_with_zero_and_small_chroma(b, c, seed=23)
    target = _soft_target(b, c, 24) if soft else torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(25))
    p = target if soft else F.one_hot(target, c).double()
    roots = _roots(c)
    hue_in, floor = (x, 1.0) if hue_input == 'logits' else (x.softmax(1), 1.0 / c)
    expected = _documented_hue_loss(hue_in, p @ roots, floor)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-6)):
        hue = U1Loss(hue_input=hue_input).parts(x.to(dtype), target.to(dtype) if soft else target).hue
        torch.testing.assert_close(hue.double(), expected, rtol=tol, atol=tol)


def test_spatial_hue_term_is_the_documented_function():
    b, c, n, h, w = 2, 5, 8, 3, 2
    g = torch.Generator().manual_seed(26)
    spatial, features = torch.randn(b, c, h, w, generator=g), torch.rand(b, n, h, w, generator=g)
    logits = torch.randn(b, c, generator=g)
    target = torch.tensor([1, 4])
    e = features.double().square().sum(1)
    expected = _documented_hue_loss(spatial, _roots(c)[target], 1.0, weight=e / e.sum(dim=(1, 2), keepdim=True))
    out = U1Output(logits, activation_hue(logits, dim=-1), features, spatial)
    torch.testing.assert_close(U1Loss(spatial=True).parts(out, target).hue.double(), expected, rtol=1e-6, atol=1e-6)


def test_hue_term_is_within_its_guard_of_the_unregularised_definition():
    # 1 - 1/sqrt(1 + r^2) <= r^2 / 2 with r = g / |z|: the smoothing term only matters near zero chroma
    logits = 5 * torch.randn(256, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(27))
    target = torch.randint(0, 7, (256,), generator=torch.Generator().manual_seed(28))
    loss_fn = U1Loss()
    z = torch.stack(_ab(logits), 1)
    chroma = z.norm(dim=1)
    g2 = 1e-12 + 0.01 * (logits.var(1, unbiased=False) + 1)
    bound = (g2 / chroma.square() / 2).mean()
    exact = (1 - torch.cos(torch.atan2(z[:, 1], z[:, 0]) - label_hue(7).double()[target])).mean()
    hue = loss_fn.parts(logits, target).hue
    assert 0 < float((hue - exact).abs()) <= float(bound)


def test_logits_near_the_float32_maximum_give_the_finite_loss():
    # the true loss is finite (the target is each row's largest logit), but log_softmax overflows to
    # -inf at the other classes and 0 * -inf made a NaN
    big = 3e38
    logits = torch.tensor([[big, -big, 0.0, 1.0, 2.0], [-big, big, 5.0, 0.0, -1.0]], requires_grad=True)
    target = torch.tensor([0, 1])
    for settings, tgt in (({}, target), ({'hue_input': 'probs'}, target), ({}, F.one_hot(target, 5).float()),
                          ({'smoothing': 0.1}, target)):
        parts = U1Loss(**settings).parts(logits, tgt)
        reference = U1Loss(**settings).parts(logits.detach().double(), tgt.double() if tgt.is_floating_point() else tgt)
        assert torch.isfinite(parts.total), settings
        torch.testing.assert_close(parts.total.double(), reference.total, rtol=1e-5, atol=1e-5)
        logits.grad = None
        parts.total.backward()
        assert torch.isfinite(logits.grad).all(), settings


def test_a_loss_beyond_float32_is_an_error_naming_the_fix():
    # the target's logit is 6e38 below the row's largest: the cross-entropy itself exceeds float32
    logits = torch.tensor([[3e38, -3e38, 0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match='float32.*float64'):
        U1Loss()(logits, torch.tensor([1]))
    assert torch.isfinite(U1Loss()(logits.double(), torch.tensor([1])))


# --- one U1Config, held by the loss (issue 19) -------------------------------------------------

def test_the_loss_holds_one_u1_config():
    from timm_u1 import U1Config
    assert U1Loss().config == U1Config()  # the defaults are U1Config's, declared once
    config = U1Config(hue_weight=0.3, hue_input='probs', spatial=True, eps=1e-4)
    loss = U1Loss(config=config, smoothing=0.1)
    assert loss.config == config and loss.config is not config
    assert (loss.hue_weight, loss.hue_input, loss.spatial, loss.eps, loss.smoothing) == (0.3, 'probs', True, 1e-4, 0.1)
    # keywords override the config they are given with; the rest is the config's
    assert U1Loss(hue_weight=2.0, config=config).config == U1Config(2.0, 'probs', True, 1e-4)
    assert U1Loss(hue_weight=0.5, hue_input='probs').config == U1Config(hue_weight=0.5, hue_input='probs')
    # a setting assigned on the loss is validated and lands in its config
    loss.hue_weight = 0.7
    assert loss.config.hue_weight == 0.7
    with pytest.raises(ValueError, match='hue_weight'):
        loss.hue_weight = -1.0
    assert loss.config.hue_weight == 0.7
    with pytest.raises(TypeError, match='U1Config'):
        U1Loss(config={'hue_weight': 0.3})


def test_the_config_decides_what_the_loss_computes():
    from timm_u1 import U1Config
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(30))
    target = torch.randint(0, 6, (8,), generator=torch.Generator().manual_seed(31))
    config = U1Config(hue_weight=0.4, hue_input='probs', eps=1e-3)
    torch.testing.assert_close(
        U1Loss(config=config)(logits, target),
        U1Loss(hue_weight=0.4, hue_input='probs', eps=1e-3)(logits, target))
    assert not torch.allclose(U1Loss(config=config)(logits, target), U1Loss()(logits, target))


def test_from_model_takes_the_model_s_config_with_overrides():
    import timm
    model = timm.create_model('u1_test_resnet', num_classes=5,
                              pretrained_cfg_overlay=dict(u1=dict(hue_weight=0.25, hue_input='probs')))
    loss = U1Loss.from_model(model)
    assert loss.config == model.u1_cfg
    assert U1Loss.from_model(model, hue_weight=0.5, smoothing=0.1).config == model.u1_cfg.__class__(
        hue_weight=0.5, hue_input='probs')


@pytest.mark.parametrize('field, value', [
    ('hue_weight', 'a'), ('hue_weight', True), ('hue_weight', float('nan')), ('hue_weight', -1.0), ('hue_weight', None),
    ('eps', 0.0), ('eps', float('inf')), ('eps', '1e-6'), ('hue_input', 'angles'), ('hue_input', None),
    ('spatial', 'yes'), ('spatial', 1),
])
def test_every_u1_config_field_is_checked_with_its_name(field, value):
    from timm_u1 import U1Config
    with pytest.raises(ValueError, match=f'U1Config.{field}'):
        U1Config(**{field: value})
    with pytest.raises(ValueError, match=field):
        U1Config.from_dict({field: value})


# --- the cheap checks refuse what the detailed ones did (issue 25) ------------------------------

@pytest.mark.parametrize('settings', [{}, {'hue_weight': 0.0}, {'smoothing': 0.1}, {'hue_input': 'probs'},
                                      {'hue_weight': 0.0, 'smoothing': 0.1}])
@pytest.mark.parametrize('bad, match', [
    (float('nan'), 'Non-finite'), (float('inf'), 'Non-finite'), (-float('inf'), 'Non-finite'),
])
def test_non_finite_logits_are_refused_in_every_mode(settings, bad, match):
    # -inf at a class that is not the target leaves the cross-entropy finite: only the check sees it
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(40))
    logits[2, 4] = bad
    with pytest.raises(ValueError, match=rf'{match}.*rows \[2\]'):
        U1Loss(**settings)(logits, torch.tensor([0, 1, 2, 3]))


@pytest.mark.parametrize('settings', [{}, {'hue_weight': 0.0}, {'smoothing': 0.1}])
@pytest.mark.parametrize('index', [5, -1, -100, 2 ** 40])
def test_class_indices_out_of_range_are_refused_in_every_mode(settings, index):
    # -100 is cross_entropy's ignore_index: it must not be skipped silently
    with pytest.raises(ValueError, match='out of range'):
        U1Loss(**settings)(torch.randn(4, 5), torch.tensor([0, 1, index, 3]))


@pytest.mark.parametrize('settings', [{}, {'hue_weight': 0.0}])
@pytest.mark.parametrize('soft, match', [
    (torch.tensor([[0.5, float('nan'), 0.5, 0.0, 0.0]] * 2), 'NaN'),
    (torch.tensor([[1.47, -0.47, 0.0, 0.0, 0.0]] * 2), 'negative'),
    (torch.tensor([[0.6, 0.6, 0.0, 0.0, 0.0]] * 2), 'sum to 1'),
])
def test_bad_soft_targets_are_refused_in_every_mode(settings, soft, match):
    with pytest.raises(ValueError, match=match):
        U1Loss(**settings)(torch.randn(2, 5), soft)


def test_check_finite_false_returns_the_nan():
    logits = torch.tensor([[0.0, float('nan'), 1.0]] * 2)
    assert torch.isnan(U1Loss(check_finite=False)(logits, torch.tensor([0, 1])))
    with pytest.raises(ValueError, match='out of range'):  # the targets are still checked
        U1Loss(check_finite=False)(logits, torch.tensor([0, 3]))


def test_non_finite_spatial_inputs_are_refused():
    b, c, n = 2, 5, 4
    logits, spatial, features = torch.randn(b, c), torch.randn(b, c, 2, 2), torch.rand(b, n, 2, 2)
    spatial[1, 0, 1, 1] = float('nan')
    out = U1Output(logits, activation_hue(logits, dim=-1), features, spatial)
    with pytest.raises(ValueError, match=r'Non-finite .*spatial logits or bottleneck features in batch rows \[1\]'):
        U1Loss(spatial=True)(out, torch.tensor([0, 1]))
