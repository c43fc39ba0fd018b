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
from timm_u1.cli.train import add_arguments, config_from_args
from timm_u1.data import load_image_dataset, make_loader
from timm_u1.errors import ResumeMismatchError
from timm_u1.training import METRICS_NAME, MetricsLog, evaluate, latest_checkpoint, loop, train
from timm_u1.training.checkpoint import (
    CHECKPOINTS_NAME, STATE_NAME, Progress, check_output, checkpoint_folders, load_checkpoint, save_checkpoint,
)
from timm_u1.training.inputs import check_labels


def train_cli(argv):
    """``timm-u1 train ARGV``, without the error-to-exit-code mapping: returns the run's summary."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return train(config_from_args(parser.parse_args(argv)))


def _progress(run: Path) -> dict:
    """The trainer_state.json of a run's newest checkpoint."""
    return json.loads((latest_checkpoint(run) / STATE_NAME).read_text())


def _weights(run: Path) -> dict:
    """The model weights of a run's newest checkpoint."""
    from safetensors.torch import load_file

    return load_file(latest_checkpoint(run) / 'model.safetensors')


def _copy_run(run: Path, to: Path, *names: str) -> Path:
    """A copy of a run's checkpoints (and the named files) in a new folder."""
    import shutil

    to.mkdir()
    shutil.copytree(run / CHECKPOINTS_NAME, to / CHECKPOINTS_NAME)
    for name in names:
        (to / name).write_bytes((run / name).read_bytes())
    return to

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
    state = _progress(full_run)
    assert state['epoch'] == 2 and state['batch'] == 0 and state['step'] == 2 * 3  # 24 images / batch 8
    assert [p.name for p in checkpoint_folders(full_run)] == ['step_00000006']  # --keep-checkpoints 1
    assert sorted(p.name for p in (full_run / CHECKPOINTS_NAME).iterdir()) == ['step_00000006']  # no partial
    assert not [p for p in full_run.iterdir() if p.name.endswith('.tmp')]
    best = json.loads((full_run / 'best' / 'config.json').read_text())
    assert best['timm_u1']['card']['metrics']['top1'] == round(max(r['eval_top1'] for r in records), 4)


def test_interrupted_run_resumes_to_the_same_state(full_run, image_folder, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    real_evaluate = loop.evaluate
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the run were killed at the end of epoch 2's training
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, 'evaluate', crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE])
    monkeypatch.setattr(loop, 'evaluate', real_evaluate)
    assert _progress(out)['epoch'] == 1
    MetricsLog(out / METRICS_NAME).append({'epoch': 1, 'torn': True})  # a record past the checkpoint

    with pytest.raises(ResumeMismatchError, match='--resume'):
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE])
    train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE])

    assert _records(out) == _records(full_run)
    resumed, uninterrupted = _weights(out), _weights(full_run)
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
    out = _copy_run(full_run, tmp_path / 'copy')
    with pytest.raises(ResumeMismatchError, match='train_data'):
        train_cli(['--data', str(other), '--output', str(out), '--resume', *BASE])


def test_finetune_resets_a_mismatched_head_with_spatial_loss_and_mixup(full_run, tmp_path, caplog):
    data = make_image_folder(tmp_path / 'four', num_classes=4, train_per_class=4, test_per_class=2)
    out = tmp_path / 'ft'
    caplog.set_level('INFO', logger='timm_u1')
    summary = train_cli([
        '--data', str(data), '--output', str(out), '--model', str(full_run / 'export'), '--pretrained',
        '--img-size', '32', '--batch-size', '8', '--epochs', '1', '--spatial', '--mixup', '0.2',
        '--grad-accum', '2', '--no-progress'])
    assert 'replacing it with a new 4-class head' in caplog.text
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


