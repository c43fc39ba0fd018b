"""Angle-prototype memory, its baselines, exact search and files (timm_u1.memory, timm_u1.core.knn)."""
import math

import pytest
import torch
import torch.nn.functional as F

import timm

from timm_u1.core.knn import ExactIndex, faiss_available, topk_inner_product
from timm_u1.runs.identity import backbone_fingerprint
from timm_u1.memory import MEMORY_CONFIG, MEMORY_WEIGHTS, AnglePrototypeMemory, angle_bins


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_maps(n: int, d: int = 6, h: int = 3, w: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, d, h, w, generator=gen(seed))


# ----------------------------------------------------------------------------- exact search

@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_blocked_topk_agrees_with_brute_force(dtype):
    keys = torch.randn(1000, 16, generator=gen(1)).to(dtype)
    queries = torch.randn(37, 16, generator=gen(2))
    # a tiny block bound forces many query and key blocks and merges
    scores, idx = topk_inner_product(queries, keys, k=7, max_block_elements=500)
    ref_scores, ref_idx = (queries @ keys.float().T).topk(7, dim=1)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(scores, ref_scores)


def test_topk_with_k_above_the_number_of_keys_returns_all_sorted():
    keys = torch.randn(5, 4, generator=gen(3))
    queries = torch.randn(2, 4, generator=gen(4))
    scores, idx = topk_inner_product(queries, keys, k=10)
    assert idx.shape == (2, 5)
    assert torch.equal(idx.sort(dim=1).values, torch.arange(5).expand(2, 5))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_search_errors():
    with pytest.raises(ValueError, match='empty'):
        ExactIndex(4).search(torch.randn(1, 4), 1)
    with pytest.raises(ValueError, match='same D'):
        topk_inner_product(torch.randn(2, 4), torch.randn(3, 5), 1)


@pytest.mark.skipif(not faiss_available(), reason='faiss-cpu is not installed')
def test_faiss_index_gives_the_same_neighbours_as_torch():
    vectors = F.normalize(torch.randn(3000, 32, generator=gen(5)), dim=1)
    queries = F.normalize(torch.randn(50, 32, generator=gen(6)), dim=1)
    exact, with_faiss = ExactIndex(32, faiss_threshold=None), ExactIndex(32, faiss_threshold=1000)
    for index in (exact, with_faiss):
        index.add(vectors[:2000])
        index.add(vectors[2000:])  # growing after the first search must be seen too
    assert with_faiss.uses_faiss and not exact.uses_faiss
    s1, i1 = exact.search(queries, 5)
    s2, i2 = with_faiss.search(queries, 5)
    assert torch.equal(i1, i2)
    torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- angle bins

def test_angle_bins_of_a_3x3_grid_give_one_cell_per_sector():
    bins = angle_bins(3, 3, 8).view(3, 3)
    assert bins[1, 1] == 0  # centre
    assert bins[1, 2] == 1  # +x axis: sector 1 is centred on phi = 0
    assert bins[2, 2] == 2  # phi = +45 degrees (y grows downwards)
    assert sorted(bins.flatten().tolist()) == list(range(9))
    assert torch.equal(angle_bins(3, 3, 0), torch.zeros(9, dtype=torch.long))


# ------------------------------------------------------------------ prototypes and voting

def test_prototypes_are_normalised_class_means_of_unit_vectors():
    maps = random_maps(6)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    memory = AnglePrototypeMemory(['a', 'b', 'c'], num_bins=8)
    memory.add_features(maps, labels)
    bins = angle_bins(3, 3, 8)
    unit = F.normalize(maps.flatten(2).transpose(1, 2), dim=-1)  # (B, 9, D)
    protos = memory.prototypes()
    for c in range(3):
        for b in range(9):
            group = unit[labels == c][:, bins == b].reshape(-1, 6)
            torch.testing.assert_close(protos[c, b], F.normalize(group.mean(0), dim=0))
            assert memory.counts[c, b] == group.shape[0]


def row(*vectors) -> torch.Tensor:
    """A (1, D, 1, L) feature map whose L locations hold the given D-vectors."""
    return torch.stack([torch.as_tensor(v, dtype=torch.float32) for v in vectors], dim=1)[None, :, None, :]


