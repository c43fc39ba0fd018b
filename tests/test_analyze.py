"""timm_u1.analysis.analyzer: reports, plots, resume and bad input, on tiny models and image folders."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import timm_u1.analysis.analyzer as analyze_mod
from timm_u1.analysis.analyzer import analyze
from timm_u1.cli import main as cli_main
from timm_u1.analysis.stats import SombreroStatistics

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _tiny_model():
    torch.manual_seed(0)
    return timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()


@pytest.fixture(scope='module')
def model():
    return _tiny_model()


def _write_images(folder, modes=('RGB', 'L', 'RGBA'), per_class=4, classes=('cat', 'dog', 'owl')):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        sub = folder / name if name else folder
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            mode = modes[i % len(modes)]
            arr = rng.integers(0, 255, (40, 48, len(mode)), dtype=np.uint8)
            arr[..., 0] = np.clip(arr[..., 0].astype(int) + 60 * c, 0, 255)  # a class signal
            Image.fromarray(arr[..., 0] if mode == 'L' else arr, mode).save(sub / f'{name or "img"}_{i}.png')
    return folder


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return _write_images(tmp_path_factory.mktemp('labelled'))


def test_report_files_and_figures(model, folder, tmp_path):
    report = analyze(model, str(folder), batch_size=5, out=tmp_path, permutations=49, progress=False, controls='none')
    meta = report.meta
    assert meta['layer'] == 'bottleneck' and meta['input_size'] == [3, 96, 96]
    assert meta['map_shape'] == [256, 3, 3] and meta['images'] == 12 and meta['classes'] == 3
    assert meta['data'] == str(folder) and meta['weights'] == 'as given'

    saved = json.loads((tmp_path / 'report.json').read_text())
    assert saved['meta'] == json.loads(json.dumps(meta))
    figures = saved['figures']
    assert [g['class'] for g in figures['hue']['classes']] == ['cat', 'dog', 'owl']
    assert sum(g['images'] for g in figures['hue']['classes']) == 12
    assert set(figures['permutation_test']) == {'hue', 'centroid_angle'}

    md = (tmp_path / 'report.md').read_text()
    for name in ('energy_map', 'sombrero', 'radial_profile', 'hue_density', 'hue_polar', 'centroid_polar'):
        png = tmp_path / f'{name}.png'
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f'({name}.png)' in md
    assert '| centre concentration' in md and '| owl | 4 |' in md
    # nothing but the report is left behind (the resume checkpoint is removed)
    assert not list(tmp_path.glob('*.safetensors')) and not list(tmp_path.glob('.*.tmp'))


def test_other_layer_and_unlabelled_data(model, tmp_path):
    flat = _write_images(tmp_path / 'flat', classes=('',), per_class=5)
    report = analyze(model, str(flat), layer='blocks.2', out=tmp_path / 'out', progress=False, controls='none')
    assert report.meta['layer'] == 'blocks.2' and report.meta['map_shape'] == [32, 12, 12]
    assert report.meta['classes'] == 0
    assert 'class_statistics' in report.figures['skipped']
    assert 'classes' not in report.figures['hue'] and 'permutation_test' not in report.figures
    assert (tmp_path / 'out' / 'hue_polar.png').is_file()  # the 'all images' panel


def test_bad_layer_fails_before_reading_data(model):
    with pytest.raises(ValueError, match=r"no layer 'blocks.9'.*bottleneck, blocks.0"):
        analyze(model, '/no/such/folder', layer='blocks.9')


def test_unreadable_image_is_skipped_and_named(model, tmp_path):
    bad = _write_images(tmp_path / 'bad', per_class=2)
    (bad / 'dog' / 'broken.png').write_bytes(b'not a png at all')
    report = analyze(model, str(bad), batch_size=4, out=tmp_path / 'out', progress=False, permutations=0, plots=False, controls='none')
    assert report.meta['images'] == 6  # the six readable ones
    [message] = report.meta['unreadable']
    assert 'broken.png' in message
    assert 'broken.png' in (tmp_path / 'out' / 'report.md').read_text()


def test_interrupted_run_resumes_to_the_same_result(model, folder, tmp_path, monkeypatch):
    clean = analyze(model, str(folder), batch_size=3, permutations=49, progress=False, controls='none')  # no out: no checkpoints

    monkeypatch.setattr(analyze_mod, 'CHECKPOINT_EVERY', 0.0)  # checkpoint after every batch
    original = SombreroStatistics.update
    calls = []

    def interrupted(self, fmap, labels=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, fmap, labels)

    monkeypatch.setattr(SombreroStatistics, 'update', interrupted)
    out = tmp_path / 'resumed'
    with pytest.raises(KeyboardInterrupt):
        analyze(model, str(folder), batch_size=3, out=out, permutations=49, progress=False, plots=False, controls='none')
    assert (out / analyze_mod._STATE_FILE).is_file() and not (out / 'report.json').exists()

    monkeypatch.setattr(SombreroStatistics, 'update', original)
    seen = []
    monkeypatch.setattr(
        SombreroStatistics, 'update', lambda self, f, y=None: (seen.append(len(f)), original(self, f, y)))
    resumed = analyze(model, str(folder), batch_size=3, out=out, permutations=49, progress=False, plots=False, controls='none')
    assert sum(seen) == 6  # two batches were restored from the checkpoint, not recomputed
    assert resumed.figures == clean.figures
    assert not (out / analyze_mod._STATE_FILE).exists()


def test_cli_on_digits(tmp_path, capsys):
    code = cli_main([
        'analyze', '--model', 'test_efficientnet', '--data', 'digits', '--limit', '6', '--controls', 'none',
        '--batch-size', '3', '--permutations', '19', '--layer', '2', '--output', str(tmp_path)])
    assert code == 0
    digits = json.loads((tmp_path / 'digits' / 'report.json').read_text())
    assert digits['meta']['split'] == 'test' and digits['meta']['images'] == 6
    assert digits['meta']['weights'] == 'random init' and digits['meta']['layer'] == 'blocks.2'
    assert len(digits['figures']['hue']['classes']) == 10
    assert 'digits/report.md' in capsys.readouterr().out


def test_nan_activations_are_named(folder):
    broken = _tiny_model()
    with torch.no_grad():
        broken.conv_stem.weight[0, 0, 0, 0] = float('nan')
    with pytest.raises(ValueError, match=r"layer 'bottleneck', images 0\.\.5 .*NaN"):
        analyze(broken, str(folder), batch_size=6, progress=False, permutations=0, controls='none')