@pytest.fixture
def accelerator(fresh_accelerate_state):
    """A one-process Accelerator that has prepared a tiny twin and its optimizer."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    model = timm.create_model('u1_test_resnet', num_classes=3)
    acc.prepare(model, torch.optim.AdamW(model.parameters()))
    return acc


def test_failed_checkpoint_write_keeps_the_previous_one(accelerator, tmp_path, monkeypatch):
    identity = dict(architecture='u1_test_resnet', train_data='x')
    save_checkpoint(accelerator, tmp_path, Progress(epoch=1, step=5), identity, keep=1)
    first = checkpoint_folders(tmp_path)
    real_save = accelerator.save_state

    def disk_full(output_dir, **kwargs):
        real_save(output_dir=output_dir, **kwargs)  # written, then the disk fills before the state file
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(accelerator, 'save_state', disk_full)
    with pytest.raises(OSError, match='No space'):
        save_checkpoint(accelerator, tmp_path, Progress(epoch=2, step=10), identity, keep=1)
    monkeypatch.undo()
    assert checkpoint_folders(tmp_path) == first  # the partial folder is not a checkpoint, the old one is kept
    assert load_checkpoint(accelerator, first[0], identity).epoch == 1
    save_checkpoint(accelerator, tmp_path, Progress(epoch=2, step=10), identity, keep=1)
    assert sorted(p.name for p in (tmp_path / CHECKPOINTS_NAME).iterdir()) == ['step_00000010']  # partial swept


def test_checkpoint_restores_rng_streams_and_checks_its_fields(accelerator, tmp_path):
    import random

    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    folder = save_checkpoint(accelerator, tmp_path, Progress(), {}, keep=1)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    load_checkpoint(accelerator, folder, {})
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]
    state = json.loads((folder / STATE_NAME).read_text())
    for field, bad in (('step', -1), ('epoch', 'one'), ('sums', [0, 0]), ('best_top1', 'x')):
        (folder / STATE_NAME).write_text(json.dumps(dict(state, **{field: bad})))
        with pytest.raises(ValueError, match=f"field '{field}'"):
            load_checkpoint(accelerator, folder, {})
    (folder / 'random_states_0.pkl').write_bytes(b'torn')
    (folder / STATE_NAME).write_text(json.dumps(state))
    with pytest.raises(ValueError, match='random_states_0.pkl'):
        load_checkpoint(accelerator, folder, {})


def test_a_checkpoint_of_timm_u1_0_1_is_refused_with_how_to_restart(image_folder, tmp_path):
    out = tmp_path / 'old'
    out.mkdir()
    (out / 'checkpoint.pt').write_bytes(b'0.1')
    for extra in ([], ['--resume']):
        with pytest.raises(ResumeMismatchError, match='new --output'):
            train_cli(['--data', str(image_folder), '--output', str(out), *BASE, *extra])


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

def test_extending_a_run_continues_on_the_longer_schedule(image_folder, tmp_path):
    """--epochs 1, then --epochs 3 --resume: the same run as --epochs 3 at once (lr > 0 in epochs 2-3)."""
    args = [a for a in BASE if a not in ('--epochs', '2')]
    out = tmp_path / 'extended'
    train_cli(['--data', str(image_folder), '--output', str(out), '--epochs', '1', *args])
    after_one = _weights(out)
    train_cli(['--data', str(image_folder), '--output', str(out), '--epochs', '3', '--resume', *args])
    records = _records(out)
    assert [r['epoch'] for r in records] == [0, 1, 2]
    assert all(r['lr'] > 0 for r in records)  # the lr used during each epoch
    assert records[1]['lr'] < records[0]['lr']  # cosine over 3 epochs, not 1
    after_three = _weights(out)
    convs = [k for k, v in after_one.items() if k.endswith('weight') and v.ndim == 4]
    assert convs and all(not torch.equal(after_one[k], after_three[k]) for k in convs)

    direct = tmp_path / 'direct'
    train_cli(['--data', str(image_folder), '--output', str(direct), '--epochs', '3', *args])
    assert _records(direct) == records
    for k, v in _weights(direct).items():
        assert torch.equal(after_three[k], v), k


def test_resume_honours_safe_changes_and_refuses_run_changes(full_run, image_folder, tmp_path):
    out = _copy_run(full_run, tmp_path / 'copy', METRICS_NAME)
    before = (latest_checkpoint(out) / STATE_NAME).read_bytes()
    for change, named in ((['--lr', '1e-2'], 'lr'), (['--batch-size', '4'], 'batch_size'),
                          (['--no-aug'], 'no_aug'), (['--smoothing', '0.1'], 'smoothing'),
                          (['--epochs', '1'], '--epochs')):
        with pytest.raises(ResumeMismatchError, match=named):
            train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, *change])
        assert (latest_checkpoint(out) / STATE_NAME).read_bytes() == before  # nothing overwritten
    # progress bars, workers and export are not part of the run
    summary = train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, '--workers', '1',
                         '--no-export'])
    assert summary['final']['epoch'] == 1 and not (out / 'export').exists()


def test_license_reaches_the_export_and_may_change_on_resume(full_run, image_folder, tmp_path):
    from huggingface_hub import ModelCard

    assert ModelCard.load(full_run / 'export' / 'README.md').data.license == 'apache-2.0'  # timm's, of test_resnet
    out = _copy_run(full_run, tmp_path / 'copy', METRICS_NAME)
    train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, '--license', 'mit'])
    # a finished run resumed only re-exports (best/ is written when an evaluation improves on it)
    assert ModelCard.load(out / 'export' / 'README.md').data.license == 'mit'
    assert json.loads((out / 'export' / 'config.json').read_text())['timm_u1']['card']['license'] == 'mit'


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
    real_evaluate = loop.evaluate

    def record_targets(forward, loader, *args, **kwargs):
        seen.extend(int(t) for _, target in loader for t in target)
        return real_evaluate(forward, loader, *args, **kwargs)

    monkeypatch.setattr(loop, 'evaluate', record_targets)
    out = tmp_path / 'out'
    train_cli(['--data', str(data), '--output', str(out), *BASE, '--epochs', '1'])
    assert seen == [1] * 3 + [2] * 3  # 'b' and 'c' of ['a', 'b', 'c'], not 0 and 1 of ['b', 'c']
    config = json.loads((out / 'export' / 'config.json').read_text())
    assert config['label_names'] == ['a', 'b', 'c']


def test_eval_label_unseen_in_training_is_an_error(tmp_path):
    data = _string_label_dataset(tmp_path / 'strings', eval_classes=('b', 'd'))
    with pytest.raises(ValueError, match="'d'"):
        train_cli(['--data', str(data), '--output', str(tmp_path / 'out'), *BASE, '--epochs', '1'])
    assert not (tmp_path / 'out' / CHECKPOINTS_NAME).exists()


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

    from accelerate.utils import load

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
    state = _progress(out)
    assert state['epoch'] == 1 and state['step'] == 5  # 1347 // 128 whole batches, split over 2 processes
    rngs = [load(latest_checkpoint(out) / f'random_states_{i}.pkl')['torch_manual_seed']
            for i in range(2)]
    assert not torch.equal(rngs[0], rngs[1])  # per-process seeds
    assert [r['eval_num_samples'] for r in MetricsLog(out / METRICS_NAME).read()] == [450]  # one writer
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith('.timm_u1.')) == \
        ['best', CHECKPOINTS_NAME, 'export', METRICS_NAME, 'summary.json']

    launch('--epochs', '2', '--resume')
    assert [r['epoch'] for r in MetricsLog(out / METRICS_NAME).read()] == [0, 1]
    summary = json.loads((out / 'summary.json').read_text())
    assert len(set(summary['parameters_sha256'])) == 1 and summary['parameters_sha256'][0] != first
    assert _progress(out)['step'] == 10


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
    check_output(tmp_path, resume=False)
    MetricsLog(tmp_path / METRICS_NAME).append({'epoch': 0})
    check_output(tmp_path, resume=True)  # restarts the run that never reached a checkpoint
    with pytest.raises(ResumeMismatchError, match='new --output'):
        check_output(tmp_path, resume=False)


def test_single_dataset_folder_trains_with_eval_data(tmp_path):
    import datasets

    dd = datasets.load_from_disk(str(_string_label_dataset(tmp_path / 'dd', eval_classes=('c', 'a'))))
    dd['train'].save_to_disk(str(tmp_path / 'single'))
    with pytest.raises(ValueError, match='--eval-data'):
        train_cli(['--data', str(tmp_path / 'single'), '--output', str(tmp_path / 'no'), *BASE])
    summary = train_cli(['--data', str(tmp_path / 'single'), '--eval-data', str(tmp_path / 'dd'),
                         '--output', str(tmp_path / 'out'), *BASE, '--epochs', '1', '--no-export'])
    assert summary['classes'] == ['a', 'b', 'c'] and summary['final']['eval_num_samples'] == 6


# --- issue 20 / 23: what ran is what is recorded ------------------------------------------------

def _parse_error(argv, capsys):
    """The one-line error argparse prints for ``timm-u1 train ARGV`` (exit 2), or None if it parsed."""
    from timm_u1.cli.options import Parser

    parser = Parser(prog='timm-u1 train')
    add_arguments(parser)
    try:
        parser.parse_args(argv)
    except SystemExit as e:
        assert e.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]
    return None


@pytest.mark.parametrize('option, value, expected', [
    ('--img-size', '0', '>= 1'), ('--img-size', '-8', '>= 1'), ('--crop-pct', '0', '(0, 1]'),
    ('--crop-pct', 'nan', '(0, 1]'), ('--hflip', '5', '[0, 1]'), ('--warmup-epochs', '-5', '>= 0'),
    ('--mixup', '-1', '>= 0'), ('--cutmix', '-1', '>= 0'), ('--sched', 'none', 'cosine'),
    ('--seed', str(10 ** 23), '[0, 4294967295]'), ('--model', '', 'empty'), ('--clip-grad', '-1', '> 0'),
    ('--clip-grad', '0', '> 0'), ('--lr', '0', '> 0'), ('--lr', 'inf', '> 0'), ('--smoothing', '1', '[0, 1)'),
    ('--weight-decay', '-1', '>= 0'), ('--color-jitter', '-0.1', '>= 0'), ('--hue-weight', '-1', '>= 0'),
    ('--drop-rate', '1', '[0, 1)'), ('--scale', '0 1', '(0, 1]'), ('--opt', '', "timm's optimizers"),
    ('--license', 'apache', 'Hub licence id'),
])
def test_every_option_is_checked_when_parsed(option, value, expected, capsys):
    message = _parse_error(['--output', 'out', option, *value.split(' ')], capsys)
    assert message is not None, f'{option} {value} was accepted'
    assert option in message and expected in message, message


def test_scale_must_be_an_increasing_pair(image_folder, tmp_path):
    with pytest.raises(ValueError, match='--scale'):
        train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'o'), *BASE, '--scale', '0.9', '0.5'])


def test_resume_refuses_images_replaced_in_place(tmp_path):
    """Same file names and labels, other pixels: the run identity holds what the data is."""
    data = make_image_folder(tmp_path / 'data')
    out = tmp_path / 'run'
    args = [a for a in BASE if a not in ('--epochs', '2')]
    train_cli(['--data', str(data), '--output', str(out), '--epochs', '1', *args])
    for png in sorted((data / 'train').rglob('*.png'))[:3]:
        Image.new('RGB', (24, 24), (7, 7, 7)).save(png)  # replaced in place
    with pytest.raises(ResumeMismatchError, match='train_data'):
        train_cli(['--data', str(data), '--output', str(out), '--epochs', '2', '--resume', *args])


def test_resume_refusal_names_each_setting_with_both_values(full_run, image_folder, tmp_path):
    out = tmp_path / 'copy'
    train_cli(['--data', str(image_folder), '--output', str(out), *BASE, '--epochs', '1', '--no-export'])
    with pytest.raises(ResumeMismatchError) as refused:
        train_cli(['--data', str(image_folder), '--output', str(out), '--resume', *BASE, '--lr', '1e-2',
                   '--hflip', '0'])
    message = str(refused.value)
    assert 'lr: 0.003 there, 0.01 now' in message and 'hflip: 0.5 there, 0.0 now' in message
    assert len(message) < 400 and '\n' not in message, message


def test_a_last_batch_of_one_image_does_not_stop_training(image_folder, tmp_path):
    """24 images, batch 23: timm's loop drops the incomplete last batch (BatchNorm needs 2 values)."""
    summary = train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'o'), *BASE,
                         '--batch-size', '23', '--epochs', '1', '--no-export'])
    assert summary['final']['step'] == 1