def test_votes_are_energy_weighted():
    # a 1x3 grid, no angle bins: two weak locations look like 'a', one strong location like 'b'
    memory = AnglePrototypeMemory(['a', 'b'], num_bins=0)
    ea, eb = [1., 0, 0], [0., 1, 0]
    memory.add_features(torch.cat([row(ea, ea, ea), row(eb, eb, eb)]), [0, 1])
    query = row(ea, ea, [0., 3, 0])  # energies 1, 1, 9
    assert memory.predict_from_features(query).tolist() == [1]
    torch.testing.assert_close(memory.predict_proba_from_features(query), torch.tensor([[2 / 11, 9 / 11]]))
    assert memory.predict_from_features(row(ea, ea, eb)).tolist() == [0]  # equal energies: majority


def test_votes_use_the_prototype_of_the_location_s_angle_bin():
    # class 'a' looks like channel 0 on the left and channel 1 on the right; 'b' the reverse
    memory = AnglePrototypeMemory(['a', 'b'], num_bins=2)
    e0, e1 = [1., 0, 0], [0., 1, 0]
    memory.add_features(torch.cat([row(e0, e1), row(e1, e0)]), [0, 1])
    assert memory.predict_from_features(row(e0, e1)).tolist() == [0]
    assert memory.predict_from_features(row(e1, e0)).tolist() == [1]
    # without angle bins both classes have the same prototype: the angle carries the information
    plain = AnglePrototypeMemory(['a', 'b'], num_bins=0)
    plain.add_features(torch.cat([row(e0, e1), row(e1, e0)]), [0, 1])
    torch.testing.assert_close(plain.prototypes()[0], plain.prototypes()[1])


def test_bins_without_locations_stay_empty_and_are_never_queried():
    memory = AnglePrototypeMemory(['a', 'b'], num_bins=8)  # 2x2 grid: no centre, 4 of 8 sectors used
    memory.add_features(random_maps(4, h=2, w=2), [0, 1, 0, 1])
    used = angle_bins(2, 2, 8).unique()
    counts = memory.counts
    assert counts[:, used].eq(2).all() and counts.sum() == 16
    assert memory.predict_from_features(random_maps(3, h=2, w=2, seed=1)).ge(0).all()


def test_class_without_examples_is_never_predicted_and_no_evidence_gives_minus_one():
    memory = AnglePrototypeMemory(['a', 'b', 'never'], mode='instance')
    memory.add_features(random_maps(4), [0, 1, 0, 1])
    queries = random_maps(8, seed=1)
    for method in memory.methods:
        assert memory.scores_from_features(queries, method)[:, 2].eq(-math.inf).all()
        assert memory.predict_proba_from_features(queries, method)[:, 2].eq(0).all()
        assert memory.predict_from_features(queries, method).lt(2).all()
    blank = torch.zeros(1, 6, 3, 3)
    assert memory.predict_from_features(blank, 'prototype').tolist() == [-1]
    torch.testing.assert_close(memory.predict_proba_from_features(blank, 'prototype'), torch.tensor([[.5, .5, 0.]]))


def test_instance_mode_is_exact_knn_voting():
    maps, labels = random_maps(20, seed=2), torch.arange(20) % 4
    memory = AnglePrototypeMemory(list('wxyz'), mode='instance', k=3)
    memory.add_features(maps, labels)
    queries = random_maps(5, seed=3)
    # brute force: every query location's 3 most similar stored locations vote with its energy
    keys = F.normalize(maps.flatten(2).transpose(1, 2), dim=-1).reshape(-1, 6)
    key_labels = labels.repeat_interleave(9)
    q = queries.flatten(2).transpose(1, 2)
    expected = torch.zeros(5, 4, dtype=torch.float64)
    for i in range(5):
        sims = F.normalize(q[i], dim=-1) @ keys.T
        nearest = sims.topk(3, dim=1).indices
        for loc in range(9):
            for j in nearest[loc]:
                expected[i, key_labels[j]] += q[i, loc].square().sum().item() / 3
    torch.testing.assert_close(memory.scores_from_features(queries, 'instance'), expected)


