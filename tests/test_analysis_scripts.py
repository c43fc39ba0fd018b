"""The analysis' scripts at their smallest settings, and the check that docs/analysis.md's tables are what the
analyses write (issue 24, item 6)."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import timm_u1
from timm_u1.analysis import controls as controls_mod
from timm_u1.analysis.analyzer import analyze
from timm_u1.analysis.controls import ControlLevel
from timm_u1.analysis.summary import TABLES

ROOT = Path(__file__).resolve().parents[1]
SMALL = ControlLevel(images=None, seeds=2, orders=8, calibration_images=8, permutations=19, informative_images=None)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name[:-3], ROOT / 'scripts' / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A runs/ folder as the page's commands leave it, at small settings: two analyses with controls (one by a
    model whose outputs are the digits' classes), one without, and scripts/follows_input.py's JSON."""
    runs = tmp_path_factory.mktemp('runs')
    saved = dict(controls_mod.CONTROL_LEVELS)
    controls_mod.CONTROL_LEVELS['fast'] = SMALL
    try:
        torch.manual_seed(0)
        for name, classes in (('analyze', 1000), ('analyze_trained', 10)):
            model = timm.create_model('test_efficientnet', num_classes=classes,
                                      pretrained_cfg_overlay=dict(input_size=(3, 64, 64))).eval()
            analyze(model, 'digits', limit=16, batch_size=8, permutations=19, out=runs / name / 'digits',
                    progress=False, plots=False)
        analyze(model, 'digits', limit=8, batch_size=8, permutations=9, out=runs / 'analyze_blocks' / 'digits',
                progress=False, plots=False, controls='none')
    finally:
        controls_mod.CONTROL_LEVELS.clear()
        controls_mod.CONTROL_LEVELS.update(saved)
    follows = {'follows_input': {'model': {'images': 14, 'follow_resultant_length': 0.5, 'mean_offset_deg': -3.0},
                                 'random_init': [{'images': 14, 'follow_resultant_length': 0.25, 'mean_offset_deg': 9.0}]}}
    (runs / 'follows_input.json').write_text(json.dumps(follows))
    return runs


BLOCKS = [('figures', 'runs/analyze/digits'), ('verdicts', 'runs/analyze/digits runs/analyze_trained/digits'),
          ('claim-a', 'runs/analyze/digits'), ('per-image', 'runs/analyze/digits'),
          ('logits', 'runs/analyze_trained/digits'), ('statistics', 'runs/analyze/digits runs/analyze_blocks/digits'),
          ('follows', 'runs/follows_input.json')]


def test_the_doc_check_finds_tables_that_differ_from_their_runs(runs, tmp_path, capsys):
    assert {kind for kind, _ in BLOCKS} == set(TABLES)
    check = _script('check_docs_analysis.py')
    doc = tmp_path / 'analysis.md'
    doc.write_text('# Analysis\n\nprose\n\n' + ''.join(
        f'<!-- table {kind} of {paths} -->\n<!-- end of table -->\n\ntext\n\n' for kind, paths in BLOCKS))
    assert check.main(['--runs', str(runs), '--doc', str(doc)]) == 1  # empty blocks, as before the runs
    assert check.main(['--runs', str(runs), '--doc', str(doc), '--write']) == 0
    page = doc.read_text()
    assert page.startswith('# Analysis\n\nprose\n\n') and page.count('\n\ntext\n\n') == len(BLOCKS)
    assert '| **digits** (16 images, 2 random networks): centre concentration' in page
    assert "alignment A of the logits' hue" in page and '| follows_input: random init 1 | 14 | 0.25 | 9 |' in page
    assert '| claim | question | analyze/digits | analyze_trained/digits |' in page  # two runs on one dataset
    capsys.readouterr()
    assert check.main(['--runs', str(runs), '--doc', str(doc)]) == 0
    assert f'{len(BLOCKS)} of {len(BLOCKS)} tables' in capsys.readouterr().out

    # one number of the page changed: named, and --write puts it back
    table = page.split('<!-- table logits of runs/analyze_trained/digits -->\n')[1].split('<!-- end of table -->')[0]
    number = re.search(r'\d\.\d+', table.split('\n')[3]).group()
    doc.write_text(page.replace(table, table.replace(number, '9.99', 1)))
    assert check.main(['--runs', str(runs), '--doc', str(doc)]) == 1
    assert "table logits of runs/analyze_trained/digits: the page's table differs" in capsys.readouterr().err
    assert check.main(['--runs', str(runs), '--doc', str(doc), '--write']) == 0
    assert doc.read_text() == page

    # a run the page names but that is not there
    doc.write_text(page.replace('runs/analyze_blocks/digits', 'runs/analyze_blocks/photos'))
    assert check.main(['--runs', str(runs), '--doc', str(doc)]) == 1
    assert 'analyze_blocks/photos/report.json (run the command the page names)' in capsys.readouterr().err