def test_fp16_on_cpu_is_refused_not_recorded(image_folder, tmp_path, fresh_accelerate_state):
    """Accelerate computes in fp32 on a CPU asked for fp16; a run must not record fp16."""
    with pytest.raises(ValueError, match='fp16'):
        train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'o'), *BASE, '--epochs', '1',
                   '--mixed-precision', 'fp16', '--no-export'])
    assert not (tmp_path / 'o' / METRICS_NAME).exists()


def test_launcher_gradient_accumulation_that_differs_is_refused(image_folder, tmp_path, monkeypatch,
                                                                 fresh_accelerate_state):
    # what accelerate launch --gradient_accumulation_steps 4 sets
    monkeypatch.setenv('ACCELERATE_GRADIENT_ACCUMULATION_STEPS', '4')
    with pytest.raises(ValueError, match='ACCELERATE_GRADIENT_ACCUMULATION_STEPS=4.*--grad-accum 1'):
        train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'o'), *BASE, '--epochs', '1'])
    summary = train_cli(['--data', str(image_folder), '--output', str(tmp_path / 'o4'), *BASE, '--epochs', '1',
                         '--grad-accum', '4', '--no-export'])
    assert summary['final']['step'] == 1 and summary['gradient_accumulation_steps'] == 4  # 3 batches, one update


