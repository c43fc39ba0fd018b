"""timm-u1: every command's error path ends in one line on stderr and exit 1 (2 for usage errors),
output paths are checked and locked before any work, and a resume with other settings is refused."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from timm_u1 import data as data_mod
from timm_u1.cli import main
from command_line import run
from timm_u1.cli.analyze import dataset_slug
from timm_u1.errors import ResumeMismatchError, RunLockedError
from timm_u1.runs import LOCK_NAME, RunFolder, check_same_run

TINY = ['--model', 'test_efficientnet']


def assert_one_line_error(code, err, *words, expected_code=1):
    assert code == expected_code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert 'Traceback' not in err and 'internal error' not in err, err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('images')
    rng = np.random.default_rng(0)
    for c, name in enumerate(('red', 'green', 'blue')):
        (root / name).mkdir()
        for i in range(3):
            arr = rng.integers(0, 80, (16, 16, 3), dtype=np.uint8)
            arr[..., c] += 150
            Image.fromarray(arr).save(root / name / f'{i}.png')
    return root


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if any command opens a dataset: output problems must be found before that."""
    def refuse(*args, **kwargs):
        raise AssertionError('a dataset was opened before the output path was checked')
    monkeypatch.setattr(data_mod, 'load_image_dataset', refuse)


# --- one convention for every command ------------------------------------------------------------