def test_the_page_embeds_only_tables_the_check_can_make():
    check = _script('check_docs_analysis.py')
    blocks = check.embedded_tables((ROOT / 'docs' / 'analysis.md').read_text(encoding='utf-8'))
    assert len(blocks) >= 6 and {b['kind'] for b in blocks} <= set(TABLES)
    for block in blocks:  # every block names runs a command of the page writes
        for path in block['paths'].split():
            assert path.startswith('runs/') and f'--output {path.rsplit("/", 1)[0]}' in (
                ROOT / 'docs' / 'analysis.md').read_text() or path.endswith('.json'), path


def test_the_pages_trained_model_commands_at_their_smallest_settings(tmp_path, monkeypatch, capsys):
    """docs/analysis.md trains a digits classifier with `timm-u1 train` and analyses its export with `timm-u1
    analyze --model runs/digits/export`: the export's outputs are the digits' classes, so the logits' hue is
    analysed and the page's logits table can be made from the report."""
    from timm_u1.analysis.summary import summary_table
    from timm_u1.cli import main as cli_main

    monkeypatch.setitem(controls_mod.CONTROL_LEVELS, 'fast', SMALL)
    assert cli_main(['train', '--data', 'digits', '--model', 'test_resnet', '--img-size', '16', '--batch-size', '128',
                     '--epochs', '1', '--no-progress', '--output', str(tmp_path / 'digits')]) == 0
    assert cli_main(['analyze', '--model', str(tmp_path / 'digits' / 'export'), '--data', 'digits', '--limit', '24',
                     '--batch-size', '8', '--permutations', '19', '-q',
                     '--output', str(tmp_path / 'analyze_trained')]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / 'analyze_trained' / 'digits' / 'report.json').read_text())
    logits = report['controls']['sources']['model']['logits']
    assert logits['images'] == 24 and -1 <= logits['alignment'] <= 1 and 0 < logits['alignment_p_value'] <= 1
    assert report['verdicts']['logit_hue_class']['verdict'] is not None
    table = summary_table('logits', [('digits', report)])
    assert "| images (classes) | 24 (10) |" in table and 'not evaluated' not in table


def test_follows_input_script(tmp_path, capsys):
    follows = _script('follows_input.py')
    out = tmp_path / 'follows.json'
    assert follows.main(['--model', 'test_efficientnet', '--images', '2', '--seeds', '1', '--output', str(out)]) == 0
    saved = json.loads(out.read_text())
    section = saved['follows_input']
    assert len(section['random_init']) == 1 and section['model']['images'] <= 2 * 7
    assert saved['settings']['images'] == 2
    assert json.loads(capsys.readouterr().out) == section
    with pytest.raises(SystemExit):
        follows.main(['--images', '0'])


def test_bench_probe_script(capsys):
    bench = _script('bench_probe.py')
    assert bench.main(['--model', 'test_efficientnet', '--images', '2', '--batch-size', '2', '--rounds', '1',
                       '--permutations', '9']) == 0
    out = capsys.readouterr().out
    assert re.search(r'ratio statistics / forward_features = \d+\.\d+', out)


def test_bench_analyze_script_against_a_baseline_tree():
    env = dict(os.environ, PYTHONPATH=str(Path(timm_u1.__file__).parents[1]))
    done = subprocess.run(
        [sys.executable, str(ROOT / 'scripts' / 'bench_analyze.py'), '--model', 'test_efficientnet', '--images', '3',
         '--batch-size', '3', '--controls', 'none', '--baseline-tree', str(ROOT), '--clock', 'cpu'],
        env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r'^  (.+?)\s+[\d.]+ s  ratio ([\d.]+)$', done.stdout, re.M))
    assert set(rows) == {'plain forward_features', 'analyze --controls none', 'analyze --controls none (baseline tree)'}
    assert float(rows['plain forward_features']) == 1.0
