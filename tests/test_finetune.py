"""timm_u1.studies.frozen: the feature cache is exact (head and last block), the permuted-angle control leaves
CE alone, a two-seed miniature of the whole study writes and regenerates its report, and a stopped study
resumes."""
import copy
import json
import time

import numpy as np
import pytest
import timm
import torch

from timm_u1.studies import frozen as ft
from timm_u1.cli import main
from timm_u1.data import stratified_split
from timm_u1.errors import ResumeMismatchError
from timm_u1.core.loss import U1Loss


def _tiny_backbone():
    torch.manual_seed(0)
    return timm.create_model('test_efficientnet', num_classes=0).eval().requires_grad_(False)


@pytest.mark.parametrize('arm, param', [('u1_spatial', 0.3), ('u1_perm', 0.3), ('ls', 0.1)])
def test_training_on_the_cache_matches_training_through_the_frozen_backbone(arm, param):
    backbone = _tiny_backbone()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 64, 64, generator=g)
    labels = torch.arange(12) % 4
    cache = ft.extract_feature_maps(backbone, x, batch_size=5)  # batching must not change the maps
    assert cache.shape[-2:] == (2, 2)
    order = ft.class_order(0, 4) if arm == 'u1_perm' else None
    heads = []
    for get_maps in (lambda i: cache[i], lambda i: backbone.forward_features(x[i])):
        head = ft._new_head(cache.shape[1], 4, seed=3)
        ft.fit_head(head, get_maps, labels, ft.make_loss(arm, param), lr=0.05, steps=4, seed=3,
                    batch_size=5, order=order)
        heads.append(head)
    with torch.no_grad():
        a = ft.head_outputs(heads[0], cache, spatial=True)
        b = ft.head_outputs(heads[1], backbone.forward_features(x), spatial=True)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.spatial_logits, b.spatial_logits)
    # and the head moved: a trained head differs from its initialisation
    assert not torch.allclose(heads[0].weight, ft._new_head(cache.shape[1], 4, seed=3).weight)


def test_pooled_logits_are_the_mean_of_the_spatial_logits():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 5)
    maps = torch.randn(3, 8, 3, 3)
    out = ft.head_outputs(head, maps, spatial=True)
    torch.testing.assert_close(out.spatial_logits.mean(dim=(2, 3)), out.logits)


def test_permuted_angles_change_the_hue_term_but_not_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 6)
    out = ft.head_outputs(head, torch.randn(10, 8, 2, 2), spatial=True)
    y = torch.randint(0, 6, (10,))
    order = ft.class_order(0, 6)
    assert not torch.equal(order, torch.arange(6))
    pout, py = ft._permuted(out, y, order)
    for spatial in (False, True):
        loss = U1Loss(hue_weight=1.0, spatial=spatial)
        plain, permuted = loss.parts(out, y), loss.parts(pout, py)
        torch.testing.assert_close(plain.ce, permuted.ce)
        assert not torch.allclose(plain.hue, permuted.hue)


def test_split_is_stratified_with_a_fixed_validation_set():
    labels = np.repeat(np.arange(4), 25)
    tr0, va0 = stratified_split(labels, 0.2, shots=3, seed=0)
    tr1, va1 = stratified_split(labels, 0.2, shots=3, seed=1)
    np.testing.assert_array_equal(va0, va1)
    assert not set(tr0) & set(va0) and not np.array_equal(tr0, tr1)
    assert np.bincount(labels[tr0]).tolist() == [3] * 4 and np.bincount(labels[va0]).tolist() == [5] * 4
    with pytest.raises(ValueError, match='fewer shots'):
        stratified_split(labels, 0.2, shots=30, seed=0)


