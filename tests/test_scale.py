"""Mergeable statistics and memories, and analysis / memory building sharded over processes (issue 15)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import timm_u1
from timm_u1.analysis.decoding import AngleClassAccumulator
from timm_u1.analysis.sombrero import SombreroStatistics
from timm_u1.runs import RunFolder

# merged parts sum float64 in another order than the whole stream: relative differences ~1e-12
RTOL = 1e-9


def assert_close(a, b, path='', rtol=RTOL):
    """Recursive equality of JSON-like results, floats to ``rtol`` (NaN equals NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f'{path}: keys {set(a) ^ set(b)}'
        for k in a:
            assert_close(a[k], b[k], f'{path}.{k}', rtol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f'{path}: lengths {len(a)} vs {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f'{path}[{i}]', rtol)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            assert a is b, f'{path}: {a} vs {b}'
        elif math.isnan(a):
            assert math.isnan(b), f'{path}: nan vs {b}'
        else:
            assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12), f'{path}: {a} vs {b}'
    else:
        assert a == b, f'{path}: {a!r} vs {b!r}'


def _stream(seed, batches=9, classes=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        b = int(torch.randint(2, 7, (1,), generator=g))
        fmap = torch.randn(b, 4, 5, 5, generator=g).relu() + torch.rand(b, 4, 1, 1, generator=g)
        labels = torch.randint(-1, classes, (b,), generator=g)  # -1: some unlabelled images
        out.append((fmap, labels))
    return out


def _random_split(n, g):
    """Cut points of a random split of n batches into 1..4 contiguous parts (some may be empty)."""
    parts = int(torch.randint(1, 5, (1,), generator=g))
    cuts = sorted(torch.randint(0, n + 1, (parts - 1,), generator=g).tolist())
    return [0, *cuts, n]


@pytest.mark.parametrize('seed', range(6))
def test_any_split_of_a_stream_merges_to_the_whole(seed):
    stream = _stream(seed)
    kwargs = dict(num_classes=3, permutations=20, seed=seed, angle_bins=12, density_bins=16)
    whole = SombreroStatistics(**kwargs)
    for fmap, labels in stream:
        whole.update(fmap, labels)
    cuts = _random_split(len(stream), torch.Generator().manual_seed(100 + seed))
    parts = []
    for start, stop in zip(cuts, cuts[1:]):
        part = SombreroStatistics(density_extent=whole.extent, **kwargs)  # the first batch's extent
        for i in range(start, stop):
            part.update(*stream[i], batch_index=i)
        parts.append(part)
    merged = SombreroStatistics(**kwargs).merge(parts[::-1])  # the order of merging does not matter either
    assert merged.images == whole.images
    assert_close(merged.result(), whole.result())
    assert merged.result()['permutation_test']['hue']['permutations'] == 20


def test_a_shuffled_split_without_batch_index_differs_in_its_permutations():
    """The test above can fail: parts that do not say where they start draw other permutations."""
    stream = _stream(0)
    kwargs = dict(num_classes=3, permutations=20, seed=0, angle_bins=12, density_bins=16)
    whole = SombreroStatistics(**kwargs)
    for fmap, labels in stream:
        whole.update(fmap, labels)
    a, b = (SombreroStatistics(density_extent=whole.extent, **kwargs) for _ in range(2))
    for fmap, labels in stream[:4]:
        a.update(fmap, labels)
    for fmap, labels in stream[4:]:
        b.update(fmap, labels)  # starts again at batch 0
    merged = a.merge(b).result()['permutation_test']['hue']
    assert merged['null_mean'] != pytest.approx(whole.result()['permutation_test']['hue']['null_mean'], rel=1e-9)


def test_state_dict_round_trip_keeps_the_stream_position():
    stream = _stream(1)
    kwargs = dict(num_classes=3, permutations=10, seed=3)
    whole, first = SombreroStatistics(**kwargs), SombreroStatistics(**kwargs)
    for fmap, labels in stream:
        whole.update(fmap, labels)
    for fmap, labels in stream[:5]:
        first.update(fmap, labels)
    resumed = SombreroStatistics(**kwargs)
    resumed.load_state_dict(first.state_dict())
    for fmap, labels in stream[5:]:
        resumed.update(fmap, labels)
    assert_close(resumed.result(), whole.result(), rtol=0)


@pytest.mark.parametrize('change, named', [
    (dict(permutations=7), 'permutations'), (dict(seed=1), 'seed'), (dict(num_classes=4), 'num_classes'),
    (dict(angle_bins=8), 'angle_bins'), (dict(density_extent=9.0), 'extent')])
def test_merge_refuses_other_settings_naming_them(change, named):
    stream = _stream(2)
    base = dict(num_classes=3, permutations=5, seed=0, density_extent=3.0)
    a, b = SombreroStatistics(**base), SombreroStatistics(**{**base, **change})
    a.update(*stream[0])
    b.update(*stream[1])
    with pytest.raises(ValueError, match=named):
        a.merge(b)


def test_merge_refuses_another_map_shape():
    a, b = SombreroStatistics(), SombreroStatistics()
    a.update(torch.rand(2, 4, 5, 5))
    b.update(torch.rand(2, 4, 3, 3))
    with pytest.raises(ValueError, match='map_shape'):
        a.merge(b)


@pytest.mark.parametrize('seed', range(4))
def test_angle_class_accumulator_split_merges_to_the_whole(seed):
    g = torch.Generator().manual_seed(seed)
    stream = [(torch.randn(int(n), 3, 2, generator=g), torch.randint(-1, 4, (int(n),), generator=g))
              for n in torch.randint(1, 8, (8,), generator=g)]
    kwargs = dict(num_classes=4, groups=3, folds=3, bins=6, permutations=15, seed=seed)
    whole = AngleClassAccumulator(**kwargs)
    for unit, labels in stream:
        whole.update(unit, labels)
    cuts = _random_split(len(stream), g)
    parts = []
    for start, stop in zip(cuts, cuts[1:]):
        part = AngleClassAccumulator(**kwargs)
        part.seen = sum(int((labels >= 0).sum()) for _, labels in stream[:start])  # folds: place in the stream
        for i in range(start, stop):
            part.update(*stream[i], batch_index=i)
        parts.append(part)
    merged = AngleClassAccumulator(**kwargs).merge(parts)
    assert_close(merged.result(), whole.result())
    with pytest.raises(ValueError, match='folds'):
        merged.merge(AngleClassAccumulator(**{**kwargs, 'folds': 4}))


# --- memories -------------------------------------------------------------------------------------

def _memory(**kw):
    from timm_u1.memory import AnglePrototypeMemory

    return AnglePrototypeMemory(['a', 'b', 'c'], **{'mode': 'instance', 'num_bins': 4, 'fingerprint': 'sha256:x', **kw})


def test_memories_of_consecutive_shards_merge_into_the_whole():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(int(n), 6, 3, 3, generator=g), torch.randint(0, 3, (int(n),), generator=g))
               for n in torch.randint(1, 6, (7,), generator=g)]
    whole = _memory()
    for features, labels in batches:
        whole.add_features(features, labels)
    for cuts in ([0, 3, 7], [0, 0, 2, 5, 7], [0, 7, 7]):
        parts = []
        for start, stop in zip(cuts, cuts[1:]):
            part = _memory()
            for features, labels in batches[start:stop]:
                part.add_features(features, labels)
            parts.append(part)
        merged = _memory().merge(parts)
        mine, theirs = merged.state_dict(), whole.state_dict()
        assert sorted(mine) == sorted(theirs)
        for key in mine:  # exact sums in any grouping; the same vectors in the same (global) order
            assert torch.equal(mine[key], theirs[key]), key
        assert torch.equal(merged.prototypes(), whole.prototypes())
        queries = batches[0][0]
        for method in merged.methods:
            assert torch.equal(merged.predict_from_features(queries, method),
                               whole.predict_from_features(queries, method))