def test_baselines_match_their_definitions():
    maps, labels = random_maps(12, seed=4), torch.arange(12) % 3
    memory = AnglePrototypeMemory(list('abc'), k=1)
    memory.add_features(maps, labels)
    queries = random_maps(6, seed=5)
    pooled, q = maps.mean(dim=(2, 3)), queries.mean(dim=(2, 3))
    mean = pooled.mean(0)
    unit = F.normalize(pooled - mean, dim=1)
    centroids = torch.stack([unit[labels == c].mean(0) for c in range(3)])
    cl2n = torch.cdist(F.normalize(q - mean, dim=1), centroids).argmin(1)
    assert torch.equal(memory.predict_from_features(queries, 'cl2n'), cl2n)
    nn1 = (F.normalize(q, dim=1) @ F.normalize(pooled, dim=1).T).argmax(1)
    assert torch.equal(memory.predict_from_features(queries, 'pooled_knn'), labels[nn1])


def test_incremental_add_and_new_class_equal_a_rebuild():
    maps, labels = random_maps(15, seed=6), torch.tensor([0, 1, 2] * 5)
    rebuilt = AnglePrototypeMemory(list('abc'), mode='instance', k=2)
    rebuilt.add_features(maps, labels)
    grown = AnglePrototypeMemory(list('ab'), mode='instance', k=2)
    old = labels < 2
    grown.add_features(maps[old][:4], labels[old][:4])
    grown.add_features(maps[old][4:], labels[old][4:])
    assert grown.add_class('c') == 2
    grown.add_features(maps[~old], labels[~old])
    queries = random_maps(10, seed=7)
    torch.testing.assert_close(grown.prototypes(), rebuilt.prototypes())
    assert torch.equal(grown.counts, rebuilt.counts)
    for method in rebuilt.methods:
        # the same vectors in another order: the same scores up to float rounding, the same predictions
        torch.testing.assert_close(
            grown.scores_from_features(queries, method), rebuilt.scores_from_features(queries, method),
            rtol=1e-5, atol=1e-6)
        assert torch.equal(grown.predict_from_features(queries, method), rebuilt.predict_from_features(queries, method))


def test_bad_input_is_refused_with_the_fix():
    memory = AnglePrototypeMemory(list('abc'))
    with pytest.raises(ValueError, match='empty'):
        memory.predict_from_features(random_maps(1))
    memory.add_features(random_maps(3), [0, 1, 2])
    with pytest.raises(ValueError, match='add_class'):
        memory.add_features(random_maps(1), [3])
    with pytest.raises(ValueError, match='another size'):
        memory.predict_from_features(random_maps(1, h=4, w=4))
    with pytest.raises(ValueError, match='NaN or inf'):
        memory.predict_from_features(random_maps(1) / 0 - 1)
    with pytest.raises(ValueError, match="choose from"):
        memory.predict_from_features(random_maps(1), 'instance')  # a prototype memory keeps no vectors
    with pytest.raises(ValueError, match='already'):
        memory.add_class('a')


# ------------------------------------------------------------------------------- backbone

@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return timm.create_model('test_resnet', num_classes=3).eval()


def test_fingerprint_is_stable_ignores_the_head_and_sees_any_weight_change(backbone, tmp_path):
    fp = backbone_fingerprint(backbone)
    assert backbone_fingerprint(backbone) == fp
    clone = timm.create_model('test_resnet', num_classes=7)  # another head, same backbone weights
    clone.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith('fc.')}, strict=False)
    assert backbone_fingerprint(clone) == fp
    with torch.no_grad():
        next(clone.parameters()).view(-1)[-1] += 1e-3
    assert backbone_fingerprint(clone) != fp


def test_memory_over_a_model_checks_backbone_and_image_size(backbone):
    images, labels = torch.rand(6, 3, 64, 64, generator=gen(8)), torch.tensor([0, 1, 2, 0, 1, 2])
    memory = AnglePrototypeMemory.for_model(backbone, list('abc'), img_size=64, mode='instance')
    memory.add(backbone, images, labels)
    results = memory.evaluate(
        backbone, [(images[:3], labels[:3]), (images[3:], labels[3:])], per_class=True, progress=False)
    assert results['num_images'] == 6
    for method in memory.methods:
        # per-class accuracies average (equal class sizes) to the overall accuracy
        assert sum(results['per_class'][method]) / 3 == pytest.approx(results[method])
    assert results['instance'] == 1.0  # every query is in the memory: its own nearest neighbour
    with pytest.raises(ValueError, match='input size'):
        memory.predict(backbone, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match='not one of'):
        memory.evaluate(backbone, [(images, torch.tensor([0, 1, 2, 3, 0, 0]))], progress=False)
    other = timm.create_model('test_resnet', num_classes=3)  # fresh random weights
    with pytest.raises(ValueError, match='Backbone mismatch'):
        memory.predict(other, images)


