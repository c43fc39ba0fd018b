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
from timm_u1.analysis.sombrero import SombreroStatistics

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


# --- issue 20: resumes that notice changed data, output folders that never collide, options checked when parsed

def _interrupt_after(monkeypatch, batches):
    """Make the statistics pass die in its ``batches + 1``-th batch, after a checkpoint per batch."""
    monkeypatch.setattr(analyze_mod, 'CHECKPOINT_EVERY', 0.0)
    original, calls = SombreroStatistics.update, []

    def dying(self, fmap, labels=None, batch_index=None):
        calls.append(1)
        if len(calls) == batches + 1:
            raise KeyboardInterrupt
        return original(self, fmap, labels, batch_index)

    monkeypatch.setattr(SombreroStatistics, 'update', dying)
    return lambda: monkeypatch.setattr(SombreroStatistics, 'update', original)


def test_a_rerun_over_images_replaced_in_place_is_refused_not_mixed(model, tmp_path, monkeypatch):
    import shutil

    from timm_u1.errors import ResumeMismatchError

    data = _write_images(tmp_path / 'data')
    restore = _interrupt_after(monkeypatch, 2)
    out = tmp_path / 'out'
    with pytest.raises(KeyboardInterrupt):
        analyze(model, str(data), batch_size=3, out=out, permutations=9, progress=False, plots=False, controls='none')
    restore()
    # the same names and labels, other pictures (written a second later: another modification time)
    other = _write_images(tmp_path / 'other', modes=('RGB', 'RGB', 'L'))
    for png in other.rglob('*.png'):
        shutil.copyfile(png, data / png.relative_to(other))
    with pytest.raises(ResumeMismatchError, match='data_fingerprint'):
        analyze(model, str(data), batch_size=3, out=out, permutations=9, progress=False, plots=False, controls='none')
    fresh = analyze(model, str(data), batch_size=3, out=out, permutations=9, progress=False, plots=False,
                    controls='none', overwrite=True)
    clean = analyze(model, str(data), batch_size=3, permutations=9, progress=False, controls='none')
    assert fresh.figures == clean.figures


def test_two_data_folders_of_one_name_are_refused_before_any_work(tmp_path, capsys):
    for parent in ('d1', 'd2'):
        _write_images(tmp_path / parent / 'data', per_class=1)
    code = cli_main(['analyze', '--model', 'test_efficientnet', '--data', str(tmp_path / 'd1' / 'data'),
                     str(tmp_path / 'd2' / 'data'), '--output', str(tmp_path / 'out'), '--controls', 'none'])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and 'timm-u1 analyze: error:' in err
    assert 'd1/data' in err and 'd2/data' in err and str(tmp_path / 'out' / 'data') in err
    assert not (tmp_path / 'out' / 'data').exists()


@pytest.mark.parametrize('inside', ['out_in_data', 'data_is_out'])
def test_an_output_inside_the_data_is_refused(model, tmp_path, inside):
    data = _write_images(tmp_path / 'data', per_class=1)
    out = data / 'reports' if inside == 'out_in_data' else data
    with pytest.raises(ValueError, match='inside the data folder'):
        analyze(model, str(data), out=out, progress=False, controls='none')
    assert not (data / 'reports').exists() and not (data / 'report.json').exists()


def test_the_cli_refuses_an_output_inside_the_data(tmp_path, capsys):
    data = _write_images(tmp_path / 'imgs', per_class=1)
    for out in (data / 'runs', tmp_path):  # the report folder of --output . is ./imgs: the data itself
        code = cli_main(['analyze', '--model', 'test_efficientnet', '--data', str(data), '--output', str(out),
                         '--controls', 'none'])
        err = capsys.readouterr().err
        assert code == 1 and 'inside the data folder' in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in data.iterdir()) == ['cat', 'dog', 'owl']