@pytest.mark.parametrize('change, named', [
    (dict(fingerprint='sha256:y'), 'fingerprint'), (dict(num_bins=2), 'num_bins'), (dict(mode='prototype'), 'mode'),
    (dict(dtype=torch.float16), 'dtype')])
def test_memories_of_other_backbones_or_settings_refuse_to_merge(change, named):
    a, b = _memory(), _memory(**change)
    a.add_features(torch.randn(2, 6, 3, 3), torch.tensor([0, 1]))
    b.add_features(torch.randn(2, 6, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=named):
        a.merge(b)
    c = _memory()
    c.add_features(torch.randn(2, 5, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match='geometry'):
        a.merge(c)


def test_batch_shards_are_whole_batches_covering_every_image():
    from timm_u1.runs.shard import batch_shard

    for total, batch, world in ((24, 8, 2), (25, 8, 3), (5, 8, 2), (100, 7, 4)):
        shards = [batch_shard(total, batch, r, world) for r in range(world)]
        assert [i for s in shards for i in s] == list(range(total))
        assert all(s.start % batch == 0 for s in shards if len(s))


# --- two processes under accelerate launch, against one -------------------------------------------

def _launch(args, tmp_path, processes=2):
    env = dict(os.environ, ACCELERATE_USE_CPU='1', PYTHONPATH=str(Path(timm_u1.__file__).parents[1]),
               OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', str(processes),
           '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'timm_u1.cli', *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope='module')
def saved_backbone(tmp_path_factory):
    """A saved random backbone: the one-process and two-process runs load the same weights."""
    import timm

    folder = tmp_path_factory.mktemp('backbone') / 'test_efficientnet'
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model('test_efficientnet', num_classes=10), folder, safe_serialization=True)
    return folder


def test_two_processes_analyze_like_one(saved_backbone, tmp_path):
    from timm_u1.cli import main

    common = ['analyze', '--model', str(saved_backbone), '--data', 'digits', '--limit', '28', '--batch-size', '8',
              '--controls', 'none', '--permutations', '30']
    stdout = _launch(common + ['--output', str(tmp_path / 'two')], tmp_path)
    assert stdout.count('digits: 28 images') == 1  # one process reports
    assert main(common + ['--output', str(tmp_path / 'one')]) == 0
    one = json.loads((tmp_path / 'one' / 'digits' / 'report.json').read_text())
    two = json.loads((tmp_path / 'two' / 'digits' / 'report.json').read_text())
    assert two['meta'].pop('processes') == 2
    assert_close(two, one)  # figures, per-class statistics and permutation p-values
    assert two['figures']['permutation_test']['hue']['batches_with_mixed_labels'] == 4
    assert not list((tmp_path / 'two' / 'digits').glob('statistics_state*'))
    with RunFolder(tmp_path / 'two' / 'digits'):  # the lock was released
        pass


def test_two_processes_build_the_memory_of_one(saved_backbone, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    from timm_u1.cli import main
    from timm_u1.memory import AnglePrototypeMemory

    root = tmp_path / 'images'
    g = torch.Generator().manual_seed(0)
    for c, name in enumerate(('red', 'green', 'blue')):
        (root / name).mkdir(parents=True)
        for i in range(10):
            pixels = torch.randint(0, 255, (24, 24, 3), generator=g).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f'{i}.png')
    common = ['memory', 'build', '--model', str(saved_backbone), '--data', str(root), '--img-size', '32',
              '--mode', 'instance', '--batch-size', '4']
    assert '(2 processes)' in _launch(common + ['--output', str(tmp_path / 'two')], tmp_path)
    assert main(common + ['--output', str(tmp_path / 'one')]) == 0
    one, two = (AnglePrototypeMemory.from_pretrained(tmp_path / name) for name in ('one', 'two'))
    assert two.num_images == one.num_images == 30
    a, b = (load_file(str(tmp_path / name / 'memory.safetensors')) for name in ('two', 'one'))
    assert sorted(a) == sorted(b)
    for key in a:  # bitwise: the same batches, and prototype sums that do not depend on the order of addition
        assert torch.equal(a[key], b[key]), key
    assert sorted(p.name for p in (tmp_path / 'two').iterdir() if p.name != '.timm_u1.lock') == sorted(
        p.name for p in (tmp_path / 'one').iterdir() if p.name != '.timm_u1.lock')  # no shard left behind


def test_a_batch_of_unreadable_images_keeps_its_place_in_the_batch_count():
    """Shards number batches by position; a one-process run must too, even past a batch it could not read."""
    import timm

    from timm_u1.analysis.analyzer import collect_statistics

    model = timm.create_model('test_efficientnet', num_classes=3)
    g = torch.Generator().manual_seed(0)
    batch = lambda: (torch.randn(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 0]), [])
    batches = [batch(), (None, None, ['row 4: unreadable'] * 4), batch(), batch()]

    class Loader(list):
        dataset = range(16)  # what collect_statistics reads the length of

    loader = Loader(batches)
    whole = collect_statistics(model, loader, permutations=10, class_names=['a', 'b', 'c'], progress=False)
    assert whole.next_batch == 4
    tail = SombreroStatistics(num_classes=3, class_names=['a', 'b', 'c'], permutations=10,
                              density_extent=whole.extent)
    tail.next_batch = 2
    collect_statistics(model, Loader(batches[2:]), stats=tail, progress=False)
    head = collect_statistics(model, Loader(batches[:2]), permutations=10, class_names=['a', 'b', 'c'], progress=False)
    merged = head.merge(tail)
    assert_close(merged.result(), whole.result())
