"""``timm-u1 memory build|eval|predict``: options checked when parsed, a build that resumes only over
the same data, bitwise like an uninterrupted one, a backbone another machine can load, and a
one-line way to classify images."""
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

import timm_u1
from timm_u1.cli import main
from command_line import run
from timm_u1.memory import AnglePrototypeMemory

COLOURS = {'red': (200, 30, 30), 'green': (30, 200, 30), 'blue': (30, 30, 200)}


def make_images(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = torch.randint(0, 40, (16, 16, 3), generator=g)
            pixels = (torch.tensor(colour) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / name / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def backbone_dir(tmp_path_factory):
    """A saved random backbone: every command loads the same weights."""
    folder = tmp_path_factory.mktemp('backbone') / 'test_resnet'
    torch.manual_seed(0)
    timm.models.save_for_hf(timm.create_model('test_resnet', num_classes=3), folder, safe_serialization=True)
    return folder


@pytest.fixture
def image_folder(tmp_path):
    return make_images(tmp_path / 'images')


def build_args(backbone_dir, data, out, *extra):
    return ['memory', 'build', '--model', str(backbone_dir), '--data', str(data), '--img-size', '32',
            '--mode', 'instance', '--batch-size', '4', '--output', str(out), *extra]


def tensors(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / 'memory.safetensors'))


def assert_same_memory(a: Path, b: Path):
    """Two memory folders hold bitwise the same tensors."""
    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


# --- options are checked when parsed --------------------------------------------------------------

@pytest.mark.parametrize('command, option, value, words', [
    ('build', '--bins', '100000', 'in [0, 360]'),
    ('build', '--bins', '-1', 'in [0, 360]'),
    ('build', '--centre-radius', 'nan', 'finite number >= 0'),
    ('build', '--centre-radius', '-1', 'finite number >= 0'),
    ('build', '--k', '0', '>= 1'),
    ('build', '--img-size', '0', '>= 1'),
    ('build', '--batch-size', '0', '>= 1'),
    ('build', '--workers', '-1', '>= 0'),
    ('build', '--save-every', '-5', 'finite number >= 0'),
    ('build', '--save-every', 'inf', 'finite number >= 0'),
    ('build', '--model', '', 'must not be empty'),
    ('build', '--data', ' ', 'must not be empty'),
    ('build', '--output', '', 'must not be empty'),
    ('eval', '--batch-size', '0', '>= 1'),
    ('eval', '--faiss-threshold', '-1', '>= 0'),
    ('eval', '--model', '', 'must not be empty'),
    ('eval', '--memory', '', 'must not be empty'),
])
def test_every_option_is_checked_when_parsed_with_its_range(command, option, value, words, tmp_path, capsys):
    required = {'build': ['--data', 'digits', '--output', str(tmp_path / 'm')],
                'eval': ['--memory', str(tmp_path), '--data', 'digits']}[command]
    code, out, err = run(['memory', command, *required, f'{option}={value}'], capsys)
    assert code == 2, (out, err)
    assert option in err and words in err, err
    assert not (tmp_path / 'm').exists()  # nothing was started


# --- the build resumes only what it was ----------------------------------------------------------

def _interrupt_on_batch(monkeypatch, batch: int, wait_before: float = 0.0):
    """Make the build stop at its ``batch``-th batch, as Ctrl-C would; ``wait_before`` seconds
    before it, so that a checkpoint made every second is due."""
    import time

    calls = []
    real = AnglePrototypeMemory.add_features

    def add_features(self, *a, **kw):
        calls.append(1)
        if len(calls) == batch - 1 and wait_before:
            time.sleep(wait_before)
        if len(calls) == batch:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(AnglePrototypeMemory, 'add_features', add_features)
    return lambda: monkeypatch.setattr(AnglePrototypeMemory, 'add_features', real)


def test_a_build_over_images_replaced_in_place_is_refused_not_mixed(backbone_dir, image_folder, tmp_path, monkeypatch,
                                                                    capsys):
    args = build_args(backbone_dir, image_folder, tmp_path / 'm', '--save-every', '1')
    restore = _interrupt_on_batch(monkeypatch, 3, wait_before=1.1)
    assert run(args, capsys)[0] == 130
    restore()
    # same names, same labels, other pixels (and another modification time)
    make_images(image_folder, seed=1)
    for path in image_folder.rglob('*.png'):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))
    code, out, err = run(args, capsys)
    assert code == 1, out
    errors = [line for line in err.splitlines() if 'error' in line]
    assert len(errors) == 1 and 'data_fingerprint' in errors[0] and '--overwrite' in errors[0], err
    assert run(args + ['--overwrite'], capsys)[0] == 0
    assert run(build_args(backbone_dir, image_folder, tmp_path / 'fresh'), capsys)[0] == 0
    assert_same_memory(tmp_path / 'm', tmp_path / 'fresh')  # none of the old images in it


