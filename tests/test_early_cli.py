"""timm-u1 filters: the documented commands at their smallest setting, option ranges checked when parsed,
bad input in one line, the output checked before any model is built."""
import importlib.metadata
import json

import pytest

pytest.importorskip('scipy')

from command_line import run, one_line  # noqa: E402


def test_filters_of_a_random_init_timm_model(tmp_path, capsys):
    out = tmp_path / 'resnet18'
    code, stdout, err = run(['filters', '--model', 'resnet18', '--seeds', '1', '--starts', '2', '--max-filters', '8',
                             '--output', str(out)], capsys)
    assert code == 0, err
    assert 'conv1 of resnet18 (random init (seed 0))' in stdout
    assert stdout.count(': ') >= 4  # one line per claim after the summary
    for name in ('report.json', 'report.md', 'filters.png', 'distributions.png', 'nxny.png', 'orientations.png'):
        assert (out / name).is_file(), name
    report = json.loads((out / 'report.json').read_text())
    assert report['meta']['shape'] == [64, 3, 7, 7] and len(report['meta']['filters_analysed']) == 8
    assert report['meta']['first_conv'] == 'conv1' and 'pretrained_cfg["first_conv"]' in report['meta']['source']
    assert set(report['verdicts']) == {'gabor', 'orientation', 'radial'}
    markdown = (out / 'report.md').read_text()
    assert '## Decision rule' in markdown and report['decision_rule'] in markdown


def test_filters_of_the_real_dlib_face_layer(tmp_path, capsys):
    try:
        importlib.metadata.distribution('face-recognition-models')
    except importlib.metadata.PackageNotFoundError:
        pytest.skip('face-recognition-models is not installed (pip install "timm_u1[dlib-face]")')
    code, stdout, err = run(['filters', '--weights', 'dlib-face', '--seeds', '1', '--starts', '1', '--max-filters', '8',
                             '--output', str(tmp_path)], capsys)
    assert code == 0, err
    assert 'trained on faces' in stdout and '32 filters 7x7' in stdout
    report = json.loads((tmp_path / 'report.json').read_text())
    assert report['meta']['subject'] == 'dlib-face' and report['meta']['shape'] == [32, 3, 7, 7]
    assert report['summary']['analysed']['filters'] == 8


def test_list_stems_by_kernel_size(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('TIMM_U1_CACHE', str(tmp_path))
    code, stdout, err = run(['filters', '--list-stems', '--min-kernel', '7', '--pattern', 'resnet1*'], capsys)
    assert code == 0, err
    names = [line.split()[0] for line in stdout.splitlines()[1:-1]]
    assert 'resnet18' in names and 'resnet18d' not in names
    assert '(kernel >= 7x7)' in stdout.splitlines()[-1]
    assert list(tmp_path.glob('stems-timm-*.json'))


@pytest.mark.parametrize('args, words', [
    (['--model', 'resnet18', '--seeds', '0'], ['--seeds', 'in [1, 100], got 0']),
    (['--model', 'resnet18', '--starts', '10'], ['--starts', 'in [1, 9], got 10']),
    (['--model', 'resnet18', '--max-filters', '0'], ['--max-filters', '>= 1, got 0']),
    (['--model', 'resnet18', '--weights', 'dlib-face'], ['not allowed with argument']),
    (['--model', ' '], ['--model', 'must not be empty']),
    (['--weights', 'alexnet'], ['--weights', 'invalid choice']),
])
def test_options_are_checked_when_parsed(args, words, capsys):
    code, _, err = run(['filters', *args], capsys)
    assert code == 2
    for word in words:
        assert word in err, (word, err)


@pytest.mark.parametrize('args, words', [
    ([], ['give --model M']),
    (['--model', 'resnet18', '--min-kernel', '7'], ['--list-stems only']),
    (['--list-stems', '--step0', 'x'], ['--step0', 'not to --list-stems']),
    (['--model', 'resnet_eighteen'], ['unknown model', 'resnet']),
    (['--model', 'resnet18', '--step0', 'missing.safetensors'], ['missing.safetensors']),
])
def test_bad_input_is_one_line(args, words, capsys, tmp_path):
    code, _, err = run(['filters', *args, '--output', str(tmp_path / 'o')] if args and '--list-stems' not in args
                       else ['filters', *args], capsys)
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
    code, _, err = run(['filters', '--model', 'resnet18', '--output', str(target)], capsys)
    assert code == 1 and 'is a file, not a folder' in one_line(err)


def test_the_benchmark_runs_at_its_smallest_setting():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / 'scripts' / 'bench_filters.py'
    done = subprocess.run([sys.executable, str(script), '--filters', '1', '--rounds', '1', '--starts', '2'],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('ratio Gabor fit / baseline') == 2 and 'Gabor starts 2' in done.stdout