def test_summary_and_export_are_written_before_the_figures(image_folder, tmp_path, monkeypatch):
    """Without matplotlib a run keeps its results: the figure comes last."""
    import sys

    monkeypatch.setitem(sys.modules, 'matplotlib.figure', None)  # `from matplotlib.figure import ...` fails
    out = tmp_path / 'o'
    try:
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE, '--epochs', '1'])
    except ImportError:
        pass  # a failed figure may end the call (timm_u1.figures decides), but not before the results
    assert json.loads((out / 'summary.json').read_text())['final']['epoch'] == 0
    assert (out / 'export' / 'config.json').is_file() and (out / 'export' / 'model.safetensors').is_file()


# --- issue 23: trackers, step checkpoints, keep-N, best, EMA and timm's recipe options ------------

def test_tensorboard_event_files_hold_the_run_scalars(image_folder, tmp_path):
    """What a user watches in TensorBoard: loss parts, lr, top-1 / top-5, images/s, at the update count."""
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / 'tb'
    train_cli(['--data', str(image_folder), '--output', str(out), *BASE, '--no-export', '--log-with', 'tensorboard',
               '--log-interval', '2'])
    runs = [p for p in (out / 'logs').iterdir() if p.is_dir()]
    assert len(runs) == 1 and list(runs[0].glob('events.out.tfevents.*'))
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    tags = set(events.Tags()['scalars'])
    assert {'train/loss', 'train/ce', 'train/hue', 'train/lr', 'train/images_per_s', 'eval/top1', 'eval/top5',
            'eval/loss', 'eval/hue_error_deg', 'step/loss', 'step/lr'} <= tags, tags
    records = MetricsLog(out / METRICS_NAME).read()
    top1 = events.Scalars('eval/top1')
    assert [e.step for e in top1] == [r['step'] for r in records] == [3, 6]
    assert [e.value for e in top1] == pytest.approx([r['eval_top1'] for r in records])
    assert [e.step for e in events.Scalars('step/loss')] == [2, 4, 6]