def test_an_interrupted_build_resumes_to_the_bitwise_memory_of_an_uninterrupted_one(
        backbone_dir, tmp_path, monkeypatch, capsys, caplog):
    import logging

    caplog.set_level(logging.INFO, logger='timm_u1')
    data = make_images(tmp_path / 'images', per_class=10)  # enough batches after the resume to show 1e-8
    assert run(build_args(backbone_dir, data, tmp_path / 'whole'), capsys)[0] == 0
    args = build_args(backbone_dir, data, tmp_path / 'resumed', '--save-every', '1')
    restore = _interrupt_on_batch(monkeypatch, 3, wait_before=1.1)
    assert run(args, capsys)[0] == 130
    restore()
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert 'resuming the build' in caplog.text
    assert_same_memory(tmp_path / 'resumed', tmp_path / 'whole')


def run_killed_at(kill_at: int, args) -> int:
    """Run ``timm-u1 ARGS`` in a forked process that kill -9s itself just before its ``kill_at``-th
    file rename; its exit status (-SIGKILL when it was killed, else its exit code)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = 1
        try:
            real, calls = os.replace, []

            def replace(*a, **kw):
                calls.append(1)
                if len(calls) == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(*a, **kw)

            os.replace = replace
            sys.stdout = sys.stderr = open(os.devnull, 'w')
            code = main(args)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def test_a_build_killed_at_any_rename_is_finished_by_rerunning_it(backbone_dir, tmp_path, capsys):
    """kill -9 before each file rename of a build (its checkpoint, the memory's files): the same
    command finishes it, into the memory of an uninterrupted build."""
    data = make_images(tmp_path / 'images', per_class=2)
    assert run(build_args(backbone_dir, data, tmp_path / 'whole'), capsys)[0] == 0
    kills = 0
    for kill_at in range(1, 30):
        out = tmp_path / f'kill{kill_at}'
        args = build_args(backbone_dir, data, out, '--save-every', '0')
        status = run_killed_at(kill_at, args)
        if status == 0:
            break  # past the last rename
        assert status == -signal.SIGKILL, status
        kills += 1
        code, _, err = run(args, capsys)
        assert code == 0, (kill_at, err)
        assert_same_memory(out, tmp_path / 'whole')
    assert kills >= 5  # the lock's owner file, a checkpoint, and every step of writing the memory's two files


# --- a backbone another machine can load ----------------------------------------------------------

def test_a_memory_records_the_backbone_others_can_load_and_warns_when_only_a_path_is_known(
        backbone_dir, image_folder, tmp_path, capsys, caplog):
    assert run(build_args(backbone_dir, image_folder, tmp_path / 'local'), capsys)[0] == 0
    meta = json.loads((tmp_path / 'local' / 'memory.json').read_text())
    assert meta['backbone_local'] == f'local-dir:{backbone_dir.resolve()}'
    assert meta['backbone'] == meta['backbone_local']  # nothing else is known
    assert any('only' in r.getMessage() and 'local' in r.getMessage() and r.levelname == 'WARNING'
               for r in caplog.records)
    caplog.clear()
    code, _, err = run(build_args(backbone_dir, image_folder, tmp_path / 'hub', '--backbone-id', 'org/backbone'), capsys)
    assert code == 0, err
    meta = json.loads((tmp_path / 'hub' / 'memory.json').read_text())
    assert meta['backbone'] == 'hf-hub:org/backbone' and meta['base_model'] == 'org/backbone'
    assert meta['backbone_local'] == f'local-dir:{backbone_dir.resolve()}'
    assert not [r for r in caplog.records if r.levelname == 'WARNING' and 'local' in r.getMessage()]
    # evaluated here, the local backbone is used (the Hub is not asked)
    code, out, err = run(['memory', 'eval', '--memory', str(tmp_path / 'hub'), '--data', str(image_folder),
                          '--split', 'train'], capsys)
    assert code == 0, err


def test_the_offline_default_backbone_is_portable_as_is():
    from timm_u1.memory.backbone import describe_backbone

    record = describe_backbone('tf_efficientnet_lite0.offline_in1k')
    assert record.backbone == 'tf_efficientnet_lite0.offline_in1k' and record.backbone_local is None
    record = describe_backbone('hf-hub:org/name@v1')
    assert record.backbone == 'hf-hub:org/name@v1' and record.base_model == 'org/name'


# --- classify images ------------------------------------------------------------------------------

def test_predict_classifies_image_files_and_folders_from_the_command_line_and_python(
        backbone_dir, image_folder, tmp_path, capsys):
    assert run(build_args(backbone_dir, image_folder, tmp_path / 'm'), capsys)[0] == 0
    red = image_folder / 'red' / '0.png'
    code, out, err = run(['memory', 'predict', str(red), str(image_folder / 'blue'), '--memory', str(tmp_path / 'm'),
                          '--top-k', '2'], capsys)
    assert code == 0, err
    rows = [line.split('  ') for line in out.splitlines() if line.strip()]  # path, then "class score" pairs
    assert [row[0] for row in rows] == [str(red)] + [str(image_folder / 'blue' / f'{i}.png') for i in range(4)]
    assert [row[1].split()[0] for row in rows] == ['red'] + ['blue'] * 4
    assert all(len(row) == 3 for row in rows)  # --top-k 2

    from timm_u1.io.factory import create_model_from_spec

    memory = AnglePrototypeMemory.from_pretrained(tmp_path / 'm')
    model = create_model_from_spec(memory.backbone)
    top = memory.predict_images(model, [red, image_folder / 'green' / '1.png'], top_k=3)
    assert [row[0][0] for row in top] == ['red', 'green']
    assert all(len(row) == 3 and abs(sum(score for _, score in row) - 1) < 1e-5 for row in top)
    assert all(row[0][1] >= row[1][1] >= row[2][1] for row in top)
    from timm_u1.memory import predict

    assert predict([red], tmp_path / 'm', top_k=1) == [[top[0][0]]]

    (tmp_path / 'broken.png').write_bytes(b'not an image')
    code, _, err = run(['memory', 'predict', str(tmp_path / 'broken.png'), '--memory', str(tmp_path / 'm')], capsys)
    errors = [line for line in err.splitlines() if 'error' in line]
    assert code == 1 and len(errors) == 1 and 'broken.png' in errors[0], err
    code, _, err = run(['memory', 'predict', str(tmp_path / 'none.png'), '--memory', str(tmp_path / 'm')], capsys)
    assert code == 1 and 'none.png' in err
    code, _, err = run(['memory', 'predict', str(red), '--memory', str(tmp_path / 'm'), '--top-k', '0'], capsys)
    assert code == 2 and '--top-k' in err


def test_the_command_line_s_copies_of_library_constants_agree():
    """cli/memory.py names these without importing torch (its parser is built for every --help)."""
    from timm_u1.cli import memory as command
    from timm_u1.core.knn import DEFAULT_FAISS_THRESHOLD
    from timm_u1.memory import DTYPES, METHODS, MODES
    from timm_u1.memory.bins import MAX_BINS
    from timm_u1.runs.stream import CHECKPOINT_EVERY

    assert (command.MODES, command.METHODS, sorted(command.DTYPES)) == (MODES, METHODS, sorted(DTYPES))
    assert (command.MAX_BINS, command.DEFAULT_FAISS_THRESHOLD, command.CHECKPOINT_EVERY) == (
        MAX_BINS, DEFAULT_FAISS_THRESHOLD, CHECKPOINT_EVERY)
