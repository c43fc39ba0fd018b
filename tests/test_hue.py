import math

import pytest
import torch

from timm_u1.core.hue import (
    activation_hue, chroma, energy, energy_centroid, hue_angle, hue_basis, hue_components,
    image_plane_grid, label_hue, luminance, target_hue_vector,
)


def _wrap(angle: torch.Tensor) -> torch.Tensor:
    """Map angles to (-pi, pi] for comparisons."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def _angle_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    return bool((_wrap(a - b).abs() < atol).all())


def test_basis_is_orthonormal_and_orthogonal_to_medial_axis():
    for n in (3, 4, 7, 64, 1280):
        basis = hue_basis(n, dtype=torch.float64)
        medial = torch.full((n,), 1 / math.sqrt(n), dtype=torch.float64)
        assert torch.allclose(basis.T @ basis, torch.eye(2, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(basis.T @ medial, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_rgb_hue_formula_for_three_channels():
    torch.manual_seed(0)
    rgb = torch.rand(500, 3)
    r, g, b = rgb.unbind(1)
    expected = torch.atan2(math.sqrt(3) * (g - b), 2 * r - g - b)
    assert _angle_close(hue_angle(rgb, dim=1), expected)


def test_primary_colours_sit_at_0_120_240_degrees():
    primaries = torch.eye(3)
    angles = torch.rad2deg(hue_angle(primaries, dim=1))
    assert torch.allclose(angles, torch.tensor([0.0, 120.0, -120.0]), atol=1e-4)


@pytest.mark.parametrize('n', [3, 5, 16, 257])
def test_shift_scale_invariance_and_roll_rotation(n):
    torch.manual_seed(n)
    v = torch.rand(64, n, dtype=torch.float64)
    theta = hue_angle(v, dim=1)
    a, b = hue_components(v, dim=1)
    a_shift, b_shift = hue_components(v + 3.7, dim=1)
    assert torch.allclose(a, a_shift) and torch.allclose(b, b_shift)
    assert _angle_close(hue_angle(v * 5.5, dim=1), theta, atol=1e-9)
    for s in (1, 2, n - 1):
        rolled = torch.roll(v, shifts=s, dims=1)
        assert _angle_close(hue_angle(rolled, dim=1), theta + 2 * math.pi * s / n, atol=1e-9)


def test_components_decompose_the_vector():
    torch.manual_seed(1)
    v = torch.randn(10, 6, dtype=torch.float64)
    hs = activation_hue(v, dim=1)
    assert torch.allclose(hs.energy, (v ** 2).sum(1))
    assert torch.allclose(hs.luminance, v.sum(1) / math.sqrt(6))
    assert torch.allclose(hs.chroma, torch.hypot(hs.a, hs.b))
    # luminance^2 + chroma^2 is the energy of the projection on span(m, u, w): never more than E
    assert bool((hs.luminance ** 2 + hs.chroma ** 2 <= hs.energy + 1e-12).all())
    # for N = 3 the span is the whole space
    v3 = torch.randn(10, 3, dtype=torch.float64)
    hs3 = activation_hue(v3, dim=1)
    assert torch.allclose(hs3.luminance ** 2 + hs3.chroma ** 2, hs3.energy)


def test_zero_chroma_has_no_angle():
    grey = torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    hs = activation_hue(grey, dim=1)
    assert torch.isnan(hs.angle[:2]).all()
    assert hs.valid.tolist() == [False, False, True]
    assert hs.angle[2] == 0.0
    assert torch.isnan(hue_angle(torch.full((1, 512), 0.3), dim=1)).all()


def test_layouts_and_low_precision_inputs():
    torch.manual_seed(2)
    nchw = torch.rand(2, 8, 3, 5)
    nhwc = nchw.permute(0, 2, 3, 1)
    assert torch.allclose(hue_angle(nchw, dim=1), hue_angle(nhwc, dim=-1))
    assert hue_angle(nchw, dim=1).shape == (2, 3, 5)
    for dtype in (torch.float16, torch.bfloat16):
        low = nchw.to(dtype)
        angle = hue_angle(low, dim=1)
        assert angle.dtype == torch.float32
        assert _angle_close(angle, hue_angle(low.float(), dim=1), atol=1e-6)
        assert energy(low, dim=1).dtype == torch.float32
    assert luminance(nchw.double(), dim=1).dtype == torch.float64


def test_too_few_channels_is_an_error():
    with pytest.raises(ValueError, match='N >= 3'):
        hue_angle(torch.rand(4, 2), dim=1)
    with pytest.raises(ValueError, match='N >= 3'):
        chroma(torch.rand(4, 8, 2), dim=-1)


def test_label_hue_is_the_hue_of_the_one_hot_vector():
    for c in (3, 10, 1000):
        theta = label_hue(c)
        assert _angle_close(hue_angle(torch.eye(c), dim=1), theta)
    with pytest.raises(ValueError, match='C >= 3'):
        label_hue(2)


def test_target_hue_vector_hard_and_soft():
    c = 10
    hard = target_hue_vector(torch.tensor([0, 3, 9]), c)
    theta = label_hue(c)[[0, 3, 9]]
    assert torch.allclose(hard, torch.stack([theta.cos(), theta.sin()], 1), atol=1e-6)
    # mixup of classes 1 and 2 at lam = 0.7: the target vector is the same mix of their unit vectors
    p = torch.zeros(1, c)
    p[0, 1], p[0, 2] = 0.7, 0.3
    t = target_hue_vector(p, c)
    expected = 0.7 * target_hue_vector(torch.tensor([1]), c) + 0.3 * target_hue_vector(torch.tensor([2]), c)
    assert torch.allclose(t, expected, atol=1e-6)
    assert float(t.norm()) < 1.0
    # label smoothing keeps the angle and shrinks the length by (1 - s): the roots of unity sum to 0
    s = 0.1
    smooth = torch.full((1, c), s / c)
    smooth[0, 4] += 1 - s
    t_smooth = target_hue_vector(smooth, c)
    assert torch.allclose(t_smooth, (1 - s) * target_hue_vector(torch.tensor([4]), c), atol=1e-6)
    # uniform target: no direction at all
    assert float(target_hue_vector(torch.full((1, c), 1 / c), c).norm()) < 1e-6


def test_target_hue_vector_rejects_bad_targets():
    with pytest.raises(ValueError, match='out of range'):
        target_hue_vector(torch.tensor([0, 10]), 10)
    with pytest.raises(ValueError, match='out of range'):
        target_hue_vector(torch.tensor([-1]), 10)
    with pytest.raises(ValueError, match=r'shape \(B, 10\)'):
        target_hue_vector(torch.rand(4, 9), 10)


def test_image_plane_grid_is_centred():
    dx, dy, phi, r = image_plane_grid(7, 7)
    assert dx[3, 3] == 0 and dy[3, 3] == 0 and r[3, 3] == 0
    assert dx[3, 6] == 3 and phi[3, 6] == 0  # right of centre: angle 0
    assert torch.isclose(phi[6, 3], torch.tensor(math.pi / 2))  # below centre (rows grow down)
    dx, dy, _, _ = image_plane_grid(4, 6)
    assert dx.sum() == 0 and dy.sum() == 0


def test_energy_centroid_of_centred_and_offset_maps():
    _, _, _, r = image_plane_grid(7, 7)
    centred = torch.exp(-r ** 2)[None]  # rotationally symmetric
    c = energy_centroid(centred)
    assert float(c.length.abs().max()) < 1e-6 and torch.isnan(c.angle).all()

    right = torch.zeros(1, 7, 7)
    right[0, 3, 6] = 5.0
    c = energy_centroid(right)
    assert torch.allclose(c.length, torch.tensor([1.0])) and torch.allclose(c.angle, torch.tensor([0.0]))

    below = torch.zeros(2, 5, 9)
    below[:, 4, 4] = 1.0
    c = energy_centroid(below)
    assert torch.allclose(c.angle, torch.full((2,), math.pi / 2))
    assert torch.allclose(c.length, torch.full((2,), 2 / 4))  # half-size is max((9-1)/2, (5-1)/2)

    c = energy_centroid(torch.zeros(1, 3, 3))
    assert torch.isnan(c.length).all()
    with pytest.raises(ValueError, match='more than one location'):
        energy_centroid(torch.ones(2, 1, 1))


def test_bfloat16_autocast_still_computes_in_float32():
    # issue 12 item 5: under autocast the projection ran in bfloat16 (angles off by up to 19 degrees)
    logits = 50 + 3 * torch.randn(256, 100, generator=torch.Generator().manual_seed(7))
    reference = activation_hue(logits, dim=1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        inside = activation_hue(logits, dim=1)
        a, b = hue_components(logits, dim=1)
        t = target_hue_vector(torch.softmax(logits, dim=1).float(), 100)
    assert inside.angle.dtype == torch.float32 and a.dtype == torch.float32
    assert _angle_close(inside.angle, reference.angle, atol=1e-5)
    torch.testing.assert_close(inside.chroma, reference.chroma)
    torch.testing.assert_close(a, reference.a)
    torch.testing.assert_close(b, reference.b)
    torch.testing.assert_close(t, target_hue_vector(torch.softmax(logits, dim=1), 100))


@pytest.mark.parametrize('scale', [1e-30, 1e20, 1e30, 3e38])
def test_hue_of_huge_and_tiny_vectors_is_the_hue_of_the_direction(scale):
    # |x| >= 1e20 overflowed the energy, so the angle came out NaN and the chroma wrong
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(8))
    x = x / x.abs().amax(dim=1, keepdim=True)
    unit = activation_hue(x, dim=1)
    big = activation_hue(x * scale, dim=1)
    assert _angle_close(big.angle, unit.angle, atol=1e-5)
    torch.testing.assert_close(big.chroma / scale, unit.chroma, rtol=1e-5, atol=0)
    torch.testing.assert_close(chroma(x * scale, dim=1) / scale, unit.chroma, rtol=1e-5, atol=0)
    torch.testing.assert_close(luminance(x * scale, dim=1) / scale, unit.luminance, rtol=1e-4, atol=1e-6)


def test_integer_class_indices_of_any_integer_dtype():
    expected = target_hue_vector(torch.tensor([0, 3, 9]), 10)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(target_hue_vector(torch.tensor([0, 3, 9], dtype=dtype), 10), expected)


def test_label_hue_vectors_are_the_unit_hue_vectors_of_the_classes():
    from timm_u1.core.hue import label_hue_vectors
    for c in (3, 10, 1000):
        v = label_hue_vectors(c, dtype=torch.float64)
        hs = activation_hue(torch.eye(c, dtype=torch.float64), dim=1)
        torch.testing.assert_close(v, torch.stack([hs.a, hs.b], 1) / hs.chroma[:, None])
        assert label_hue_vectors(c).dtype == torch.float32
    with pytest.raises(ValueError, match='C >= 3'):
        label_hue_vectors(2)


def test_a_basis_first_built_under_inference_mode_still_serves_autograd():
    # analyze() runs under torch.inference_mode; a training step in the same process reuses the cached basis
    from timm_u1.core.hue import _hue_basis, _label_hue_vectors, label_hue_vectors

    _hue_basis.cache_clear()
    _label_hue_vectors.cache_clear()
    with torch.inference_mode():
        hue_components(torch.rand(2, 13))
        label_hue_vectors(13)
    x = torch.rand(2, 13, requires_grad=True)
    a, b = hue_components(x)
    (a + b + torch.rand(2, 13, requires_grad=True) @ label_hue_vectors(13)[:, 0]).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
