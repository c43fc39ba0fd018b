"""timm_u1.studies.frozen: the feature cache is exact (head and last block), the permuted-angle control leaves
CE alone, a two-seed miniature of the whole study writes and regenerates its report, and a stopped study
resumes."""
import copy
import dataclasses
import json
import shutil

import numpy as np
import pytest
import timm
import torch

from timm_u1.studies import features, frozen as ft
from timm_u1.studies.ledger import Ledger
from timm_u1.runs import backbone_fingerprint
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


def _miniature(out, train, **change):
    return ft.FinetuneConfig(**{**dict(
        output=out, model='test_efficientnet', img_size=32, tasks=('digits:3',), seeds=(0, 1), train=train,
        selection_seeds=(100,), lrs=(1e-2, 3e-2), hue_weights=(0.3,), smoothings=(0.1,), steps=3), **change})


def _same_study(a, b):
    """Two study.json equal in everything but when and where they ran."""
    a, b = (dict(json.loads(x.read_text()) if not isinstance(x, dict) else x) for x in (a, b))
    for d in (a, b):
        d.pop('seconds'), d.pop('execution'), d['settings'].pop('command')
    assert a == b


@pytest.mark.parametrize('train', ft.TRAIN_PARTS)
def test_two_seed_miniature_of_the_whole_study(tmp_path, monkeypatch, train):
    backbone = timm.create_model('test_efficientnet', num_classes=0)
    monkeypatch.setattr(ft, '_create_backbone', lambda cfg: backbone.eval().requires_grad_(False))
    out = tmp_path / 'study'
    cfg = _miniature(out, train)
    before = copy.deepcopy(backbone.state_dict())
    study = ft.run_finetune_study(cfg)
    task = study['tasks']['digits:3']
    assert set(task['test']) == set(ft.ARMS)
    assert study['settings']['train'] == train
    # the permuted arm runs at the natural arm's choice, and is compared with it directly
    assert task['test']['u1_perm']['lr'] == task['test']['u1_logits']['lr'] and not task['selection']['u1_perm']['grid']
    assert all(torch.equal(t, before[n]) for n, t in backbone.state_dict().items())  # runs train copies
    for name in ('study.json', 'table.md', 'paired_differences.png'):
        assert (out / name).stat().st_size > 0
    table = (out / 'table.md').read_text()
    assert 'Caution: 2 test seeds' in table  # a miniature says so
    assert 'natural minus permuted class order' in table and 'family of all 6 comparisons' in table
    for arm in ft.ARMS:
        assert ft._LABELS[arm] in table
    assert json.loads((out / 'study.json').read_text())['settings']['seeds'] == [0, 1]
    # the report is regenerated from study.json alone, by the command
    (out / 'table.md').unlink()
    (out / 'paired_differences.png').unlink()
    assert main(['finetune', '--output', str(out), '--report']) == 0
    assert (out / 'table.md').read_text() == table and (out / 'paired_differences.png').is_file()
    # every run again, from the cached features: the backbone is not run again, and the runs are deterministic
    for extract in ('extract_feature_maps', 'extract_block_inputs'):
        monkeypatch.setattr(features, extract, lambda *a, **k: pytest.fail('backbone rerun despite the cache'))
    (out / 'study.json').unlink()
    shutil.rmtree(out / 'results')
    again = ft.run_finetune_study(cfg)
    assert again['tasks']['digits:3']['test'] == study['tasks']['digits:3']['test']


def test_two_jobs_write_the_study_of_one(tmp_path, monkeypatch):
    """Worker processes (spawned, one thread each) give the same study.json as one process."""
    backbone = _backbone('test_efficientnet')
    monkeypatch.setattr(ft, '_create_backbone', lambda cfg: backbone)
    one = ft.run_finetune_study(_miniature(tmp_path / 'one', 'last-block'))
    two = ft.run_finetune_study(_miniature(tmp_path / 'two', 'last-block'), jobs=2)
    assert two['execution'] == {'jobs': 2, 'processes': 1}
    _same_study(tmp_path / 'one' / 'study.json', tmp_path / 'two' / 'study.json')
    assert one['tasks'] == two['tasks']