@pytest.mark.parametrize('train', ft.TRAIN_PARTS)
def test_two_seed_miniature_of_the_whole_study(tmp_path, monkeypatch, train):
    backbone = timm.create_model('test_efficientnet', num_classes=0)
    monkeypatch.setattr(ft, '_create_backbone', lambda cfg: backbone.eval().requires_grad_(False))
    out = tmp_path / 'study'
    cfg = ft.FinetuneConfig(
        output=out, model='test_efficientnet', img_size=32, tasks=('digits:3',), seeds=(0, 1), train=train,
        selection_seeds=(100,), lrs=(1e-2, 3e-2), hue_weights=(0.3,), smoothings=(0.1,), steps=3, bootstrap=200)
    before = copy.deepcopy(backbone.state_dict())
    study = ft.run_finetune_study(cfg, log=lambda *a: None)
    assert set(study['tasks']['digits:3']['test']) == set(ft.ARMS)
    assert study['settings']['train'] == train
    assert all(torch.equal(t, before[n]) for n, t in backbone.state_dict().items())  # runs train copies
    for name in ('study.json', 'table.md', 'paired_differences.png'):
        assert (out / name).stat().st_size > 0
    table = (out / 'table.md').read_text()
    assert 'Caution: 2 test seeds' in table  # a miniature says so
    for arm in ft.ARMS:
        assert ft._LABELS[arm] in table
    assert json.loads((out / 'study.json').read_text())['settings']['seeds'] == [0, 1]
    # the report is regenerated from study.json alone, by the command
    (out / 'table.md').unlink()
    (out / 'paired_differences.png').unlink()
    assert main(['finetune', '--output', str(out), '--report']) == 0
    assert (out / 'table.md').read_text() == table and (out / 'paired_differences.png').is_file()
    # a second study reuses the cached features instead of running the backbone again (the last-block
    # study still creates it, for the block's pretrained weights, but does not run it)
    for extract in ('extract_feature_maps', 'extract_block_inputs'):
        monkeypatch.setattr(ft, extract, lambda *a, **k: pytest.fail('backbone rerun despite the cache'))
    if train == 'head':
        monkeypatch.setattr(ft, '_create_backbone', lambda cfg: pytest.fail('backbone created despite the cache'))
    (out / 'study.json').unlink()  # else the finished study would be resumed, not rerun
    again = ft.run_finetune_study(cfg, log=lambda *a: None)
    assert again['tasks']['digits:3']['test'] == study['tasks']['digits:3']['test']  # deterministic


def test_an_interrupted_study_resumes_after_its_last_finished_task(tmp_path, monkeypatch):
    backbone = timm.create_model('test_efficientnet', num_classes=0).eval().requires_grad_(False)
    monkeypatch.setattr(ft, '_create_backbone', lambda cfg: backbone)
    calls = []
    real_run_task, real_cached = ft.run_task, ft.cached_features

    def run_task(cfg, task, *args, **kwargs):
        calls.append(task.name)
        if task.name == 'digits:4' and len(calls) == 2:
            raise KeyboardInterrupt  # stopped during the second task
        return real_run_task(cfg, task, *args, **kwargs)

    def slow_first_extraction(cfg, source, *args, **kwargs):
        if not (cfg.output / 'features').is_dir():
            time.sleep(0.3)
        return real_cached(cfg, source, *args, **kwargs)

    monkeypatch.setattr(ft, 'run_task', run_task)
    monkeypatch.setattr(ft, 'cached_features', slow_first_extraction)
    cfg = ft.FinetuneConfig(
        output=tmp_path, model='test_efficientnet', img_size=32, tasks=('digits:3', 'digits:4'), seeds=(0, 1),
        arms=('ce', 'u1_logits'), selection_seeds=(100,), lrs=(1e-2,), hue_weights=(0.3,), steps=2, bootstrap=50)
    with pytest.raises(KeyboardInterrupt):
        ft.run_finetune_study(cfg, log=lambda *a: None)
    first = json.loads((tmp_path / 'study.json').read_text())
    assert list(first['tasks']) == ['digits:3']
    study = ft.run_finetune_study(cfg, log=lambda *a: None)
    assert calls == ['digits:3', 'digits:4', 'digits:4']  # the finished task was kept, not trained again
    assert study['tasks']['digits:3'] == first['tasks']['digits:3'] and list(study['tasks']) == ['digits:3', 'digits:4']
    # the extraction time is the first (slow) one, not overwritten by a later task's cache hit
    assert study['seconds']['features digits'] >= 0.3
    # other settings: refused, naming the setting, and nothing is lost
    changed = ft.FinetuneConfig(**{**cfg.__dict__, 'steps': 3})
    with pytest.raises(ResumeMismatchError, match='steps'):
        ft.run_finetune_study(changed, log=lambda *a: None)
    assert json.loads((tmp_path / 'study.json').read_text())['tasks'] == study['tasks']


# ---------------------------------------------------------------------------------------------
# train='last-block': the cache holds the last block's input, a copy of the block (+ tail) trains


def _backbone(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=0)
    with torch.no_grad():  # BN running statistics away from (0, 1), so that eval and train mode differ
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval().requires_grad_(False)


def _through(backbone, body):
    """A copy of the backbone running the trainable ``body`` in place of its last block and tail."""
    through = copy.deepcopy(backbone)
    if hasattr(through, 'blocks'):
        through.blocks[-1][-1] = body.block
        through.conv_head, through.bn2 = body.tail  # EfficientNet: conv_head + bn2 follow the block
    else:
        through.layer4[-1] = body.block
        assert len(body.tail) == 0  # ResNet: nothing follows layer4
    return through


