"""ActivationProbe / capture: the right map for every layer spelling, no hooks left behind."""
import pytest
import timm
import torch

import timm_u1  # noqa: F401  registers the u1_ twins
from timm_u1.analysis.probe import ActivationProbe, capture, layer_names, resolve_layer


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.fixture(scope='module')
def resnet():
    torch.manual_seed(0)
    return timm.create_model('resnet10t', num_classes=5).eval()


@pytest.fixture(scope='module')
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_layer_names_follow_feature_info(resnet):
    assert layer_names(resnet) == ['bottleneck', 'act1', 'layer1', 'layer2', 'layer3', 'layer4']
    assert resolve_layer(resnet, None) is None and resolve_layer(resnet, 'bottleneck') is None
    assert resolve_layer(resnet, 2) == 'layer2' and resolve_layer(resnet, -1) == 'layer4'
    assert resolve_layer(resnet, '3') == 'layer3'  # as typed on a command line
    assert resolve_layer(resnet, 'layer2.0.conv1') == 'layer2.0.conv1'  # any submodule


@torch.no_grad()
def test_bottleneck_is_forward_features(resnet, images):
    fmap = capture(resnet, images)
    torch.testing.assert_close(fmap, resnet.forward_features(images))
    assert fmap.shape == (2, 512, 2, 2)


@torch.no_grad()
@pytest.mark.parametrize('index', [0, 2, 4])
def test_feature_layers_match_forward_intermediates(resnet, images, index):
    want = resnet.forward_intermediates(images, indices=[index], intermediates_only=True)[0]
    torch.testing.assert_close(capture(resnet, images, index), want)
    torch.testing.assert_close(capture(resnet, images, layer_names(resnet)[index + 1]), want)


@torch.no_grad()
def test_vit_tokens_become_a_grid_without_prefix_tokens(images):
    vit = timm.create_model('test_vit', img_size=64).eval()
    fmap = capture(vit, images)
    assert fmap.shape == (2, 64, 4, 4)
    tokens = vit.forward_features(images)
    torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), tokens[:, vit.num_prefix_tokens:])
    want = vit.forward_intermediates(images, indices=[1], intermediates_only=True)[0]
    torch.testing.assert_close(capture(vit, images, 'blocks.1'), want)


@torch.no_grad()
def test_u1_twin_gives_the_forward_u1_features(images):
    torch.manual_seed(0)
    twin = timm.create_model('u1_resnet10t', num_classes=5).eval()
    torch.testing.assert_close(capture(twin, images), twin.forward_u1(images).features)
    assert capture(twin, images, 'layer3').shape == (2, 256, 4, 4)


def test_probe_stops_before_the_head_and_removes_its_hook(resnet, images):
    head_calls = []
    handle = resnet.fc.register_forward_hook(lambda *a: head_calls.append(1))
    try:
        with torch.no_grad(), ActivationProbe(resnet, 'layer2') as probe:
            assert _hooks(resnet) == 2
            assert probe(images).shape == (2, 128, 8, 8)
            assert not head_calls  # the layers after layer2 did not run
            # the caller may also run the model: the probe records the map and lets the forward finish
            out = resnet(images)
            assert out.shape == (2, 5) and head_calls and probe.output.shape == (2, 128, 8, 8)
        assert _hooks(resnet) == 1
    finally:
        handle.remove()


def test_capture_follows_grad_mode(resnet, images):
    x = images.clone().requires_grad_(True)
    fmap = capture(resnet, x, 'layer3')
    fmap.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert not capture(resnet, x, 'layer3').requires_grad


def test_head_layer_is_captured_by_the_full_forward(images):
    # mobilenetv3's conv_head runs in forward_head, after global pooling: a 1x1 map
    model = timm.create_model('mobilenetv3_small_050').eval()
    with torch.no_grad():
        assert capture(model, images, 'conv_head').shape == (2, 1024, 1, 1)
    assert _hooks(model) == 0


def test_bad_layers_name_the_valid_ones(resnet, images):
    with pytest.raises(ValueError, match=r"no layer 'layer9'.*bottleneck, act1, layer1, layer2, layer3, layer4"):
        capture(resnet, images, 'layer9')
    with pytest.raises(ValueError, match='index 7 is out of range.*5 feature_info layers'):
        ActivationProbe(resnet, 7)
    with pytest.raises(ValueError, match=r"'fc' outputs \(2, 5\), which is no activation map"):
        capture(resnet, images, 'fc')
    assert _hooks(resnet) == 0  # even after the failure
    with pytest.raises(RuntimeError, match='not active'):
        ActivationProbe(resnet, 'layer1')(images)


def test_dynamic_size_vit_maps_follow_the_real_token_grid():
    """A 128x32 input to a ViT with 16 px patches is an 8x2 grid, not the 4x4 its 16 tokens suggest."""
    model = timm.create_model('test_vit', num_classes=5, img_size=64, dynamic_img_size=True).eval()
    x = torch.randn(1, 3, 128, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
        for layer in (None, len(model.feature_info) - 1):
            fmap = capture(model, x, layer=layer)
            assert fmap.shape[-2:] == (8, 2), layer
        fmap = capture(model, x)
        # token t of the sequence is row t // 2, column t % 2 of the grid
        assert torch.equal(fmap[0, :, 3, 1], tokens[0, 3 * 2 + 1])