def test_memory_at_a_named_layer_uses_that_layer_s_map(backbone):
    images, labels = torch.rand(3, 3, 64, 64, generator=gen(12)), torch.tensor([0, 1, 2])
    memory = AnglePrototypeMemory.for_model(backbone, list('abc'), img_size=64, layer='layer2')
    memory.add(backbone, images, labels)
    assert (memory.num_features, memory.grid_size) == (48, (8, 8))  # test_resnet's layer2 at 64 px
    assert memory.predict(backbone, images).tolist() == [0, 1, 2]


# ---------------------------------------------------------------------------------- files

def test_save_load_round_trip_gives_identical_predictions(tmp_path):
    memory = AnglePrototypeMemory(list('abcd'), mode='instance', k=3, dtype=torch.float16, fingerprint='sha256:x')
    memory.add_features(random_maps(16, seed=9), torch.arange(16) % 4)
    memory.save_pretrained(tmp_path / 'm')
    loaded = AnglePrototypeMemory.from_pretrained(tmp_path / 'm')
    queries = random_maps(8, seed=10)
    assert loaded.dtype == torch.float16 and loaded.class_names == memory.class_names
    for method in memory.methods:
        torch.testing.assert_close(
            loaded.predict_proba_from_features(queries, method), memory.predict_proba_from_features(queries, method))
        assert torch.equal(loaded.predict_from_features(queries, method), memory.predict_from_features(queries, method))
    # a memory pushed next to a model sits in memory/: found without naming the subfolder
    memory.save_pretrained(tmp_path / 'repo' / 'memory')
    assert AnglePrototypeMemory.from_pretrained(tmp_path / 'repo').num_images == 16


def test_corrupt_truncated_and_mismatched_files_fail_before_use(tmp_path):
    memory = AnglePrototypeMemory(list('ab'))
    memory.add_features(random_maps(4), [0, 1, 0, 1])
    folder = memory.save_pretrained(tmp_path / 'm')
    data = (folder / MEMORY_WEIGHTS).read_bytes()

    (folder / MEMORY_WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match='corrupt or truncated'):
        AnglePrototypeMemory.from_pretrained(folder)
    flipped = bytearray(data)
    flipped[-3] ^= 0xFF  # same size, one byte changed inside a tensor
    (folder / MEMORY_WEIGHTS).write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match='corrupt or truncated'):
        AnglePrototypeMemory.from_pretrained(folder)
    (folder / MEMORY_WEIGHTS).write_bytes(data)
    assert AnglePrototypeMemory.from_pretrained(folder).num_images == 4

    text = (folder / MEMORY_CONFIG).read_text()
    (folder / MEMORY_CONFIG).write_text(text[:40])
    with pytest.raises(ValueError, match='not valid JSON'):
        AnglePrototypeMemory.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match='holds no memory.json'):
        AnglePrototypeMemory.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------- commands

@pytest.fixture
def image_folder(tmp_path):
    """Three classes of small images that differ in colour, as an image folder."""
    from PIL import Image

    root = tmp_path / 'images'
    colours = {'red': (200, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 200)}
    g = gen(11)
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(4):
            noise = torch.randint(0, 40, (16, 16, 3), generator=g)
            pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f'{i}.png')
    return root