def test_an_interrupted_study_resumes_after_its_last_finished_run(tmp_path, monkeypatch):
    backbone = timm.create_model('test_efficientnet', num_classes=0).eval().requires_grad_(False)
    monkeypatch.setattr(ft, '_create_backbone', lambda cfg: backbone)
    calls = []
    real_run = ft.FrozenBackend.run

    def run(self, r):
        calls.append(r)
        if len(calls) == 7:
            raise KeyboardInterrupt  # stopped during the test runs
        return real_run(self, r)

    monkeypatch.setattr(ft.FrozenBackend, 'run', run)
    cfg = ft.FinetuneConfig(
        output=tmp_path / 's', model='test_efficientnet', img_size=32, tasks=('digits:3', 'digits:4'), seeds=(0, 1),
        arms=('ce', 'u1_logits'), selection_seeds=(100,), lrs=(1e-2, 3e-2), hue_weights=(0.3,), steps=2)
    with pytest.raises(KeyboardInterrupt):
        ft.run_finetune_study(cfg)
    assert not (tmp_path / 's' / 'study.json').exists() and len(Ledger(tmp_path / 's', {}).read()) == 6
    study = ft.run_finetune_study(cfg)
    assert len(calls) == 7 + (8 + 8 - 6)  # 8 selection + 8 test runs, 6 of them finished before
    assert calls[6] == calls[7]  # the interrupted run ran again first
    monkeypatch.setattr(ft.FrozenBackend, 'run', real_run)
    whole = ft.run_finetune_study(dataclasses.replace(cfg, output=tmp_path / 'whole'))
    assert whole['tasks'] == study['tasks']
    # a run depends on the budget: other steps are refused, naming the setting, and nothing is lost
    with pytest.raises(ResumeMismatchError, match='steps'):
        ft.run_finetune_study(dataclasses.replace(cfg, steps=3))
    assert json.loads((tmp_path / 's' / 'study.json').read_text())['tasks'] == study['tasks']
    # more seeds or fewer tasks reuse every finished run
    monkeypatch.setattr(ft.FrozenBackend, 'run', run)
    calls.clear()
    more = ft.run_finetune_study(dataclasses.replace(cfg, tasks=('digits:3',), seeds=(0, 1, 2)))
    assert [(r.task, r.seed) for r in calls] == [('digits:3', 2)] * 2
    assert more['tasks']['digits:3']['test']['ce']['top1'][:2] == study['tasks']['digits:3']['test']['ce']['top1']


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
    monkeypatch.setattr(features, 'load_source', lambda source, study_dir: (split, split, ['a', 'b', 'c']))
    backbone = _backbone('test_efficientnet')
    calls = []
    for name in ('extract_feature_maps', 'extract_block_inputs'):
        original = getattr(features, name)
        monkeypatch.setattr(features, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    cfgs = {t: ft.FinetuneConfig(output=tmp_path, model='test_efficientnet', img_size=32, train=t) for t in ft.TRAIN_PARTS}
    head = ft.cached_features(cfgs['head'], 'tiny', backbone)
    block = ft.cached_features(cfgs['last-block'], 'tiny', backbone)
    assert calls == ['extract_feature_maps'] * 2 + ['extract_block_inputs'] * 2  # train + test, each computed
    assert head['train_maps'].shape[1] == backbone.num_features != block['train_maps'].shape[1]
    # each study then finds its own cache again
    for t, feats in (('head', head), ('last-block', block)):
        torch.testing.assert_close(ft.cached_features(cfgs[t], 'tiny', backbone)['train_maps'], feats['train_maps'])
    assert len(calls) == 4 and len(list((tmp_path / 'features').glob('*.safetensors'))) == 2


def test_the_feature_cache_follows_the_weights_not_the_model_spec(tmp_path, monkeypatch):
    """New weights at the same --model path: the maps are computed again, from the new weights."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    split = {'image': images, 'label': [0, 1, 2] * 2}
    monkeypatch.setattr(features, 'load_source', lambda source, study_dir: (split, split, ['a', 'b', 'c']))
    old, new = _backbone('test_efficientnet'), _backbone('test_efficientnet')
    with torch.no_grad():
        for p in new.parameters():
            p.mul_(1.5)
    cfg = ft.FinetuneConfig(output=tmp_path, model='local-dir:/same/path', img_size=32)
    first = ft.cached_features(cfg, 'tiny', old)
    second = ft.cached_features(cfg, 'tiny', new)
    x = ft.preprocess(images, 32, new.pretrained_cfg['mean'], new.pretrained_cfg['std'])
    torch.testing.assert_close(second['train_maps'], ft.extract_feature_maps(new, x))
    assert not torch.allclose(first['train_maps'], second['train_maps'])


def test_new_weights_at_the_same_model_path_are_refused_then_studied_afresh(tmp_path, capsys):
    """Replace the backbone at the same --model path: its runs are refused (the study's identity holds the
    weights' fingerprint); after deleting what the refusal names, the new weights' features are computed."""
    from timm_u1.runs import backbone_fingerprint

    folder, out = tmp_path / 'backbone', tmp_path / 'study'

    def save(seed):
        torch.manual_seed(seed)
        shutil.rmtree(folder, ignore_errors=True)
        model = timm.create_model('test_efficientnet', num_classes=10)
        timm.models.save_for_hf(model, folder, safe_serialization=True)
        return backbone_fingerprint(model)

    args = ['finetune', '--model', f'local-dir:{folder}', '--img-size', '32', '--tasks', 'digits:3', '--seeds', '0',
            '1', '--arms', 'ce', 'u1_logits', '--selection-seeds', '100', '--lrs', '0.01', '--hue-weights', '0.3',
            '--steps', '2', '--output', str(out)]
    save(0)
    assert main(args) == 0
    first = json.loads((out / 'study.json').read_text())
    new = save(1)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert 'backbone' in err and f'delete {out / "results"}' in err and len(err.strip().splitlines()) == 1
    shutil.rmtree(out / 'results')
    (out / 'study.json').unlink()
    assert main(args) == 0
    second = json.loads((out / 'study.json').read_text())
    from safetensors import safe_open

    (cache,) = (out / 'features').glob('*.safetensors')
    with safe_open(str(cache), 'pt') as f:
        assert f.metadata()['backbone'] == new
    assert second['tasks']['digits:3']['test'] != first['tasks']['digits:3']['test']


@pytest.mark.parametrize('damage', ['truncate', 'nan', 'labels'])
def test_a_damaged_feature_cache_is_computed_again(tmp_path, monkeypatch, damage):
    from PIL import Image
    from safetensors.torch import load_file, save_file

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(6)]
    split = {'image': images, 'label': [0, 1, 2] * 2}
    monkeypatch.setattr(features, 'load_source', lambda source, study_dir: (split, split, ['a', 'b', 'c']))
    backbone = _backbone('test_efficientnet')
    good = features.cached_features(tmp_path, 'tiny', 'head', 32, backbone)
    (path,) = (tmp_path / 'features').glob('*.safetensors')
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:-100])
    else:
        from safetensors import safe_open

        with safe_open(str(path), 'pt') as f:
            meta = f.metadata()
        tensors = load_file(str(path))
        if damage == 'nan':
            tensors['test_maps'][0, 0, 0, 0] = float('nan')
        else:
            tensors['train_labels'] = tensors['train_labels'][:-1]
        save_file(tensors, str(path), metadata=meta)
    fingerprint = backbone_fingerprint(backbone)
    assert features.read_cached_features(tmp_path, 'tiny', 'head', 32, fingerprint) is None
    again = features.cached_features(tmp_path, 'tiny', 'head', 32, backbone)
    torch.testing.assert_close(again['test_maps'], good['test_maps'])
    assert features.read_cached_features(tmp_path, 'tiny', 'head', 32, fingerprint) is not None


def test_preprocess_is_timms_eval_transform_squashed_to_the_size():
    """The studies' images go through timm's own eval transform (bicubic squash, no crop): the same
    tensors the cached features of the published studies were computed from."""
    from PIL import Image

    from timm_u1.data import load_image_dataset, to_rgb

    images = list(load_image_dataset('photos', 'train')['image'][:3]) + [Image.new('L', (7, 5), 90)]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = ft.preprocess(images, 24, mean, std)
    by_hand = [np.asarray(to_rgb(im).resize((24, 24), Image.BICUBIC), dtype=np.float32) / 255.0 for im in images]
    expected = (torch.from_numpy(np.stack(by_hand)).permute(0, 3, 1, 2)
                - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32
    assert torch.equal(x, expected)
