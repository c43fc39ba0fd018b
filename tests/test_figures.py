"""A figure never costs a run its results: text reaches matplotlib literally (a class folder named ``$x^$``
is a name, not a formula), results are written before figures, and a figure that cannot be drawn is a
warning (matplotlib missing included), not a lost run."""
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from timm_u1 import figures
from timm_u1.cli import main as cli_main

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'
# mathtext that matplotlib refuses: an unknown command, a superscript of nothing
CLASSES = ('$\\foo$', '$x^$', 'plain')


def _write_split_folder(root: Path, per_class: int = 4) -> Path:
    """ROOT/train/CLASS and ROOT/test/CLASS, small images of a colour per class."""
    rng = np.random.default_rng(0)
    for split in ('train', 'test'):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 60, (24, 24, 3), dtype=np.uint8)
                arr[..., c] += 180
                Image.fromarray(arr).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module', params=['$\\foo$', '$x^$'])
def data(request, tmp_path_factory) -> Path:
    """A dataset folder with a mathtext name, holding class folders with mathtext names."""
    return _write_split_folder(tmp_path_factory.mktemp('data') / request.param)


@pytest.fixture
def no_matplotlib(monkeypatch):
    """Imports of matplotlib fail, as where it is not installed."""
    for name in ('matplotlib', 'matplotlib.figure'):
        monkeypatch.setitem(sys.modules, name, None)


def test_class_folders_with_backslashes_keep_their_labels(data):
    from timm_u1.data import class_names, load_image_dataset

    assert class_names(load_image_dataset(str(data), 'train')) == sorted(CLASSES)


def test_analysis_of_mathtext_names_finishes_with_its_report_and_figures(data, tmp_path):
    from timm_u1.analysis.analyzer import analyze

    torch.manual_seed(0)
    model = timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()
    report = analyze(model, str(data), split='train', batch_size=6, out=tmp_path, permutations=9, progress=False,
                     controls='none')
    saved = json.loads((tmp_path / 'report.json').read_text())
    assert [g['class'] for g in saved['figures']['hue']['classes']] == sorted(CLASSES)
    md = (tmp_path / 'report.md').read_text()
    for name in ('energy_map', 'hue_polar', 'centroid_polar'):  # drawn, with the names as plain text
        assert (tmp_path / f'{name}.png').read_bytes()[:8] == PNG_MAGIC
        assert f'({name}.png)' in md
    assert report.paths['report.md'] == tmp_path / 'report.md'


def test_analysis_without_matplotlib_writes_its_report_and_warns(data, tmp_path, no_matplotlib, caplog):
    from timm_u1.analysis.analyzer import analyze

    torch.manual_seed(0)
    model = timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 96, 96))).eval()
    with caplog.at_level(logging.WARNING):
        analyze(model, str(data), split='train', batch_size=6, out=tmp_path, permutations=0, progress=False,
                controls='none')
    assert json.loads((tmp_path / 'report.json').read_text())['meta']['images'] == 12
    md = (tmp_path / 'report.md').read_text()
    assert '.png)' not in md  # no link to a figure that was not drawn
    assert not list(tmp_path.glob('*.png'))
    assert 'matplotlib' in caplog.text


@pytest.fixture(scope='module')
def backbone_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp('backbone')
    timm.models.save_for_hf(timm.create_model('test_resnet', num_classes=3).eval(), folder, safe_serialization=True)
    return folder


def test_memory_eval_of_mathtext_classes_prints_its_table_and_draws_the_plot(data, backbone_dir, tmp_path, capsys):
    memory = tmp_path / 'memory'
    assert cli_main(['memory', 'build', '--model', str(backbone_dir), '--data', str(data), '--img-size', '32',
                     '--batch-size', '6', '--output', str(memory)]) == 0
    plot = tmp_path / 'per_class.png'
    assert cli_main(['memory', 'eval', '--memory', str(memory), '--data', str(data), '--batch-size', '6',
                     '--record', '--plot', str(plot)]) == 0
    out = capsys.readouterr().out
    assert '| prototype' in out
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert 'test_accuracy_prototype' in json.loads((memory / 'memory.json').read_text())['metrics']


def test_memory_eval_without_matplotlib_prints_and_records_its_results(
        data, backbone_dir, tmp_path, capsys, no_matplotlib):
    memory = tmp_path / 'memory'
    cli_main(['memory', 'build', '--model', str(backbone_dir), '--data', str(data), '--img-size', '32',
              '--output', str(memory)])
    plot = tmp_path / 'per_class.png'
    assert cli_main(['memory', 'eval', '--memory', str(memory), '--data', str(data), '--record',
                     '--plot', str(plot)]) == 0
    assert '| prototype' in capsys.readouterr().out
    assert 'test_accuracy_prototype' in json.loads((memory / 'memory.json').read_text())['metrics']
    assert not plot.exists()


TRAIN = ['--model', 'test_resnet', '--img-size', '32', '--batch-size', '6', '--epochs', '1', '--no-progress']


def test_training_on_mathtext_classes_exports(data, tmp_path):
    assert cli_main(['train', '--data', str(data), '--output', str(tmp_path), *TRAIN]) == 0
    config = json.loads((tmp_path / 'export' / 'config.json').read_text())
    assert config['label_names'] == sorted(CLASSES)
    assert (tmp_path / 'export' / 'learning_curves.png').read_bytes()[:8] == PNG_MAGIC


def test_training_without_matplotlib_still_exports(data, tmp_path, no_matplotlib, caplog):
    with caplog.at_level(logging.WARNING):
        assert cli_main(['train', '--data', str(data), '--output', str(tmp_path), *TRAIN]) == 0
    assert (tmp_path / 'export' / 'model.safetensors').is_file()
    assert json.loads((tmp_path / 'export' / 'config.json').read_text())['label_names'] == sorted(CLASSES)
    assert not (tmp_path / 'export' / 'learning_curves.png').exists()
    assert 'learning_curves.png' in caplog.text


def test_a_figure_that_fails_is_a_warning_and_leaves_no_file(tmp_path, caplog):
    @figures.optional_figure
    def broken(path):
        fig = figures.new_figure()
        fig.add_subplot().plot([0, 1], [float('nan'), 1.0])
        raise RuntimeError('the drawing broke')

    with caplog.at_level(logging.WARNING, logger='timm_u1.figures'):
        assert broken(tmp_path / 'broken.png') is None
    assert 'the drawing broke' in caplog.text and 'broken' in caplog.text
    assert not list(tmp_path.iterdir())


def test_text_is_drawn_literally(tmp_path):
    @figures.optional_figure
    def titled(title, path):
        fig = figures.new_figure()
        ax = fig.add_subplot()
        ax.set_title(title)
        ax.set_xticks([0, 1], list(CLASSES[:2]))
        fig.tight_layout()
        return figures.save_png(fig, path)

    for i, title in enumerate(CLASSES + ('$\\frac{1}{$',)):
        path = titled(title, tmp_path / f'{i}.png')
        assert path is not None and path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib

    assert matplotlib.rcParams['text.parse_math'] is True  # the user's settings are left alone


def test_every_plot_function_is_an_optional_figure():
    import importlib
    import inspect

    found = []
    for module_name in ('analysis', 'memory', 'training', 'studies', 'early'):
        module = importlib.import_module(f'timm_u1.{module_name}.plots')
        for name in module.__all__:
            function = getattr(module, name)
            if inspect.isfunction(function) and name.startswith('plot_') and name != 'plot_report':
                found.append(name)
                assert getattr(function, 'optional_figure', False), f'{module_name}.plots.{name}'
    assert len(found) >= 8
