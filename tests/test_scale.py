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
from timm_u1.stats import AngleClassAccumulator, SombreroStatistics

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
    a, b = SombreroStatistics(density_extent=whole.extent, **kwargs), SombreroStatistics(density_extent=whole.extent, **kwargs)
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
