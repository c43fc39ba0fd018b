"""The command line as a program: a start-up that loads nothing it does not need, --version, one kind
of parser, help with defaults and examples that parse, -v/-q, one name for the output folder."""
import argparse
import logging
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import timm_u1
import timm_u1_launcher
from timm_u1.cli import COMMANDS, build_parser, main
from timm_u1.cli.options import Parser

ROOT = Path(__file__).resolve().parents[1]


def _console_script() -> str:
    """The ``module:function`` that pyproject.toml installs as ``timm-u1``."""
    return tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['scripts']['timm-u1']


def _run_console_script(*args: str) -> subprocess.CompletedProcess:
    """``timm-u1 ARGS`` in a fresh interpreter, through the installed entry point, reporting which
    heavy modules it imported on the last line of stderr."""
    module, function = _console_script().split(':')
    code = (f'import sys, atexit\n'
            f'atexit.register(lambda: print("imported:", *sorted(m for m in ("torch", "timm", "datasets", "timm_u1") '
            f'if m in sys.modules), file=sys.stderr))\n'
            f'from {module} import {function}\nsys.argv[0] = "timm-u1"\nsys.exit({function}())\n')
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize('args', [['--help'], ['--version'], [], ['not-a-command']])
def test_top_level_help_version_and_usage_errors_import_neither_torch_nor_the_library(args):
    result = _run_console_script(*args)
    assert result.returncode == (0 if args[:1] in (['--help'], ['--version']) else 2), result.stderr
    assert result.stderr.splitlines()[-1] == 'imported:', result.stderr
    if args == ['--help']:
        for name in COMMANDS:
            assert name in result.stdout
    if args == ['--version']:
        assert result.stdout.strip() == f'timm-u1 {timm_u1.__version__}'


def test_a_command_runs_through_the_console_script():
    result = _run_console_script('push', '--help')
    assert result.returncode == 0 and '--repo-id' in result.stdout and 'examples:' in result.stdout
    assert 'timm_u1' in result.stderr.splitlines()[-1]


def test_the_launcher_lists_every_command_module():
    modules = {p.stem.replace('_', '-') for p in (ROOT / 'timm_u1' / 'cli').glob('*.py')
               if 'def add_parser(' in p.read_text(encoding='utf-8')}
    assert modules == set(timm_u1_launcher.COMMANDS) == set(COMMANDS)


def _leaves(parser):
    commands = getattr(parser, 'commands', None)
    if commands is None:
        return [parser]
    return [leaf for child in commands.choices.values() for leaf in _leaves(child)]


@pytest.fixture(scope='module')
def leaves():
    parser = build_parser()
    found = _leaves(parser)
    assert {leaf.prog.split()[1] for leaf in found} == set(COMMANDS)
    return found


def test_every_parser_is_a_parser_without_abbreviations(leaves):
    for leaf in leaves:
        assert isinstance(leaf, Parser) and leaf.allow_abbrev is False, leaf.prog
    with pytest.raises(SystemExit):
        build_parser().parse_args(['push', 'run', '--repo', 'a/b'])  # --repo is not --repo-id


def test_every_default_is_in_the_help(leaves):
    for leaf in leaves:
        text = ' '.join(leaf.format_help().split())
        for action in leaf._actions:  # argparse lists a parser's options only there
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                shown = ' '.join(str(action.default).split())
                assert f'default: {shown}' in text or 'default' in (action.help or ''), (leaf.prog, action.dest)


def test_every_command_has_examples_that_parse(leaves):
    full = build_parser()
    for leaf in leaves:
        epilog = leaf.epilog or ''
        assert epilog.startswith('examples:'), leaf.prog
        for line in _example_commands(epilog):
            argv = shlex.split(line.split('#')[0])
            if argv[0] == 'accelerate':
                argv = [argv[3].rsplit('.', 1)[1], *argv[4:]]  # accelerate launch -m timm_u1.cli.train ...
            else:
                argv = argv[1:]
            args = full.parse_args(argv)
            assert args.func is not None, line


def _example_commands(epilog: str):
    """The example command lines of an epilog, continuation lines joined."""
    lines, current = [], ''
    for line in epilog.splitlines()[1:]:
        current += ' ' + line.strip().rstrip('\\')
        if not line.rstrip().endswith('\\'):
            lines.append(current.strip())
            current = ''
    return lines


@pytest.mark.parametrize('argv', [
    ['analyze', '{out}', 'runs/x'],
    ['memory', 'build', '--data', 'digits', '{out}', 'runs/x'],
])
def test_output_is_the_one_name_of_the_output_folder_and_out_still_works(argv, capsys):
    parser = build_parser()
    new = parser.parse_args([a.replace('{out}', '--output') for a in argv])
    assert capsys.readouterr().err == ''
    old = parser.parse_args([a.replace('{out}', '--out') for a in argv])
    assert old.out == new.out == 'runs/x'
    err = capsys.readouterr().err
    assert '--out is deprecated, use --output' in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def talking_command(monkeypatch):
    """``timm-u1 push`` replaced by a command that says one thing at every level."""
    import timm_u1.cli.push as push

    def run(args):
        logging.getLogger('timm_u1.talk').debug('ours: debug')
        logging.getLogger('timm_u1.talk').info('ours: info')
        logging.getLogger('timm_u1.talk').warning('ours: warning')
        logging.getLogger('some_library').info('theirs: info')
        logging.getLogger('some_library').warning('theirs: warning')
        return 0
    monkeypatch.setattr(push, 'run', run)