def test_log_with_names_only_installed_trackers(capsys):
    import importlib.util

    assert 'not a tracker' in _parse_error(['--output', 'o', '--log-with', 'nope'], capsys)
    missing = [name for name in ('wandb', 'trackio') if importlib.util.find_spec(name) is None]
    for name in missing:
        message = _parse_error(['--output', 'o', '--log-with', name], capsys)
        assert f'pip install {name}' in message and '--log-with' in message, message


def test_a_run_killed_mid_epoch_resumes_from_its_step_checkpoint_exactly(full_run, image_folder, tmp_path,
                                                                         monkeypatch):
    steps = ['--checkpoint-every-steps', '2', '--keep-checkpoints', '2', '--drop-rate', '0.2', '--mixup', '0.4']
    straight = tmp_path / 'straight'
    train_cli(['--data', str(image_folder), '--output', str(straight), *BASE, *steps, '--no-export'])
    real_step = loop.train_step
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # epoch 2, batch 2: after the step checkpoint of update 4
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    out = tmp_path / 'killed'
    monkeypatch.setattr(loop, 'train_step', killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE, *steps, '--no-export'])
    monkeypatch.undo()
    assert [p.name for p in checkpoint_folders(out)] == ['step_00000003', 'step_00000004']  # keep 2
    assert (_progress(out)['epoch'], _progress(out)['batch']) == (1, 1)
    train_cli(['--data', str(image_folder), '--output', str(out), *BASE, *steps, '--no-export', '--resume'])
    assert _records(out) == _records(straight)
    for k, v in _weights(straight).items():
        assert torch.equal(_weights(out)[k], v), k