@pytest.mark.parametrize('option, value, words', [
    ('--seed', '-1', 'an integer in [0, 4294967295]'),
    ('--seed', '1e23', 'an integer in [0, 4294967295]'),
    ('--permutations', '1000000000', 'an integer in [0, 99999]'),
    ('--batch-size', '0', 'an integer in [1, 4096]'),
    ('--limit', 'nan', 'an integer >= 1'),
    ('--workers', '-1', 'an integer in [0, 64]'),
    ('--model', '', 'must not be empty'),
    ('--data', ' ', 'must not be empty'),
    ('--layer', '', 'must not be empty'),
    ('--split', '', 'must not be empty'),
    ('--device', 'gpu0', "not a torch device"),
    ('--output', '', 'must not be empty'),
])
def test_every_option_is_checked_when_parsed(option, value, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(['analyze', option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f'argument {option}' in err and words in err


# --- issue 25: the controls take the trained model's maps from the statistics pass ------------------

def _classes_model():
    torch.manual_seed(1)
    return timm.create_model('test_efficientnet', num_classes=3,
                             pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()


def _same(a, b, where='controls'):
    """Every number equal (to 1e-12 relative), every other value equal."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{where}[{i}]')
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15, nan_ok=True), where
    else:
        assert a == b, where


def test_the_controls_shared_with_the_statistics_pass_are_run_controls(folder, tmp_path, monkeypatch):
    import timm.data

    from timm_u1.analysis import controls as controls_mod
    from timm_u1.analysis.controls import ControlLevel, run_controls
    from timm_u1.data import load_image_dataset, make_loader

    level = ControlLevel(images=8, seeds=1, orders=6, calibration_images=5, permutations=19, informative_images=None)
    monkeypatch.setitem(controls_mod.CONTROL_LEVELS, 'fast', level)
    model = _classes_model()  # 3 outputs for the 3 classes: the logits' hue is analysed too
    shared = analyze(model, str(folder), batch_size=5, permutations=9, seed=2, progress=False, controls='fast')
    assert 'logits' in shared.controls['sources']['model']
    ordered = analyze_mod._ordered(load_image_dataset(str(folder)), None, 2)
    loader = make_loader(ordered.select(range(8)), model, batch_size=5)  # batches of 5 and 3, as analyze's controls
    cfg = timm.data.resolve_model_data_config(model)
    alone = run_controls(model, loader, None, ['cat', 'dog', 'owl'], 'fast', mean=cfg['mean'], std=cfg['std'], seed=2,
                         progress=False)
    _same(alone, shared.controls)

    # a resumed run computes the control maps again, to the same numbers
    restore = _interrupt_after(monkeypatch, 2)
    out = tmp_path / 'resumed'
    with pytest.raises(KeyboardInterrupt):
        analyze(model, str(folder), batch_size=5, permutations=9, seed=2, out=out, progress=False, plots=False,
                controls='fast')
    restore()
    resumed = analyze(model, str(folder), batch_size=5, permutations=9, seed=2, out=out, progress=False, plots=False,
                      controls='fast')
    _same(alone, resumed.controls)
    assert resumed.figures == shared.figures


def test_the_images_of_a_dataset_with_names_are_named_in_the_report(model, tmp_path, monkeypatch):
    import datasets

    from timm_u1.analysis import controls as controls_mod
    from timm_u1.analysis.controls import ControlLevel

    monkeypatch.setitem(controls_mod.CONTROL_LEVELS, 'fast', ControlLevel(
        images=None, seeds=1, orders=4, calibration_images=4, permutations=9))
    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)) for _ in range(5)]
    ds = datasets.Dataset.from_dict({'image': pictures, 'name': [f'photo{i}' for i in range(5)]},
                                    features=datasets.Features({'image': datasets.Image(), 'name': datasets.Value('string')}))
    analyze(model, ds, batch_size=2, out=tmp_path, progress=False, plots=False)
    per_image = json.loads((tmp_path / 'report.json').read_text())['controls']['concentration_model_vs_input']['per_image']
    assert sorted(per_image['names']) == [f'photo{i}' for i in range(5)] and len(per_image['model']) == 5
    assert '| photo' in (tmp_path / 'report.md').read_text()