@pytest.mark.parametrize('flag, shown', [
    (None, {'ours: info', 'warning: ours: warning', 'warning: theirs: warning'}),
    ('-q', {'warning: ours: warning', 'warning: theirs: warning'}),
    ('-v', {'[timm_u1.talk] ours: debug', '[timm_u1.talk] ours: info', '[timm_u1.talk] warning: ours: warning',
            '[some_library] theirs: info', '[some_library] warning: theirs: warning'}),
])
def test_messages_follow_verbose_and_quiet(talking_command, capsys, flag, shown):
    before = logging.getLogger().level, logging.getLogger('timm_u1').level, list(logging.getLogger().handlers)
    assert main(['push', 'run', '--repo-id', 'a/b', *([flag] if flag else [])]) == 0
    captured = capsys.readouterr()
    assert set(captured.err.splitlines()) == shown and captured.out == ''
    after = logging.getLogger().level, logging.getLogger('timm_u1').level, list(logging.getLogger().handlers)
    assert after == before  # an in-process call leaves the caller's logging as it was


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(['push', 'run', '--repo-id', 'a/b', '-v', '-q'])
    assert 'not allowed with argument' in capsys.readouterr().err


def test_the_distribution_ships_a_licence_and_type_information():
    assert 'Apache License' in (ROOT / 'LICENSE').read_text()
    assert (ROOT / 'timm_u1' / 'py.typed').is_file()


@pytest.mark.timeout(900)  # ~40 s on an idle machine; several minutes under load
def test_the_wheel_installs_and_runs_every_help_and_the_main_job(tmp_path):
    """scripts/check_wheel.sh at its smallest setting: the dependencies seen from this venv."""
    env = {**os.environ, 'TMPDIR': str(tmp_path)}  # its venv stays in pytest's tmp folder even if it is killed
    result = subprocess.run(['bash', 'scripts/check_wheel.sh', '--deps-from', sys.prefix, '--quick'], cwd=ROOT,
                            capture_output=True, text=True, timeout=880, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'every --help ran' in result.stdout and 'check_wheel: the wheel installs and runs' in result.stdout


@pytest.mark.timeout(600)  # three fresh interpreters import torch
def test_bench_startup_runs_at_its_smallest_setting():
    result = subprocess.run([sys.executable, 'scripts/bench_startup.py', '--repeats', '1', '--no-sizes'], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = {line[:32].strip(): line.split()[-4:] for line in result.stdout.splitlines()[1:] if line[:1] != 'l'}
    assert {'full parser (before)', 'timm-u1 --help', 'timm-u1 train --help'} <= set(rows)
    assert rows['full parser (before)'][1] == '1.000'  # the baseline's own ratio


@pytest.mark.parametrize('abbreviation', [['--outp', 'elsewhere'], ['--hue-w', '5'], ['--mod', 'resnet18']])
def test_options_after_compares_double_dash_cannot_be_abbreviated_past_its_refusals(
        abbreviation, monkeypatch, tmp_path, capsys):
    import timm_u1.cli.compare as compare

    studies = []
    monkeypatch.setattr(compare, 'run_study', lambda base, *a, **kw: studies.append(base))
    with pytest.raises(SystemExit) as usage_error:
        main(['compare', '--output', str(tmp_path), '--', *abbreviation])
    assert usage_error.value.code == 2 and studies == []
    assert abbreviation[0] in capsys.readouterr().err


def test_library_code_logs_instead_of_printing():
    import ast

    printing = set()
    for path in sorted((ROOT / 'timm_u1').rglob('*.py')):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith('timm_u1/cli/'):
            continue  # the command line prints its results
        for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
            called = node.func if isinstance(node, ast.Call) else None
            name = getattr(called, 'id', None) or getattr(called, 'attr', None)
            default_print = isinstance(node, ast.Name) and node.id == 'print' and isinstance(node.ctx, ast.Load)
            if name == 'print' or default_print:
                printing.add(relative)
    assert printing == set(), 'print in library code: use logging.getLogger(__name__)'


@pytest.mark.parametrize('world_size, left', [('2', 1), ('1', 0)])
def test_a_launched_command_leaves_its_process_group_even_when_it_fails(world_size, left, monkeypatch, tmp_path,
                                                                         capsys):
    """Left to the interpreter's exit, a gloo group's threads can abort a finished process (exit -6)."""
    from timm_u1.runs import shard

    calls = []
    monkeypatch.setattr(shard, 'leave_process_group', lambda: calls.append(world_size))
    monkeypatch.setenv('WORLD_SIZE', world_size)
    code = main(['filters', '--model', 'no_such_architecture', '--output', str(tmp_path / 'out')])
    assert code == 1 and 'no_such_architecture' in capsys.readouterr().err
    assert len(calls) == left