def test_step_checkpoints_do_not_change_the_run(full_run, image_folder, tmp_path):
    out = tmp_path / 'stepped'
    train_cli(['--data', str(image_folder), '--output', str(out), *BASE, '--checkpoint-every-steps', '1',
               '--keep-checkpoints', '3', '--no-export'])
    assert [p.name for p in checkpoint_folders(out)] == ['step_00000004', 'step_00000005', 'step_00000006']
    for k, v in _weights(full_run).items():
        assert torch.equal(_weights(out)[k], v), k
    assert [r['eval_top1'] for r in _records(out)] == [r['eval_top1'] for r in _records(full_run)]


def test_timm_recipe_options_ema_randaugment_drop_path_and_compile(image_folder, tmp_path, fresh_accelerate_state):
    out = tmp_path / 'recipe'
    summary = train_cli([
        '--data', str(image_folder), '--output', str(out), *BASE, '--model', 'resnet10t', '--aa', 'rand-m9-mstd0.5',
        '--drop-path', '0.1', '--model-ema', '--model-ema-decay', '0.5', '--torchcompile', 'eager'])
    assert summary['compile'] == 'eager' and summary['exported'] == 'ema'
    record = summary['final']
    assert {'eval_ema_top1', 'eval_ema_loss', 'eval_top1'} <= set(record)
    assert 100 * summary['final_correct'].count('1') / 12 == pytest.approx(record['eval_ema_top1'])
    assert summary['best']['top1'] == max(r['eval_ema_top1'] for r in MetricsLog(out / METRICS_NAME).read())
    exported = timm_u1.from_pretrained(out / 'export').eval()
    from safetensors.torch import load_file

    ema = load_file(latest_checkpoint(out) / 'model_1.safetensors')  # the EMA, saved beside the model
    model_weights = _weights(out)
    conv = next(k for k in exported.state_dict() if k.endswith('conv1.0.weight'))
    ema_conv = next(v for k, v in ema.items() if k.endswith(conv))
    assert torch.equal(exported.state_dict()[conv], ema_conv)
    assert not torch.equal(ema_conv, next(v for k, v in model_weights.items() if k.endswith(conv)))
    with pytest.raises(ResumeMismatchError, match='model_ema'):  # EMA is part of what the run computes
        train_cli(['--data', str(image_folder), '--output', str(out), *BASE, '--model', 'resnet10t', '--aa',
                   'rand-m9-mstd0.5', '--drop-path', '0.1', '--torchcompile', 'eager', '--epochs', '3', '--resume'])


