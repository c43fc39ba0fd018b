"""timm_u1.training (timm-u1 train): train, evaluate, checkpoint, resume, export, bad input."""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import timm
import timm_u1
from timm_u1.training import trainer as training
from timm_u1.cli.train import add_arguments, config_from_args
from timm_u1.data import load_image_dataset, make_loader
from timm_u1.errors import ResumeMismatchError
from timm_u1.training.trainer import (
    CHECKPOINT_NAME, METRICS_NAME, MetricsLog, check_labels, evaluate, load_checkpoint, save_checkpoint,
)


def train_cli(argv):
    """``timm-u1 train ARGV``, without the error-to-exit-code mapping: returns the run's summary."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return training.train(config_from_args(parser.parse_args(argv)))

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]


def make_image_folder(root: Path, num_classes: int = 3, train_per_class: int = 8, test_per_class: int = 4) -> Path:
    """train/ and test/ splits, one sub-folder per class; a class is a noisy colour with a bar.

    Sizes and modes are mixed on purpose (RGB, L, RGBA; 20 to 40 px): the loader must cope.
    """
    rng = np.random.default_rng(0)
    modes = ('RGB', 'L', 'RGBA')
    for split, n in (('train', train_per_class), ('test', test_per_class)):
        for c in range(num_classes):
            folder = root / split / f'class{c}'
            folder.mkdir(parents=True)
            for i in range(n):
                size = int(rng.integers(20, 41))
                arr = np.clip(np.array(COLOURS[c]) + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                arr[:, c * size // num_classes:(c + 1) * size // num_classes] = 255
                Image.fromarray(arr).convert(modes[i % 3]).save(folder / f'{i}.png')
    return root


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp('folder'))


BASE = ['--model', 'test_resnet', '--img-size', '32', '--batch-size', '8', '--epochs', '2', '--lr', '3e-3',
        '--no-progress', '--scale', '0.5', '1.0']

# fields that depend on the wall clock, not on the computation
TIMING = ('train_images_per_s',)


def _records(run: Path):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in MetricsLog(run / METRICS_NAME).read()]


@pytest.fixture(scope='module')
def full_run(image_folder, tmp_path_factory) -> Path:
    """An uninterrupted two-epoch CE + U(1) run with export."""
    out = tmp_path_factory.mktemp('full')
    train_cli(['--data', str(image_folder), '--output', str(out), *BASE])
    return out


def test_run_trains_evaluates_checkpoints_and_logs(full_run):
    records = _records(full_run)
    assert [r['epoch'] for r in records] == [0, 1]
    for r in records:
        for key in ('eval_top1', 'eval_top5', 'eval_loss', 'eval_ce', 'eval_hue', 'eval_hue_error_deg'):
            assert np.isfinite(r[key]), key
        assert r['eval_loss'] == pytest.approx(r['eval_ce'] + 1.0 * r['eval_hue'], rel=1e-5)
        assert r['eval_num_samples'] == 12
    assert records[1]['train_loss'] < records[0]['train_loss']
    assert records[1]['eval_top5'] == 100.0  # 3 classes: top-5 covers them all
    state = torch.load(full_run / CHECKPOINT_NAME, weights_only=True)
    assert state['epoch'] == 2 and state['step'] == 2 * 3  # 24 images / batch 8
    assert not [p for p in full_run.iterdir() if p.name.endswith('.tmp')]


def test_interrupted_run_resumes_to_the_same_state(full_run, image_folder, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    real_evaluate = training.evaluate
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the run were killed at the end of epoch 2's training
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(training, 'evaluate', crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE])
    monkeypatch.setattr(training, 'evaluate', real_evaluate)
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)['epoch'] == 1
    MetricsLog(out / METRICS_NAME).append({'epoch': 1, 'torn': True})  # a record past the checkpoint

    with pytest.raises(ResumeMismatchError, match='--resume'):
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE])
    train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE])

    assert _records(out) == _records(full_run)
    resumed = torch.load(out / CHECKPOINT_NAME, weights_only=True)['model']
    uninterrupted = torch.load(full_run / CHECKPOINT_NAME, weights_only=True)['model']
    for k, v in uninterrupted.items():
        assert torch.equal(resumed[k], v), k


def test_export_reloads_and_scores_the_logged_accuracy(full_run, image_folder):
    model = timm_u1.from_pretrained(full_run / 'export')  # the twin; plain timm's local-dir: gives the base model
    assert timm_u1.is_u1_model(model) and model.num_classes == 3
    assert model.pretrained_cfg['label_names'] == ['class0', 'class1', 'class2']
    assert model.pretrained_cfg['input_size'] == (3, 32, 32)  # the trained size, so eval matches
    model.eval()
    loader = make_loader(load_image_dataset(str(image_folder), split='test'), model, batch_size=5)
    metrics = evaluate(model, loader, timm_u1.U1Loss.from_model(model))
    logged = MetricsLog(full_run / METRICS_NAME).read()[-1]
    assert metrics['top1'] == pytest.approx(logged['eval_top1'])
    assert metrics['loss'] == pytest.approx(logged['eval_loss'], rel=1e-4)


def test_resume_into_another_dataset_is_refused(full_run, tmp_path):
    other = make_image_folder(tmp_path / 'other', train_per_class=6)
    out = tmp_path / 'copy'
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes((full_run / CHECKPOINT_NAME).read_bytes())
    with pytest.raises(ResumeMismatchError, match='train_data'):
        train_cli(['--data', str(other), '--output', str(out), '--resume', *BASE])


def test_finetune_resets_a_mismatched_head_with_spatial_loss_and_mixup(full_run, tmp_path, capsys):
    data = make_image_folder(tmp_path / 'four', num_classes=4, train_per_class=4, test_per_class=2)
    out = tmp_path / 'ft'
    summary = train_cli([
        '--data', str(data), '--output', str(out), '--model', str(full_run / 'export'), '--pretrained',
        '--img-size', '32', '--batch-size', '8', '--epochs', '1', '--spatial', '--mixup', '0.2',
        '--grad-accum', '2', '--no-progress'])
    assert 'replacing it with a new 4-class head' in capsys.readouterr().out
    assert summary['num_classes'] == 4
    record = summary['final']
    assert record['step'] == 1  # 16 images, batch 8, 2 accumulation steps
    assert np.isfinite(record['eval_loss'])
    config = json.loads((out / 'export' / 'config.json').read_text())
    assert config['u1']['spatial'] is True and config['num_classes'] == 4


def test_dataset_with_two_classes_is_refused(tmp_path):
    data = make_image_folder(tmp_path / 'two', num_classes=2, train_per_class=2, test_per_class=1)
    with pytest.raises(ValueError, match='C >= 3'):
        train_cli(['--data', str(data), '--output', str(tmp_path / 'out'), *BASE])


def test_dataset_without_labels_is_refused(tmp_path):
    for split in ('train', 'test'):
        (tmp_path / 'flat' / split).mkdir(parents=True)
        for i in range(3):  # images straight in the split folder: no class sub-folders, no labels
            Image.new('RGB', (16, 16), COLOURS[i]).save(tmp_path / 'flat' / split / f'{i}.png')
    with pytest.raises(ValueError, match='no "label" column'):
        train_cli(['--data', str(tmp_path / 'flat'), '--output', str(tmp_path / 'out'), *BASE])


def test_check_labels_names_the_problem():
    with pytest.raises(ValueError, match='no "label" column'):
        check_labels(None, None)
    with pytest.raises(ValueError, match='1 unlabelled'):
        check_labels([0, 1, -1, 2], None)
    with pytest.raises(ValueError, match='empty'):
        check_labels([], None)
    assert check_labels([0, 1, 2, 1], ['a', 'b', 'c', 'd']) == 4


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    model = timm.create_model('u1_test_resnet', num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / CHECKPOINT_NAME
    identity = dict(model='u1_test_resnet', data='x')
    save_checkpoint(path, model, optimizer, None, epoch=1, step=5, identity=identity)
    before = path.read_bytes()

    def disk_full(obj, f, *args, **kwargs):
        Path(f).write_bytes(b'partial')
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(torch, 'save', disk_full)
    with pytest.raises(OSError, match='checkpoint.pt: the disk is full'):
        save_checkpoint(path, model, optimizer, None, epoch=2, step=10, identity=identity)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [CHECKPOINT_NAME]
    assert load_checkpoint(path, model, optimizer, identity=identity)['epoch'] == 1


def test_checkpoint_restores_rng_streams(tmp_path):
    model = timm.create_model('u1_test_resnet', num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters())
    torch.manual_seed(1)
    np.random.seed(1)
    save_checkpoint(tmp_path / 'c.pt', model, optimizer, None, 0, 0, {})
    expected = (torch.rand(3), np.random.rand(3))
    load_checkpoint(tmp_path / 'c.pt', model, optimizer)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_metrics_log_tolerates_only_a_torn_last_line(tmp_path):
    log = MetricsLog(tmp_path / METRICS_NAME)
    log.append({'epoch': 0})
    log.append({'epoch': 1})
    with open(log.path, 'a') as f:
        f.write('{"epoch": 2, "eval_')
    assert [r['epoch'] for r in log.read()] == [0, 1]
    log.truncate(1)
    assert log.read() == [{'epoch': 0}]
    log.path.write_text('{"epoch": 0\n{"epoch": 1}\n')
    with pytest.raises(ValueError, match='corrupt'):
        log.read()


# --- issue 10: runs you can trust -----------------------------------------------------------------

def _state(run: Path):
    return torch.load(run / CHECKPOINT_NAME, weights_only=True)


def test_extending_a_run_continues_on_the_longer_schedule(image_folder, tmp_path):
    """--epochs 1, then --epochs 3 --resume: the same run as --epochs 3 at once (lr > 0 in epochs 2-3)."""
    args = [a for a in BASE if a not in ('--epochs', '2')]
    out = tmp_path / 'extended'
    train_cli(['--data', str(image_folder), '--output', str(out), '--epochs', '1', *args])
    after_one = _state(out)['model']
    train_cli(['--data', str(image_folder), '--output', str(out), '--epochs', '3', '--resume', *args])
    records = _records(out)
    assert [r['epoch'] for r in records] == [0, 1, 2]
    assert all(r['lr'] > 0 for r in records)  # the lr used during each epoch
    assert records[1]['lr'] < records[0]['lr']  # cosine over 3 epochs, not 1
    after_three = _state(out)['model']
    convs = [k for k, v in after_one.items() if k.endswith('weight') and v.ndim == 4]
    assert convs and all(not torch.equal(after_one[k], after_three[k]) for k in convs)

    direct = tmp_path / 'direct'
    train_cli(['--data', str(image_folder), '--output', str(direct), '--epochs', '3', *args])
    assert _records(direct) == records
    for k, v in _state(direct)['model'].items():
        assert torch.equal(after_three[k], v), k


def test_resume_honours_safe_changes_and_refuses_run_changes(full_run, image_folder, tmp_path):
    out = tmp_path / 'copy'
    out.mkdir()
    (out / CHECKPOINT_NAME).write_bytes((full_run / CHECKPOINT_NAME).read_bytes())
    (out / METRICS_NAME).write_bytes((full_run / METRICS_NAME).read_bytes())
    before = (out / CHECKPOINT_NAME).read_bytes()
    for change, named in ((['--lr', '1e-2'], 'lr'), (['--batch-size', '4'], 'batch_size'),
                          (['--no-aug'], 'no_aug'), (['--smoothing', '0.1'], 'smoothing'),
                          (['--epochs', '1'], '--epochs')):
        with pytest.raises(ResumeMismatchError, match=named):
            train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, *change])
        assert (out / CHECKPOINT_NAME).read_bytes() == before  # nothing overwritten
    # progress bars, workers and export are not part of the run
    summary = train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, '--workers', '1',
                         '--no-export'])
    assert summary['final']['epoch'] == 1 and not (out / 'export').exists()


def _string_label_dataset(root: Path, eval_classes=('b', 'c')) -> Path:
    rng = np.random.default_rng(1)
    names = {'a': 0, 'b': 1, 'c': 2, 'd': 3}

    def rows(classes, n):
        images, labels = [], []
        for name in classes:
            for _ in range(n):
                arr = np.clip(np.array(COLOURS[names[name]]) + rng.normal(0, 20, (20, 20, 3)), 0, 255)
                images.append(Image.fromarray(arr.astype(np.uint8)))
                labels.append(name)
        return {'image': images, 'label': labels}

    import datasets

    dd = datasets.DatasetDict({'train': datasets.Dataset.from_dict(rows('abc', 6)),
                               'test': datasets.Dataset.from_dict(rows(eval_classes, 3))})
    assert dd['train'].features['label'].dtype == 'string'
    dd.save_to_disk(str(root))
    return root


def test_string_labels_share_the_training_class_list(tmp_path, monkeypatch):
    data = _string_label_dataset(tmp_path / 'strings')
    seen = []
    real_evaluate = training.evaluate

    def record_targets(forward, loader, *args, **kwargs):
        seen.extend(int(t) for _, target in loader for t in target)
        return real_evaluate(forward, loader, *args, **kwargs)

    monkeypatch.setattr(training, 'evaluate', record_targets)
    out = tmp_path / 'out'
    train_cli(['--data', str(data), '--output', str(out), *BASE, '--epochs', '1'])
    assert seen == [1] * 3 + [2] * 3  # 'b' and 'c' of ['a', 'b', 'c'], not 0 and 1 of ['b', 'c']
    config = json.loads((out / 'export' / 'config.json').read_text())
    assert config['label_names'] == ['a', 'b', 'c']


def test_eval_label_unseen_in_training_is_an_error(tmp_path):
    data = _string_label_dataset(tmp_path / 'strings', eval_classes=('b', 'd'))
    with pytest.raises(ValueError, match="'d'"):
        train_cli(['--data', str(data), '--output', str(tmp_path / 'out'), *BASE, '--epochs', '1'])
    assert not (tmp_path / 'out' / CHECKPOINT_NAME).exists()


def test_timm_data_config_of_the_export_reproduces_the_logged_top1(image_folder, tmp_path):
    """What validate.py does: resolve_data_config(model, use_test_size=True) + create_transform."""
    from timm.data import create_transform, resolve_data_config

    out = tmp_path / 'r10'
    train_cli(['--data', str(image_folder), '--output', str(out), '--model', 'resnet10t', '--img-size', '32',
               '--crop-pct', '0.8', '--batch-size', '8', '--epochs', '1', '--no-progress'])
    cfg = json.loads((out / 'export' / 'config.json').read_text())['pretrained_cfg']
    assert not {'tag', 'test_crop_pct', 'test_input_size', 'hf_hub_id', 'url'} & set(cfg)
    assert cfg['pool_size'] == [1, 1]  # 32 px / stride 32
    model = timm.create_model(f'local-dir:{out / "export"}', pretrained=True).eval()
    data_config = resolve_data_config({}, model=model, use_test_size=True)
    assert data_config['input_size'] == (3, 32, 32) and data_config['crop_pct'] == 0.8
    transform = create_transform(**data_config)
    ds = load_image_dataset(str(image_folder), split='test')
    with torch.no_grad():
        x = torch.stack([transform(row['image'].convert('RGB')) for row in ds])
        hits = (model(x).argmax(1) == torch.tensor(ds['label'])).float().mean().item() * 100
    assert hits == pytest.approx(MetricsLog(out / METRICS_NAME).read()[-1]['eval_top1'])


@pytest.fixture
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_launcher_mixed_precision_wins(image_folder, tmp_path, monkeypatch, fresh_accelerate_state):
    import accelerate

    made = []
    real_init = accelerate.Accelerator.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(accelerate.Accelerator, '__init__', spy)
    monkeypatch.setenv('ACCELERATE_MIXED_PRECISION', 'bf16')  # what accelerate launch --mixed_precision sets
    summary = train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'bf16'), *BASE, '--epochs', '1',
                         '--no-export'])
    assert made[0].mixed_precision == 'bf16' and summary['mixed_precision'] == 'bf16'


def test_world_size_the_accelerator_does_not_see_is_refused(image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv('WORLD_SIZE', '2')  # launched as 2 processes, but Accelerate sees 1 (no GPU, no gloo)
    with pytest.raises(RuntimeError, match='ACCELERATE_USE_CPU'):
        train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'ws'), *BASE])
    assert not (tmp_path / 'ws' / METRICS_NAME).exists()


def test_rerun_over_an_output_without_checkpoint_is_refused(full_run, image_folder, tmp_path):
    out = tmp_path / 'done'
    out.mkdir()
    for name in (METRICS_NAME, 'summary.json'):
        (out / name).write_bytes((full_run / name).read_bytes())
    before = (out / METRICS_NAME).read_bytes()
    for extra in ([], ['--resume']):
        with pytest.raises(ResumeMismatchError, match=METRICS_NAME):
            train_cli(['--data', str(image_folder), '--output', str(out), *BASE, *extra])
        assert (out / METRICS_NAME).read_bytes() == before


def test_streaming_training_runs_without_reading_the_label_column(image_folder, tmp_path, monkeypatch):
    import datasets

    def no_full_read(self, key):
        if isinstance(key, str):
            raise AssertionError(f'full read of column {key!r}')
        return real_getitem(self, key)

    real_getitem = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, '__getitem__', no_full_read)
    summary = train_cli(['--data', str(image_folder), '--output', str(tmp_path / 's'), *BASE, '--epochs', '1',
                         '--streaming', '--no-export'])
    assert summary['final']['eval_num_samples'] == 12 and summary['final']['step'] == 3


def test_two_cpu_processes_train_one_run_and_resume_it(tmp_path):
    """ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 (gloo), as docs/training.md says."""
    import subprocess
    import sys

    out = tmp_path / 'ddp'
    env = dict(os.environ, ACCELERATE_USE_CPU='1', PYTHONPATH=str(Path(timm_u1.__file__).parents[1]),
               OMP_NUM_THREADS='1')

    def launch(*extra):
        cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2',
               '--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no',
               '-m', 'timm_u1.cli.train', '--data', 'digits', '--model', 'test_resnet', '--img-size', '16',
               '--batch-size', '128', '--no-progress', '--output', str(out), *extra]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    stdout = launch('--epochs', '1')
    assert stdout.count('final eval top-1') == 1  # one process reports
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['num_processes'] == 2
    first, second = summary['parameters_sha256']
    assert first == second  # identical weights on both ranks
    state = _state(out)
    assert state['epoch'] == 1 and state['step'] == 6  # ceil(1347 / (2 x 128)) updates: the data is split
    rngs = state['rng_per_process']
    assert len(rngs) == 2 and not torch.equal(rngs[0]['torch'], rngs[1]['torch'])  # per-process seeds
    assert [r['eval_num_samples'] for r in MetricsLog(out / METRICS_NAME).read()] == [450]  # one writer
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.timm_u1.')) == \
        [CHECKPOINT_NAME, 'export', METRICS_NAME, 'summary.json']

    launch('--epochs', '2', '--resume')
    assert [r['epoch'] for r in MetricsLog(out / METRICS_NAME).read()] == [0, 1]
    summary = json.loads((out / 'summary.json').read_text())
    assert len(set(summary['parameters_sha256'])) == 1 and summary['parameters_sha256'][0] != first
    assert _state(out)['step'] == 12


def test_timm_train_py_device_modules_recipe_registers_the_twins():
    """timm's train.py --device-modules timm_u1 does importlib.import_module('timm_u1') before create_model."""
    import subprocess
    import sys

    code = ("import importlib, timm; importlib.import_module('timm_u1'); "
            "m = timm.create_model('u1_test_resnet', num_classes=10); "
            "assert timm.is_model('u1_resnet10t') and type(m).__name__.startswith('U1'), type(m)")
    env = dict(os.environ, PYTHONPATH=str(Path(timm_u1.__file__).parents[1]))
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_check_output_treats_an_empty_metrics_log_as_no_result(tmp_path):
    (tmp_path / METRICS_NAME).write_text('')  # a run stopped before its first epoch ended
    training.check_output(tmp_path, resume=False)
    MetricsLog(tmp_path / METRICS_NAME).append({'epoch': 0})
    training.check_output(tmp_path, resume=True)  # restarts the run that never reached a checkpoint
    with pytest.raises(ResumeMismatchError, match='new --output'):
        training.check_output(tmp_path, resume=False)


def test_single_dataset_folder_trains_with_eval_data(tmp_path):
    import datasets

    dd = datasets.load_from_disk(str(_string_label_dataset(tmp_path / 'dd', eval_classes=('c', 'a'))))
    dd['train'].save_to_disk(str(tmp_path / 'single'))
    with pytest.raises(ValueError, match='--eval-data'):
        train_cli(['--data', str(tmp_path / 'single'), '--output', str(tmp_path / 'no'), *BASE])
    summary = train_cli(['--data', str(tmp_path / 'single'), '--eval-data', str(tmp_path / 'dd'),
                         '--output', str(tmp_path / 'out'), *BASE, '--epochs', '1', '--no-export'])
    assert summary['classes'] == ['a', 'b', 'c'] and summary['final']['eval_num_samples'] == 6