def test_cli_build_resumes_after_an_interruption_and_eval_prints_the_table(
        image_folder, backbone, tmp_path, monkeypatch, capsys, caplog):
    import logging

    from timm_u1.cli import main

    caplog.set_level(logging.INFO, logger='timm_u1')

    # a saved backbone, so that every command loads the same weights
    timm.models.save_for_hf(backbone, tmp_path / 'backbone', safe_serialization=True)
    args = ['memory', 'build', '--model', str(tmp_path / 'backbone'), '--data', str(image_folder), '--img-size', '32',
            '--mode', 'instance', '--batch-size', '4', '--save-every', '0']
    main(args + ['--output', str(tmp_path / 'whole')])

    calls = []
    add = AnglePrototypeMemory.add_features

    def crash_on_third_batch(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return add(self, *a, **kw)

    monkeypatch.setattr(AnglePrototypeMemory, 'add_features', crash_on_third_batch)
    assert main(args + ['--output', str(tmp_path / 'resumed')]) == 130  # interrupted
    assert 'run the same command again to resume' in capsys.readouterr().err
    with pytest.raises(ValueError, match='resume'):
        AnglePrototypeMemory.from_pretrained(tmp_path / 'resumed')
    monkeypatch.setattr(AnglePrototypeMemory, 'add_features', add)
    main(args + ['--output', str(tmp_path / 'resumed')])
    assert 'resuming the build' in caplog.text

    whole = AnglePrototypeMemory.from_pretrained(tmp_path / 'whole')
    resumed = AnglePrototypeMemory.from_pretrained(tmp_path / 'resumed')
    assert resumed.num_images == whole.num_images == 12
    torch.testing.assert_close(resumed.prototypes(), whole.prototypes())

    assert main(args + ['--output', str(tmp_path / 'whole')]) == 1
    assert '--overwrite' in capsys.readouterr().err
    assert main(['memory', 'eval', '--memory', str(tmp_path / 'whole'), '--data', str(image_folder),
                 '--split', 'train', '--plot', str(tmp_path / 'accuracy.png')]) == 0
    assert (tmp_path / 'accuracy.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    out = capsys.readouterr().out
    for method in ('prototype', 'instance', 'cl2n', 'pooled_knn'):
        assert f'| {method:<12} |' in out


@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")  # huggingface_hub's LFS upload
def test_push_to_hub_then_from_pretrained_by_repo_id_online_and_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from hub_server import HubServer  # tests/hub_server.py: an in-memory Hub API

    memory = AnglePrototypeMemory(list('abc'), mode='instance', fingerprint='sha256:x')
    memory.add_features(random_maps(6), [0, 1, 2, 0, 1, 2])
    queries = random_maps(4, seed=13)
    with HubServer(tokens=('hf_test',)) as hub:
        monkeypatch.setattr(constants, 'ENDPOINT', hub.endpoint)
        monkeypatch.setattr(
            constants, 'HUGGINGFACE_CO_URL_TEMPLATE', hub.endpoint + '/{repo_id}/resolve/{revision}/{filename}')
        monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hf-cache'))
        monkeypatch.setattr(constants, 'HF_HUB_DISABLE_XET', True)  # the test Hub speaks git-LFS, not Xet
        monkeypatch.setenv('HF_TOKEN', 'hf_test')
        memory.push_to_hub('tester/digits-memory')
        assert 'memory/memory.json' in hub.files('tester/digits-memory')
        online = AnglePrototypeMemory.from_pretrained('tester/digits-memory')  # finds memory/ by itself
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    offline = AnglePrototypeMemory.from_pretrained('tester/digits-memory', subfolder='memory')
    for loaded in (online, offline):
        assert torch.equal(loaded.scores_from_features(queries), memory.scores_from_features(queries))


def test_the_sign_test_behind_mcnemar_is_the_exact_binomial_tail():
    """binomial_two_sided_p (scipy.stats.binomtest) against the exact sum of binomial coefficients."""
    from fractions import Fraction

    from timm_u1.analysis.signtest import mcnemar_p, sign_test_p as binomial_two_sided_p

    for n in range(0, 41):
        for k in range(n + 1):
            tail = Fraction(sum(math.comb(n, i) for i in range(min(k, n - k) + 1)), 2 ** n)
            assert binomial_two_sided_p(k, n) == pytest.approx(float(min(1, 2 * tail)), rel=1e-12), (k, n)
    a = torch.tensor([True] * 7 + [False] * 3 + [True] * 5)
    b = torch.tensor([False] * 7 + [True] * 3 + [True] * 5)
    assert mcnemar_p(a, b) == pytest.approx(float(2 * Fraction(1 + 10 + 45 + 120, 1024)))
