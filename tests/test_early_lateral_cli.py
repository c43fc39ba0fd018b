"""timm-u1 lateral, scripts/v1_study.py and scripts/bench_v1.py at their smallest settings; the command's
options checked when parsed, bad input in one line, the output checked before any model is built."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

pytest.importorskip('scipy')

import timm_u1  # noqa: E402
from command_line import run, one_line  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent.parent / 'scripts'


SMALL = ['--seeds', '1', '--starts', '2', '--permutations', '20', '--shuffles', '10']


def test_lateral_of_a_saved_model_with_its_step0(tmp_path, capsys):
    """The first documented command: a run's export beside its step 0 (here two saved tiny models)."""
    torch.manual_seed(0)
    step0 = timm_u1.save_pretrained(timm.create_model('u1_lgn_v1net_s', num_classes=3, width=4, widths=(8, 8)),
                                    tmp_path / 'step0')
    torch.manual_seed(1)
    model = timm_u1.save_pretrained(timm.create_model('u1_lgn_v1net_s', num_classes=3, width=4, widths=(8, 8)),
                                    tmp_path / 'export')
    out = tmp_path / 'lateral'
    code, stdout, err = run(['lateral', '--model', str(model), '--step0', str(step0), '--output', str(out), *SMALL],
                            capsys)
    assert code == 0, err
    assert '-> ' + str(out / 'report.md') in stdout and stdout.count('\n  ') == 5  # one line per claim
    report = json.loads((out / 'report.json').read_text())
    assert report['meta']['step0'] == str(step0) and report['meta']['lateral']['steps'] == 2
    assert (out / 'l0.png').is_file() and (out / 'filters' / 'report.md').is_file()


def test_lateral_of_a_registered_model_at_initialisation(tmp_path, capsys):
    code, stdout, err = run(['lateral', '--model', 'lgn_v1net_s', '--output', str(tmp_path / 'init'), *SMALL], capsys)
    assert code == 0, err
    assert 'contradicted' in stdout  # random filters are no LoG and no Gabors


def test_lateral_of_a_wrapped_timm_model(tmp_path, capsys):
    """The third documented command's kind of model: a timm model with the V1 stem, from a folder."""
    torch.manual_seed(0)
    folder = timm_u1.save_pretrained(timm.create_model('u1_v1_test_resnet', num_classes=3), tmp_path / 'v1-resnet')
    code, stdout, err = run(['lateral', '--model', f'local-dir:{folder}', '--output', str(tmp_path / 'out'), *SMALL],
                            capsys)
    assert code == 0, err
    report = json.loads((tmp_path / 'out' / 'report.json').read_text())
    first_conv = timm.create_model('test_resnet').pretrained_cfg['first_conv']
    assert report['meta']['parts'] == f'{first_conv}.prefilter / {first_conv} / {first_conv}.lateral'


@pytest.mark.parametrize('args, words', [
    (['--model', 'lgn_v1net_s', '--permutations', '0'], ['--permutations', 'in [1, 100000], got 0']),
    (['--model', 'lgn_v1net_s', '--shuffles', '0'], ['--shuffles', 'in [1, 10000], got 0']),
    (['--model', 'lgn_v1net_s', '--starts', '10'], ['--starts', 'in [1, 9], got 10']),
    (['--model', ' '], ['--model', 'must not be empty']),
    ([], ['--model']),
])
def test_options_are_checked_when_parsed(args, words, capsys):
    code, _, err = run(['lateral', *args], capsys)
    assert code == 2
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize('model, words', [
    ('resnet18', ['has no V1 stem', 'add_v1_stem']),
    ('lgn_v1net_sx', ['unknown model', 'lgn_v1net_s']),
])
def test_bad_input_is_one_line(model, words, capsys, tmp_path):
    code, _, err = run(['lateral', '--model', model, '--output', str(tmp_path / 'o'), *SMALL], capsys)
    assert code == 1
    line = one_line(err)
    for word in words:
        assert word in line, (word, line)


def test_an_output_that_is_a_file_fails_before_a_model_is_built(tmp_path, capsys, monkeypatch):
    import timm_u1.io.factory as factory

    def refuse(*args, **kwargs):
        raise AssertionError('a model was built before the output was checked')
    monkeypatch.setattr(factory, 'create_model_from_spec', refuse)
    target = tmp_path / 'a_file'
    target.write_text('x')
    code, _, err = run(['lateral', '--model', 'lgn_v1net_s', '--output', str(target)], capsys)
    assert code == 1 and 'is a file, not a folder' in one_line(err)


def _script(args, timeout=900):
    root = os.path.dirname(os.path.dirname(timm_u1.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [root, os.environ.get('PYTHONPATH', '')] if p))
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_the_benchmark_runs_at_its_smallest_setting():
    done = _script([str(SCRIPTS / 'bench_v1.py'), '--arch', 'test_resnet', '--size', '32', '--batch', '4',
                    '--steps', '1'])
    assert done.returncode == 0, done.stderr
    baselines = [line for line in done.stdout.splitlines() if '(baseline)' in line]
    assert len(baselines) == 2 and all(line.endswith(' 1.00x') for line in baselines)  # each family against itself
    # a variant may measure 1.00x of its baseline too, so the other rows are checked for a ratio, not its value
    variants = [line for line in done.stdout.splitlines() if line.endswith('x') and '(baseline)' not in line]
    assert len(variants) >= 2 and all(re.search(r' \d+\.\d\dx$', line) for line in variants)
    assert 'lgn_v1net_s, pre-filter + 2 lateral steps (default)' in done.stdout


def test_the_study_script_runs_at_its_smallest_setting(tmp_path, monkeypatch):
    """scripts/v1_study.py end to end on the real photographs: data, training of two arms, analysis, summary."""
    out = tmp_path / 'study'
    done = _script([str(SCRIPTS / 'v1_study.py'), '--output', str(out), '--arms', 'full', 'no-lateral', '--seeds', '0',
                    '--epochs', '1', '--train-crops', '2', '--test-crops', '1', '--batch-size', '16',
                    '--model-args', '{"width": 4, "widths": [8, 8]}', '--analysis-seeds', '1', '--starts', '1',
                    '--permutations', '10', '--shuffles', '5'], timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '# Early-layer study' in done.stdout and '| full | 1 |' in done.stdout
    summary = json.loads((out / 'summary.json').read_text())
    assert [(r['arm'], r['seed']) for r in summary['runs']] == [('full', 0), ('no-lateral', 0)]
    assert summary['runs'][1]['verdicts']['lateral_orientation'] is None  # no lateral kernel in that arm
    assert (out / 'full-s0' / 'lateral' / 'report.md').is_file() and (out / 'summary.md').is_file()