@pytest.mark.parametrize('args, words', [
    (['analyze', *TINY, '--data', '/no/such/folder'], ['timm-u1 analyze: error:', 'no such directory']),
    (['analyze', '--model', 'no_such_model_xyz', '--data', 'digits'], ['timm-u1 analyze: error:', 'unknown model']),
    (['memory', 'build', *TINY, '--data', '/no/such/folder'], ['timm-u1 memory: error:', 'no such directory']),
    (['memory', 'eval', '--memory', '/no/such/memory', '--data', 'digits'], ['timm-u1 memory: error:', '/no/such/memory']),
    (['train', *TINY, '--data', '/no/such/folder'], ['timm-u1 train: error:', 'no such directory']),
    (['compare', '--data', '/no/such/folder', '--seeds', '0', '1'], ['timm-u1 compare: error:', 'no such directory']),
    (['push', '/no/such/run', '--repo-id', 'org/name'], ['timm-u1 push: error:']),
])
def test_every_command_reports_bad_input_on_one_stderr_line(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv('HF_TOKEN', 'hf_unused')
    if args[0] in ('analyze', 'train', 'compare') or args[:2] == ['memory', 'build']:
        args = args + (['--output', str(tmp_path / 'out')] if args[0] in ('train', 'compare')
                       else ['--output', str(tmp_path / 'out')])
    code, out, err = run(args, capsys)
    assert_one_line_error(code, err, *words)


@pytest.mark.parametrize('args', [
    ['train', '--output', 'x', '--epochs', '0'],
    ['train', '--output', 'x', '--grad-accum', '0'],
    ['train', '--output', 'x', '--batch-size', '-1'],
    ['analyze', '--limit', '0'],
    ['memory', 'nonsense'],
    ['no-such-command'],
])
def test_nonsense_values_are_usage_errors(args, capsys):
    code, _, err = run(args, capsys)
    assert code == 2 and 'usage:' in err and 'Traceback' not in err


def test_traceback_only_with_debug(monkeypatch, capsys):
    args = ['analyze', *TINY, '--data', '/no/such/folder', '--output', 'unused-out']
    monkeypatch.setenv('TIMM_U1_DEBUG', '1')
    with pytest.raises(FileNotFoundError):
        main(args)


def test_a_bug_is_named_as_one_and_keeps_stderr_to_one_line(monkeypatch, capsys, tmp_path):
    import timm_u1.cli.analyze as cli_analyze

    def broken(*args, **kwargs):
        raise KeyError('oops')

    monkeypatch.setattr(cli_analyze, 'analyze', broken)
    code, _, err = run(['analyze', '--output', str(tmp_path)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert 'internal error: KeyError' in err and 'TIMM_U1_DEBUG=1' in err


def test_console_script_entry_point_runs_the_cli():
    result = subprocess.run([sys.executable, '-m', 'timm_u1.cli', 'memory', 'eval', '--memory', '/no/such',
                             '--data', 'digits'], capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 1
    assert result.stdout == '' and result.stderr.count('\n') == 1 and 'timm-u1 memory: error:' in result.stderr


# --- output checked before any work (issue 12, item 8) ---------------------------------------------

@pytest.mark.parametrize('command', [
    ['analyze', *TINY, '--data', 'digits', '--output'],
    ['memory', 'build', *TINY, '--data', 'digits', '--output'],
    ['train', *TINY, '--data', 'digits', '--output'],
])
def test_an_output_that_is_a_file_fails_before_any_data_is_read(command, tmp_path, capsys, no_data):
    target = tmp_path / 'a-file'
    target.write_text('keep me')
    code, _, err = run(command + [str(target)], capsys)
    assert_one_line_error(code, err, str(target), 'is a file')
    assert target.read_text() == 'keep me'


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes into read-only folders')
def test_a_read_only_output_fails_before_any_data_is_read(tmp_path, capsys, no_data):
    ro = tmp_path / 'ro'
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = run(['memory', 'build', *TINY, '--data', 'digits', '--output', str(ro / 'mem')], capsys)
    finally:
        ro.chmod(0o755)
    assert_one_line_error(code, err, 'cannot be written')


def test_an_unwritable_output_fails_before_any_data_is_read(tmp_path, capsys, no_data, monkeypatch):
    # root ignores permission bits, so the refusal of the filesystem is simulated
    real_mkdir = type(tmp_path).mkdir

    def refuse(self, *args, **kwargs):
        if self.name == 'denied':
            raise PermissionError(13, 'Permission denied', str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), 'mkdir', refuse)
    code, _, err = run(['analyze', *TINY, '--data', 'digits', '--output', str(tmp_path / 'denied')], capsys)
    assert_one_line_error(code, err, 'cannot be written', 'Permission denied')


# --- one writer per run folder (issue 12, item 9) -------------------------------------------------

def _hold(folder, seconds: float) -> subprocess.Popen:
    """A process that holds ``folder``'s lock for ``seconds`` once it prints 'held'."""
    code = ('import sys, time; from timm_u1.runs import RunFolder; f = RunFolder(sys.argv[1]).acquire(); '
            'print("held", flush=True); time.sleep(float(sys.argv[2]))')
    proc = subprocess.Popen([sys.executable, '-c', code, str(folder), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'held'
    return proc


def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(tmp_path, capsys):
    with RunFolder(tmp_path / 'run') as first:
        assert first.held
        with pytest.raises(RunLockedError, match=f'process {os.getpid()}'):
            RunFolder(tmp_path / 'run').acquire()
    with RunFolder(tmp_path / 'run'):  # released on exit
        pass

    holder = _hold(tmp_path / 'mem', 60)
    try:
        code, _, err = run(['memory', 'build', *TINY, '--data', 'digits', '--output', str(tmp_path / 'mem')], capsys)
        assert_one_line_error(code, err, 'in use by process', str(holder.pid))
    finally:
        holder.kill()  # as kill -9 would: the OS drops its lock, nothing is left to take over
        holder.wait()
    with RunFolder(tmp_path / 'mem') as again:
        assert again.held


def _race(folder: str, barrier, log: str) -> None:
    barrier.wait()  # every process is ready: all ask at once
    try:
        run = RunFolder(folder).acquire()
    except RunLockedError:
        return
    began = time.time()
    time.sleep(0.2)
    with open(log, 'a') as f:
        f.write(json.dumps([began, time.time()]) + '\n')
    run.release()


def test_processes_racing_for_a_folder_never_hold_it_together(tmp_path):
    """Six processes asking at the same instant, some rounds with a dead process's lock file present:
    the lock is held by at most one process at a time."""
    import multiprocessing

    ctx = multiprocessing.get_context('fork')  # forked children share this process's imports: no start-up cost
    for round_ in range(10):
        folder, log = tmp_path / f'race{round_}', tmp_path / f'held{round_}.jsonl'
        folder.mkdir()
        if round_ % 2:  # what a killed run of the earlier lock format left behind
            (folder / LOCK_NAME).write_text(json.dumps({'pid': 999999, 'host': os.uname().nodename}))
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_race, args=(str(folder), barrier, str(log))) for _ in range(6)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
        assert [proc.exitcode for proc in procs] == [0] * 6
        spans = sorted(json.loads(line) for line in log.read_text().splitlines())
        assert spans, 'no process got the lock'
        for (_, end), (begin, _) in zip(spans, spans[1:]):
            assert begin >= end, f'round {round_}: two processes held {folder} at once: {spans}'


# --- one resume rule (issue 9) -----------------------------------------------------------------------

def test_check_same_run_names_every_difference_and_the_way_out(tmp_path):
    check_same_run({'a': 1, 'b': (1, 2)}, {'a': 1, 'b': [1, 2]}, tmp_path, 'start over')  # JSON-equal
    with pytest.raises(ResumeMismatchError) as info:
        check_same_run({'a': 1, 'b': 2}, {'a': 1, 'b': 3, 'c': 4}, tmp_path / 'state', 'pass --overwrite')
    message = str(info.value)
    assert "b: 2 there, 3 now" in message and "c: None there, 4 now" in message
    assert 'pass --overwrite' in message and 'a:' not in message


def test_analyze_refuses_to_resume_a_run_with_other_settings(tmp_path, monkeypatch):
    import timm_u1.analysis.analyzer as analyze_mod
    from timm_u1.analysis.analyzer import analyze
    from timm_u1.analysis.sombrero import SombreroStatistics

    model = timm.create_model('test_efficientnet', pretrained_cfg_overlay=dict(input_size=(3, 32, 32))).eval()
    out = tmp_path / 'out'
    monkeypatch.setattr(analyze_mod, 'CHECKPOINT_EVERY', 0.0)  # a checkpoint after every batch
    real_update, calls = SombreroStatistics.update, []

    def killed_in_second_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(SombreroStatistics, 'update', killed_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        analyze(model, 'digits', limit=6, batch_size=3, permutations=0, out=out, progress=False, plots=False,
                controls='none')
    monkeypatch.setattr(SombreroStatistics, 'update', real_update)
    state = out / analyze_mod._STATE_FILE
    assert state.is_file()
    before = state.read_bytes()
    with pytest.raises(ResumeMismatchError, match=r'permutations: 0 there, 9 now'):
        analyze(model, 'digits', limit=6, batch_size=3, permutations=9, out=out, progress=False, plots=False,
                controls='none')
    assert state.read_bytes() == before  # nothing lost
    report = analyze(model, 'digits', limit=6, batch_size=3, permutations=9, out=out, progress=False,
                     plots=False, overwrite=True, controls='none')
    assert report.meta['images'] == 6 and not state.exists()


def test_memory_build_resumes_through_the_library_and_refuses_other_settings(tmp_path, images):
    from timm_u1.data import load_image_dataset
    from timm_u1.memory import AnglePrototypeMemory

    model = timm.create_model('test_efficientnet').eval()
    ds = load_image_dataset(str(images))
    settings = {'data': str(images), 'bins': 4}

    whole = AnglePrototypeMemory.for_model(model, ['blue', 'green', 'red'], num_bins=4, img_size=32)
    whole.build(model, ds, batch_size=2, progress=False)

    calls = []
    real_add = AnglePrototypeMemory.add_features

    def crash_on_third_batch(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_add(self, *a, **kw)

    part = AnglePrototypeMemory.for_model(model, ['blue', 'green', 'red'], num_bins=4, img_size=32)
    AnglePrototypeMemory.add_features = crash_on_third_batch
    try:
        with pytest.raises(KeyboardInterrupt):
            part.build(model, ds, batch_size=2, progress=False, save_directory=tmp_path / 'm', save_every=0,
                       settings=settings)
    finally:
        AnglePrototypeMemory.add_features = real_add
    with pytest.raises(ResumeMismatchError, match='bins: 4 there, 8 now'):
        part.build(model, ds, batch_size=2, progress=False, save_directory=tmp_path / 'm', settings=dict(settings, bins=8))
    with pytest.warns(DeprecationWarning, match='resume_build'):  # the 0.1 way, for one more release
        resumed = AnglePrototypeMemory.resume_build(tmp_path / 'm', settings)
    assert resumed.build_progress['images_done'] == 4
    resumed.build(model, ds, batch_size=2, progress=False, save_directory=tmp_path / 'm')
    final = AnglePrototypeMemory.from_pretrained(tmp_path / 'm')
    assert final.complete and final.num_images == whole.num_images == 9
    assert torch.equal(final.prototypes(), whole.prototypes())
    with pytest.raises(ValueError, match='already holds a memory'), pytest.warns(DeprecationWarning):
        AnglePrototypeMemory.resume_build(tmp_path / 'm', settings)
    with pytest.raises(ValueError, match='already holds a memory'):
        whole.build(model, ds, batch_size=2, progress=False, save_directory=tmp_path / 'm')


# --- smaller items of issue 12 -------------------------------------------------------------------------

def test_analyze_data_dot_dot_writes_inside_out(tmp_path, images, capsys, monkeypatch):
    monkeypatch.chdir(images / 'red')
    out = tmp_path / 'reports'
    code, stdout, err = run(['analyze', *TINY, '--data', '..', '--permutations', '0', '--batch-size', '9',
                             '--controls', 'none',
                             '--output', str(out)], capsys)
    assert code == 0, err
    assert (out / images.name / 'report.json').is_file()
    assert not (tmp_path / 'report.json').exists() and not (out.parent / 'report.md').exists()
    assert dataset_slug('digits') == 'digits' and dataset_slug('org/name') == 'org__name'


def test_memory_eval_plot_naming_a_folder_is_refused_before_any_work(tmp_path, capsys, no_data):
    code, _, err = run(['memory', 'eval', '--memory', str(tmp_path), '--data', 'digits', '--plot', str(tmp_path)],
                       capsys)
    assert_one_line_error(code, err, '--plot', 'is a folder')


def test_compare_refuses_repeated_seeds(tmp_path, capsys, no_data):
    code, _, err = run(['compare', '--seeds', '0', '0', '--output', str(tmp_path / 'study')], capsys)
    assert_one_line_error(code, err, 'Seeds must differ', '[0, 0]')