@pytest.mark.parametrize('name', ['test_efficientnet', 'test_resnet'])
@pytest.mark.parametrize('arm, param', [('u1_spatial', 0.3), ('u1_perm', 0.3)])
def test_last_block_training_on_the_cache_matches_training_through_the_frozen_backbone(name, arm, param):
    backbone = _backbone(name)
    before = copy.deepcopy(backbone.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 3, 64, 64, generator=g)
    labels = torch.arange(12) % 4
    cache = ft.extract_block_inputs(backbone, x, batch_size=5)  # batching must not change the inputs
    order = ft.class_order(0, 4) if arm == 'u1_perm' else None
    bodies, throughs = [], []
    for via_cache in (True, False):
        body = ft.trainable_last_block(backbone)
        if via_cache:
            get_maps = lambda i, body=body: body(cache[i])  # noqa: E731
        else:
            through = _through(backbone, body)
            throughs.append(through)
            # image by image: with BN in train mode (batch statistics) this would differ from the cache path
            get_maps = lambda i, t=through: torch.cat([t.forward_features(x[j:j + 1]) for j in i])  # noqa: E731
        head = ft._new_head(backbone.num_features, 4, seed=3)
        ft.fit_head(head, get_maps, labels, ft.make_loss(arm, param), lr=0.05, steps=4, seed=3, batch_size=5,
                    order=order, body=body, body_lr_scale=0.5)
        bodies.append((body, head))
    (body_c, head_c), (body_t, head_t) = bodies
    with torch.no_grad():
        a = ft.head_outputs(head_c, body_c(cache), spatial=True)
        b = ft.head_outputs(head_t, throughs[0].forward_features(x), spatial=True)
        # and the full forward of the trained network, from pixels, agrees with the cached path
        assert a.features.shape == backbone.forward_features(x).shape
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.spatial_logits, b.spatial_logits)
    fresh = ft.trainable_last_block(backbone)
    # the block's weights moved, its BN running statistics did not, and the backbone is untouched
    moved = [n for n, p in body_c.named_parameters() if not torch.equal(p, fresh.state_dict()[n])]
    assert any(n.startswith('block.') for n in moved)
    for n, buf in body_c.named_buffers():
        torch.testing.assert_close(buf, fresh.state_dict()[n], msg=f'{n} changed: BN ran in train mode')
    for n, t in backbone.state_dict().items():
        assert torch.equal(t, before[n]), f'the backbone itself changed: {n}'
    assert not any(p.requires_grad for p in backbone.parameters())


def test_last_block_refuses_backbones_it_does_not_know():
    vit = timm.create_model('test_vit', num_classes=0)
    with pytest.raises(ValueError, match=r"test_vit.*EfficientNet family.*ResNet family.*--train head"):
        ft.trainable_last_block(vit)
    with pytest.raises(ValueError, match='test_vit'):
        ft.extract_block_inputs(vit, torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match='last-block'):
        ft.FinetuneConfig(output='x', train='last_layer')


def test_a_head_cache_is_never_reused_for_a_last_block_study(tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    split = {'image': images, 'label': [0, 1, 2] * 2}
    monkeypatch.setattr(ft, '_load_source', lambda source, study_dir: (split, split, ['a', 'b', 'c']))
    backbone = _backbone('test_efficientnet')
    calls = []
    for name in ('extract_feature_maps', 'extract_block_inputs'):
        original = getattr(ft, name)
        monkeypatch.setattr(ft, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    cfgs = {t: ft.FinetuneConfig(output=tmp_path, model='test_efficientnet', img_size=32, train=t) for t in ft.TRAIN_PARTS}
    head = ft.cached_features(cfgs['head'], 'tiny', backbone)
    block = ft.cached_features(cfgs['last-block'], 'tiny', backbone)
    assert calls == ['extract_feature_maps'] * 2 + ['extract_block_inputs'] * 2  # train + test, each computed
    assert head['train_maps'].shape[1] == backbone.num_features != block['train_maps'].shape[1]
    # each study then finds its own cache again
    for t, feats in (('head', head), ('last-block', block)):
        torch.testing.assert_close(ft.cached_features(cfgs[t], 'tiny', backbone)['train_maps'], feats['train_maps'])
    assert len(calls) == 4 and len(list((tmp_path / 'features').glob('*.safetensors'))) == 2