def test_drop_path_and_randaugment_reach_timm(image_folder, tmp_path):
    from timm_u1.training.config import TrainConfig
    from timm_u1.training.inputs import load_run_data, make_run_loaders
    from timm_u1.training.model import create_train_model

    args = TrainConfig(output=tmp_path, data=str(image_folder), model='resnet10t', drop_path=0.1,
                       aa='rand-m9-mstd0.5', batch_size=8)
    model = create_train_model(args, 3)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert rates and max(rates) == pytest.approx(0.1)  # timm's linear decay over the blocks, up to --drop-path
    train_loader, _ = make_run_loaders(args, load_run_data(args), dict(input_size=(3, 32, 32)))
    assert 'RandAugment' in repr(train_loader.dataset.base.transform)


def test_recipe_options_are_checked_when_parsed(capsys):
    assert 'rand-m9-mstd0.5' in _parse_error(['--output', 'o', '--aa', 'rand-x9'], capsys)
    assert 'inductor' in _parse_error(['--output', 'o', '--torchcompile', 'fast'], capsys)
    assert '(0, 1)' in _parse_error(['--output', 'o', '--model-ema-decay', '1'], capsys)
    assert '>= 1' in _parse_error(['--output', 'o', '--keep-checkpoints', '0'], capsys)
    assert '>= 0' in _parse_error(['--output', 'o', '--checkpoint-every-steps', '-1'], capsys)


# --- the scripts, at their smallest setting ------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _script(*argv, timeout=600):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_scripts_train_py_trains_and_exports(image_folder, tmp_path):
    out = tmp_path / 'script'
    stdout = _script(str(REPO / 'scripts' / 'train.py'), '--data', str(image_folder), '--output', str(out), *BASE,
                     '--epochs', '1')
    assert 'final eval top-1' in stdout and (out / 'export' / 'config.json').is_file()


def test_bench_train_prints_ratios_against_timm_and_the_trainer_before(tmp_path):
    """scripts/bench_train.py at its smallest setting, --before pointing at this same tree."""
    stdout = _script(str(REPO / 'scripts' / 'bench_train.py'), '--img-size', '16', '--images', '128',
                     '--repeats', '1', '--threads', '1', '--before', str(REPO))
    rows = {line[:18].strip(): line.split() for line in stdout.splitlines() if line.endswith(tuple('0123456789'))}
    assert {'timm', 'train.py CE', 'train.py CE+U(1)', 'before: CE', 'before: CE+U(1)'} <= set(rows), stdout
    assert rows['timm'][-4] == rows['timm'][-2] == '1.00x'  # wall-clock and CPU-time ratios
    assert all(float(r[-2].rstrip('x')) > 0 and float(r[-4].rstrip('x')) > 0 for r in rows.values())


def test_the_old_trainer_module_and_checkpoint_name_still_import_with_a_warning():
    import importlib
    import sys

    import timm_u1.training as package

    sys.modules.pop('timm_u1.training.trainer', None)
    with pytest.warns(DeprecationWarning, match='timm_u1.training.trainer moved'):
        old = importlib.import_module('timm_u1.training.trainer')
    assert old.TrainConfig is package.TrainConfig and old.train is package.train and old.check_labels is check_labels
    with pytest.warns(DeprecationWarning, match='has_checkpoint'):
        assert package.CHECKPOINT_NAME == 'checkpoint.pt'
