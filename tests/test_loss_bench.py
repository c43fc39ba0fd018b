""" scripts/bench_loss.py and scripts/bench_train.py (the U(1) loss's step cost) run, at their smallest setting."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from timm_u1 import U1Loss

REPO = Path(__file__).resolve().parents[1]


def _script(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _script_module(name: str):
    """A script of scripts/ as a module, so its parser runs in this process (no second torch import)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / 'scripts' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module



def test_bench_loss_runs_and_prints_its_ratios(capsys):
    out = _script('scripts/bench_loss.py', '--model', 'test_resnet', '--batch-size', '2', '--img-size', '32',
                  '--num-classes', '5', '--steps', '2', '--warmup', '0', '--clock', 'cpu',
                  '--baseline-tree', str(REPO))
    assert out.returncode == 0, out.stderr
    assert re.search(r'ratio u1 / ce: fastest \d+\.\d+', out.stdout) and 'cpu clock' in out.stdout
    assert re.search(r'before, u1 baseline / ce: fastest \d+\.\d+', out.stdout)
    assert re.search(r'after / before, u1 / u1 baseline: fastest \d+\.\d+', out.stdout)
    assert re.search(r'hue term, u1 / ce only: fastest \d+\.\d+, paired median \d+\.\d+', out.stdout)
    bench = _script_module('bench_loss')  # the other modes in this process: the script's imports take longest
    bench.main(['--loss-only', '--profile', '--batch-size', '4', '--num-classes', '5', '--steps', '1', '--warmup', '0',
                '--calls', '2', '--clock', 'cpu'])
    printed = capsys.readouterr().out
    assert re.search(r'U1Loss\(hue_weight=1\) +fastest +\d+\.\d us, .*x paired median', printed)
    assert re.search(r'u1 +\d+\.\d aten operators per call; most self time: \w+ x', printed)
    with pytest.raises(SystemExit):
        bench.main(['--steps', '0'])
    assert '>= 1' in capsys.readouterr().err


def test_bench_loss_times_a_baseline_tree_s_loss_in_the_same_rotation(capsys, tmp_path):
    bench = _script_module('bench_loss')
    try:
        bench.main(['--loss-only', '--batch-size', '4', '--num-classes', '5', '--steps', '1', '--warmup', '0',
                    '--calls', '1', '--clock', 'cpu', '--baseline-tree', str(REPO)])
        baseline = sys.modules['timm_u1_baseline.core.loss']
    finally:
        for name in [n for n in sys.modules if n.startswith('timm_u1_baseline')]:
            del sys.modules[name]
    # the other tree's module, not this process's timm_u1 under a second name
    assert baseline.U1Loss is not U1Loss and Path(baseline.__file__) == REPO / 'timm_u1' / 'core' / 'loss.py'
    printed = capsys.readouterr().out
    assert re.search(r'U1Loss\(hue_weight=1\) \(baseline\) +fastest +\d+\.\d us', printed)
    assert re.search(r'after / before, u1 / u1 baseline: fastest \d+\.\d{3}, paired median \d+\.\d{3}', printed)
    with pytest.raises(SystemExit):
        bench.main(['--loss-only', '--baseline-tree', str(tmp_path)])
    assert 'holds no timm_u1/core/loss.py' in capsys.readouterr().err


def test_bench_train_validates_its_options_when_parsed(tmp_path, capsys):
    """Its runs at the smallest setting, --before included, are tests/test_train.py's."""
    bench = _script_module('bench_train')
    for option, value, message in (('--epochs', '1', '>= 2'), ('--repeats', '0', '>= 1'),
                                   ('--before', str(tmp_path), 'not a checkout')):
        with pytest.raises(SystemExit) as refused:
            bench.main([option, value])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and message in err, (option, err)
