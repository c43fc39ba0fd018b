"""timm's generic model checks, run on ``u1_`` twins and compared with their base models.

Modelled on timm's own ``tests/test_models.py`` (forward, backward, default cfg, features_only,
forward_intermediates, torchscript, fx), on timm's tiny ``test_*`` architectures at small inputs so
that the whole file stays cheap on a CPU. Every check also asserts that the twin gives exactly what
its base model gives, since a twin must behave as the timm model it twins.
"""
import math
import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim, set_scriptable
from timm.models import FeatureInfo
from timm.models._features_fx import create_feature_extractor, get_graph_node_names

import timm_u1
from timm_u1 import is_u1_model

# five architectures (a ResNet, an EfficientNet, a ConvNeXt, a ByobNet and a ViT), with the
# kwargs that keep them small; the ViT is fixed-size, so it is built for 64 px
TWINS = [
    ('test_resnet', dict()),
    ('test_efficientnet', dict()),
    ('test_convnext', dict()),
    ('test_byobnet', dict()),
    ('test_vit', dict(img_size=64)),
]
SIZE = 64
NON_STD = ('test_vit',)  # token output: timm checks these with its non-standard cfg test


def _pair(name, seed=0, **kwargs):
    """A twin and its base model with identical weights."""
    torch.manual_seed(seed)
    twin = timm.create_model('u1_' + name, **kwargs)
    torch.manual_seed(seed)
    base = timm.create_model(name, **kwargs)
    base.load_state_dict(twin.state_dict())
    return twin, base


