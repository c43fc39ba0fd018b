import pytest
import safetensors.torch
import timm
import torch

import timm_u1
from timm_u1 import U1Config, hue_angle, is_u1_model

# one of each family the issue names, small enough for CPU tests
FAMILIES = [
    ('resnet18', dict(), 32),
    ('efficientnet_b0', dict(), 32),
    ('convnext_atto', dict(), 32),
    ('vit_tiny_patch16_224', dict(img_size=32, patch_size=8), 32),
]


def test_every_timm_model_has_a_twin_with_its_pretrained_tags():
    base = {name for name in timm.list_models() if not name.startswith('u1_')}
    twins = set(timm.list_models('u1_*'))
    assert twins == {'u1_' + name for name in base}
    pretrained = timm.list_models('u1_convnext_tiny*', pretrained=True)
    assert 'u1_convnext_tiny.fb_in1k' in pretrained
    cfg = timm.models.get_pretrained_cfg('u1_convnext_tiny.fb_in1k')
    assert cfg.architecture == 'u1_convnext_tiny'
    assert cfg.hf_hub_id == 'timm/convnext_tiny.fb_in1k'  # the base model's weights
    assert set(timm.list_models(module='u1')) == twins  # timm files a model under its module's name
    assert timm_u1.register_u1_models() == 0  # idempotent
    # every tag of the base, with the base's cfg apart from the architecture it names
    for tag_name in timm.list_models('convnext_tiny', include_tags=True):
        twin_cfg = timm.models.get_pretrained_cfg('u1_' + tag_name).to_dict()
        base_cfg = timm.models.get_pretrained_cfg(tag_name).to_dict()
        assert twin_cfg.pop('architecture') == 'u1_convnext_tiny' and base_cfg.pop('architecture') == 'convnext_tiny'
        assert twin_cfg == base_cfg, tag_name
    # public timm APIs only (timm's private registry dicts change between releases)
    import inspect
    assert '_registry' not in inspect.getsource(timm_u1.core.u1)


@pytest.mark.parametrize('name, kwargs, size', FAMILIES)
def test_twin_is_the_base_model(name, kwargs, size):
    torch.manual_seed(0)
    twin = timm.create_model('u1_' + name, num_classes=7, **kwargs).eval()
    base = timm.create_model(name, num_classes=7, **kwargs).eval()
    assert is_u1_model(twin) and isinstance(twin, type(base)) and not is_u1_model(base)
    assert twin.pretrained_cfg['architecture'] == 'u1_' + name
    assert list(twin.state_dict()) == list(base.state_dict())

    # base weights load into the twin and back
    base.load_state_dict(twin.state_dict())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = twin(x)
        assert torch.equal(logits, base(x))
        twin.load_state_dict(base.state_dict())

        # timm's model contract
        assert twin.num_classes == 7 and twin.get_classifier() is not None
        feats = twin.forward_features(x)
        assert torch.equal(twin.forward_head(feats), logits)
        assert twin.forward_head(feats, pre_logits=True).shape == (2, twin.num_features)
        final, intermediates = twin.forward_intermediates(x)
        assert len(intermediates) > 0 and torch.equal(final, feats)

        out = twin.forward_u1(x)
        assert torch.equal(out.logits, logits)
        assert torch.allclose(out.angle, hue_angle(logits, dim=1), equal_nan=True)
        assert torch.allclose(out.chroma, timm_u1.chroma(logits, dim=1))
        assert out.features.dim() == 4 and out.features.shape[:2] == (2, twin.num_features if 'vit' not in name else 192)
        assert out.energy_map.shape == (2, *out.features.shape[2:])

    twin.reset_classifier(4)
    assert twin.num_classes == 4 and twin(x).shape == (2, 4)
    twin.reset_classifier(2)
    with pytest.raises(ValueError, match='>= 3 classes'):
        twin.forward_u1(x)


def test_spatial_logits_are_the_head_at_every_location():
    torch.manual_seed(1)
    model = timm.create_model('u1_resnet18', num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_u1(x, spatial=True)
        fc = model.get_classifier()
        expected = torch.einsum('bnhw,cn->bchw', out.features, fc.weight) + fc.bias[None, :, None, None]
    assert out.spatial_logits.shape == (2, 5, 2, 2)
    assert torch.allclose(out.spatial_logits, expected, atol=1e-5)
    # the mean of the per-location logits is the logits of the pooled map (linear head)
    assert torch.allclose(out.spatial_logits.mean(dim=(2, 3)), out.logits, atol=1e-5)
    assert model.forward_u1(x).spatial_logits is None

    vit = timm.create_model('u1_vit_tiny_patch16_224', num_classes=5, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match='spatial=False'):
        vit.forward_u1(torch.randn(1, 3, 32, 32), spatial=True)


def test_features_only_is_the_base_feature_extractor():
    model = timm.create_model('u1_resnet18', features_only=True, out_indices=(2, 4))
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [128, 512]


def test_u1_settings_travel_in_pretrained_cfg():
    model = timm.create_model('u1_resnet18', num_classes=3, pretrained_cfg_overlay=dict(u1=dict(hue_weight=0.25, spatial=True)))
    assert model.u1_cfg == U1Config(hue_weight=0.25, spatial=True)
    assert model.pretrained_cfg['u1']['hue_weight'] == 0.25
    loss = timm_u1.U1Loss.from_model(model)
    assert loss.hue_weight == 0.25 and loss.spatial
    with pytest.raises(ValueError, match='Unknown U\\(1\\) settings'):
        timm.create_model('u1_resnet18', pretrained_cfg_overlay=dict(u1=dict(lambda_=1)))


def test_pretrained_tag_loads_base_weights_from_a_local_file(tmp_path):
    base = timm.create_model('resnet18', num_classes=10)
    path = tmp_path / 'weights.safetensors'
    safetensors.torch.save_file(base.state_dict(), path)
    twin = timm.create_model('u1_resnet18', pretrained=True, num_classes=10, pretrained_cfg_overlay=dict(file=str(path), num_classes=10))
    for key, value in base.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value), key


def test_bad_models_are_named():
    # a binary head builds (tests/test_twins_timm.py); only its hue is refused
    with pytest.raises(ValueError, match='>= 3 classes'):
        timm.create_model('u1_resnet18', num_classes=2).forward_u1(torch.randn(1, 3, 32, 32))
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('u1_not_a_model')
    headless = timm.create_model('u1_resnet18', num_classes=0).eval()
    assert headless(torch.randn(1, 3, 32, 32)).shape == (1, 512)