def _input(batch=1, size=SIZE, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('name, kwargs', TWINS)
def test_forward_and_backward_match_the_base(name, kwargs):
    twin, base = _pair(name, num_classes=42, **kwargs)
    assert is_u1_model(twin) and not is_u1_model(base)
    x = _input(batch=2)
    with torch.no_grad():
        out = twin.eval()(x)
        assert torch.equal(out, base.eval()(x)) and out.shape == (2, 42) and not out.isnan().any()

    # timm's test_model_backward: every parameter gets a gradient; and they are the base model's
    twin.train(), base.train()
    for model in (twin, base):
        model(x).mean().backward()
    num_params = sum(p.numel() for p in twin.parameters())
    assert num_params == sum(p.grad.numel() for p in twin.parameters() if p.grad is not None)
    for (n, p), (_, q) in zip(twin.named_parameters(), base.named_parameters()):
        assert torch.equal(p.grad, q.grad), n


@pytest.mark.parametrize('name, kwargs', TWINS)
def test_default_cfg_is_consistent(name, kwargs):
    """timm's test_model_default_cfgs (and _non_std for token models) on the twin."""
    twin, base = _pair(name, **kwargs)
    twin.eval(), base.eval()
    cfg = twin.default_cfg
    assert cfg is twin.pretrained_cfg and cfg['architecture'] == 'u1_' + name
    # apart from naming the twin and carrying its U(1) settings, the cfg is the base model's
    assert {k: v for k, v in cfg.items() if k not in ('architecture', 'u1')} == {
        k: v for k, v in base.default_cfg.items() if k != 'architecture'}
    assert cfg['u1'] == timm_u1.U1Config().to_dict()
    assert twin.num_classes > 0 and twin.num_features > 0 and twin.head_hidden_size > 0
    state_dict = twin.state_dict()
    for key in ('classifier', 'first_conv'):
        names = cfg[key] if isinstance(cfg[key], (tuple, list)) else (cfg[key],)
        for n in names:
            assert n + '.weight' in state_dict, f'{key} {n} not in model params'

    x = torch.randn(1, *cfg['input_size'])
    with torch.no_grad():
        features = twin.forward_features(x)
        assert torch.equal(features, base.forward_features(x))
        pre_logits = twin.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (1, twin.head_hidden_size)
        if name in NON_STD:
            assert features.shape[-1] == twin.num_features
        else:
            output_fmt = getattr(twin, 'output_fmt', 'NCHW')
            spatial, channel = get_spatial_dim(output_fmt), get_channel_dim(output_fmt)
            assert tuple(features.shape[d] for d in spatial) == tuple(cfg['pool_size'])
            assert features.shape[channel] == twin.num_features
        twin.reset_classifier(0)
        assert twin.num_classes == 0 and twin(x).shape == pre_logits.shape
        if name not in NON_STD:
            twin.reset_classifier(0, '')
            assert twin(x).shape == features.shape
            headless = timm.create_model('u1_' + name, num_classes=0, global_pool='', **kwargs).eval()
            assert is_u1_model(headless) and headless(x).shape == features.shape


@pytest.mark.parametrize('name, kwargs', [t for t in TWINS if t[0] not in NON_STD])
def test_features_only_is_the_base_feature_extractor(name, kwargs):
    """timm's test_model_forward_features: channels and reductions of feature_info hold."""
    twin, base = _pair(name, features_only=True, **kwargs)
    twin.eval(), base.eval()
    assert twin.feature_info.channels() == base.feature_info.channels()
    assert twin.feature_info.reduction() == base.feature_info.reduction()
    assert len(twin.feature_info.channels()) >= 3
    x = _input()
    with torch.no_grad():
        outputs, expected = twin(x), base(x)
    assert len(outputs) == len(twin.feature_info.channels())
    for c, r, o, e in zip(twin.feature_info.channels(), twin.feature_info.reduction(), outputs, expected):
        assert o.shape[1] == c and o.shape[2] <= math.ceil(SIZE / r) + 1 and torch.equal(o, e)


@pytest.mark.parametrize('name, kwargs', TWINS)
def test_forward_intermediates_and_getter_features(name, kwargs):
    """timm's test_model_forward_intermediates and _intermediates_features on the twin."""
    twin, base = _pair(name, **kwargs)
    twin.eval(), base.eval()
    info = FeatureInfo(twin.feature_info, len(twin.feature_info))
    assert len(info.channels()) >= 3
    x = _input()
    with torch.no_grad():
        final, intermediates = twin.forward_intermediates(x, output_fmt='NCHW')
        base_final, base_intermediates = base.forward_intermediates(x, output_fmt='NCHW')
        assert torch.equal(final, twin.forward_features(x)) and torch.equal(final, base_final)
        assert len(intermediates) == len(info.channels()) == len(base_intermediates)
        for c, r, o, e in zip(info.channels(), info.reduction(), intermediates, base_intermediates):
            assert o.shape[1] == c and o.shape[2] <= math.ceil(SIZE / r) + 1 and torch.equal(o, e)

        getter, base_getter = _pair(name, features_only=True, feature_cls='getter', **kwargs)
        outputs, expected = getter.eval()(x), base_getter.eval()(x)
        assert len(outputs) == len(getter.feature_info.channels()) == len(expected)
        for c, o, e in zip(getter.feature_info.channels(), outputs, expected):
            assert o.shape[1] == c and torch.equal(o, e)


@pytest.mark.parametrize('name, kwargs', TWINS)
def test_torchscript_and_trace_match_the_base(name, kwargs):
    """A twin scripts wherever its base does (timm's test_model_forward_torchscript), same outputs."""
    with set_scriptable(True):
        twin, base = _pair(name, num_classes=5, **kwargs)
    twin.eval(), base.eval()
    x = _input()
    with torch.no_grad():
        expected = base(x)
        scripted = torch.jit.script(twin)
        assert torch.allclose(scripted(x), expected, rtol=1e-5, atol=1e-6)
        assert torch.allclose(torch.jit.script(base)(x), scripted(x), rtol=1e-5, atol=1e-6)
        traced = torch.jit.trace(twin, x)
        assert torch.allclose(traced(x), expected, rtol=1e-5, atol=1e-6)
    # the scripted twin keeps the U(1) call in Python only: it is not part of the TorchScript module
    assert not hasattr(scripted, 'forward_u1')
    assert twin.forward_u1(x).logits.shape == (1, 5)  # and the eager twin still has it


@pytest.mark.parametrize('name, kwargs', [t for t in TWINS if t[0] in ('test_resnet', 'test_efficientnet', 'test_convnext')])
def test_torch_export_matches_the_base(name, kwargs):
    twin, base = _pair(name, num_classes=5, **kwargs)
    twin.eval(), base.eval()
    x = _input()
    program = torch.export.export(twin, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), base(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name, kwargs', TWINS)
def test_fx_trace_matches_the_base(name, kwargs):
    """timm's test_model_forward_fx / backward_fx through timm's fx helpers."""
    twin, base = _pair(name, num_classes=42, **kwargs)
    twin.eval(), base.eval()
    train_nodes, eval_nodes = get_graph_node_names(twin)
    assert (train_nodes, eval_nodes) == get_graph_node_names(base)
    graph = create_feature_extractor(twin, [eval_nodes[-1]])
    x = _input(batch=2)
    with torch.no_grad():
        out, = graph(x).values()
        assert torch.equal(out, base(x))
    graph.train()
    out, = graph(x).values()
    out.mean().backward()
    assert all(p.grad is not None for p in graph.parameters()) and out.shape == (2, 42)


@pytest.mark.parametrize('num_classes', [1, 2])
def test_binary_heads_build_and_only_the_hue_refuses_them(num_classes):
    model = timm.create_model('u1_test_resnet', num_classes=num_classes).eval()
    x = _input()
    assert is_u1_model(model) and model(x).shape == (1, num_classes)
    with pytest.raises(ValueError, match='>= 3 classes'):
        model.forward_u1(x)
    with pytest.raises(ValueError, match='C >= 3'):
        timm_u1.U1Loss.from_model(model)(model(x), torch.zeros(1, dtype=torch.long))


def test_dynamic_vit_uses_the_real_token_grid():
    """A non-square input to a dynamic-size ViT gives the patch embedding's grid, not a square guess."""
    model = timm.create_model('u1_test_vit', num_classes=5, img_size=64, dynamic_img_size=True).eval()
    patch = model.patch_embed.patch_size
    x = torch.randn(1, 3, 8 * patch[0], 2 * patch[1])
    with torch.no_grad():
        out = model.forward_u1(x)
        tokens = model.forward_features(x)[:, model.num_prefix_tokens:]
    assert out.features.shape == (1, model.num_features, 8, 2)
    # the token of patch row i, column j sits at (i, j) of the map
    assert torch.equal(out.features[0, :, 5, 1], tokens[0, 5 * 2 + 1])


def test_pickled_twin_loads_in_a_fresh_process(tmp_path):
    """torch.save(model) of a twin loads after ``import timm_u1`` in a new interpreter."""
    model = timm.create_model('u1_test_resnet', num_classes=4).eval()
    x = _input()
    path = tmp_path / 'model.pt'
    torch.save({'model': model, 'x': x, 'y': model(x).detach()}, path)
    code = (
        'import sys, torch, timm_u1\n'
        f'obj = torch.load({str(path)!r}, weights_only=False)\n'  # the test is about pickling itself
        "m = obj['model']\n"
        "assert type(m).__name__ == 'U1ResNet' and timm_u1.is_u1_model(m), type(m)\n"
        "assert torch.equal(m(obj['x']), obj['y'])\n"
        "assert m.forward_u1(obj['x']).logits.shape == (1, 4)\n"
        # a twin class resolves by name before any twin of its base was built in this process
        'from timm_u1.core.u1 import U1EfficientNet\n'
        "assert U1EfficientNet.__mro__[2].__name__ == 'EfficientNet'\n"
    )
    root = os.path.dirname(os.path.dirname(timm_u1.__file__))  # this checkout of timm_u1, not another install
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [root, os.environ.get('PYTHONPATH', '')] if p))
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_twin_classes_resolve_by_name():
    from timm_u1.core import u1
    cls = u1.U1EfficientNet
    assert issubclass(cls, timm.models.EfficientNet) and issubclass(cls, u1.U1ModelMixin)
    assert pickle.loads(pickle.dumps(cls)) is cls
    with pytest.raises(AttributeError, match='U1NoSuchModel'):
        u1.U1NoSuchModel
    with pytest.raises(AttributeError):
        u1.not_a_twin_name
