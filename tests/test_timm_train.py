"""U1Loss inside timm's own train.py: the task and criterion (no train.py needed), the hook (on a small
script built like train.py), and one epoch of the real train.py when ``TIMM_TRAIN_PY`` points at it."""
import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image

import timm
import timm_u1
from timm.data import Mixup
from timm.loss import BinaryCrossEntropy, JsdCrossEntropy, LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm_u1.core.loss import U1Loss
from timm_u1.core.u1 import U1Config, U1Output
from timm_u1.training.timm_train import TimmTrainScript, U1ClassificationTask, u1_criterion, u1_task

NUM_CLASSES = 5


def _batch(seed=0, batch=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, NUM_CLASSES, generator=g) * 3, torch.randint(0, NUM_CLASSES, (batch,), generator=g)


def _mixup_targets(target, smoothing):
    mixup = Mixup(mixup_alpha=0.4, label_smoothing=smoothing, num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    _, soft = mixup(torch.zeros(len(target), 3, 4, 4), target)
    return soft


@pytest.mark.parametrize('criterion, soft', [
    (nn.CrossEntropyLoss(), False),
    (nn.CrossEntropyLoss(label_smoothing=0.1), False),
    (LabelSmoothingCrossEntropy(smoothing=0.1), False),
    (SoftTargetCrossEntropy(), True),  # what train.py chooses with --mixup / --cutmix (smoothing in the targets)
])
def test_u1_criterion_is_the_timm_criterion_plus_the_hue_term(criterion, soft):
    logits, target = _batch()
    if soft:
        target = _mixup_targets(target, smoothing=0.1)
    expected = criterion(logits, target)
    parts = u1_criterion(criterion, U1Config(hue_weight=0.7)).parts(logits, target)
    assert torch.allclose(parts.ce, expected, atol=1e-6)
    assert 0 < float(parts.hue) <= 2  # 1 - cos of an angle difference, averaged
    assert torch.allclose(parts.total, expected + 0.7 * parts.hue, atol=1e-6)
    zero = u1_criterion(criterion, U1Config(hue_weight=0.0))(logits, target)
    assert torch.allclose(zero, expected, atol=1e-6)


@pytest.mark.parametrize('criterion, flag', [
    (BinaryCrossEntropy(), '--bce-loss'),
    (JsdCrossEntropy(num_splits=2), '--jsd-loss'),
    (nn.CrossEntropyLoss(weight=torch.ones(NUM_CLASSES)), 'weight'),
])
def test_u1_criterion_refuses_losses_it_does_not_extend(criterion, flag):
    with pytest.raises(ValueError, match=flag) as info:
        u1_criterion(criterion, U1Config())
    assert '\n' not in str(info.value)


def _twin():
    torch.manual_seed(0)
    return timm.create_model('u1_test_resnet', num_classes=NUM_CLASSES)


def test_task_returns_the_loss_its_parts_and_the_logits():
    model = _twin()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    task = U1ClassificationTask(model, criterion=LabelSmoothingCrossEntropy(0.1), u1=U1Config(hue_weight=0.5))
    model.train()
    result = task(x, y)
    expected = U1Loss(hue_weight=0.5, smoothing=0.1).parts(model(x), y)
    assert torch.allclose(result['loss'], expected.total, atol=1e-5)
    assert torch.allclose(result['ce'], expected.ce, atol=1e-5) and torch.allclose(result['hue'], expected.hue, atol=1e-5)
    assert result['output'].shape == (4, NUM_CLASSES)
    result['loss'].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_spatial_task_trains_on_forward_u1_and_evaluates_exports_and_averages_plain_logits():
    model = _twin()
    reference = _twin()  # same weights: the spatial loss computed directly
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    task = U1ClassificationTask(model, criterion=nn.CrossEntropyLoss(), u1=U1Config(hue_weight=1.0, spatial=True))
    task.train()
    result = task(x, y)
    expected = U1Loss(hue_weight=1.0, spatial=True).parts(reference.train().forward_u1(x, spatial=True), y)
    assert torch.allclose(result['loss'], expected.total, atol=1e-5)
    assert isinstance(result['output'], torch.Tensor) and result['output'].shape == (4, NUM_CLASSES)
    # validation, EMA and checkpoints see the plain model: logits in eval mode, the base model's keys
    eval_model = task.get_eval_model().eval()
    assert isinstance(eval_model(x), torch.Tensor)
    state = task.get_checkpoint_state()['state_dict']
    assert set(state) == set(timm.create_model('test_resnet', num_classes=NUM_CLASSES).state_dict())
    task.setup_ema(decay=0.5)
    task.update_ema(step=1)
    assert isinstance(task.get_eval_model(ema=True)(x), torch.Tensor)


@pytest.mark.parametrize('spatial', [False, True])
def test_task_trains_under_distributed_data_parallel(tmp_path, spatial):
    """What train.py does under torchrun: task.prepare_distributed() wraps the model in DDP (one gloo process)."""
    import torch.distributed as dist

    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        model = _twin()
        task = U1ClassificationTask(model, criterion=SoftTargetCrossEntropy(),
                                    u1=U1Config(hue_weight=1.0, spatial=spatial)).prepare_distributed()
        assert isinstance(task.get_trainable_module(), nn.parallel.DistributedDataParallel)
        task.train()
        x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
        result = task(x, _mixup_like(y))
        result['loss'].backward()  # DDP's reducer saw the forward: the all-reduce runs
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        assert result['output'].shape == (4, NUM_CLASSES)
    finally:
        dist.destroy_process_group()


def _mixup_like(target):
    soft = torch.full((len(target), NUM_CLASSES), 0.1 / NUM_CLASSES)
    return soft + 0.9 * nn.functional.one_hot(target, NUM_CLASSES)


def test_spatial_task_needs_a_twin():
    plain = timm.create_model('test_resnet', num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match='u1_test_resnet'):
        U1ClassificationTask(plain, criterion=nn.CrossEntropyLoss(), u1=U1Config(spatial=True))


def test_u1_task_gives_other_tasks_a_u1_criterion():
    from timm.task import TrainingTask

    class Distilling(TrainingTask):  # the shape of timm's distillation tasks: a criterion attribute
        def __init__(self, student_model, criterion, device=None):
            super().__init__(device=device)
            self.student, self.criterion = student_model, criterion

    task = u1_task(Distilling, U1Config(hue_weight=0.25))(student_model=_twin(), criterion=SoftTargetCrossEntropy())
    assert isinstance(task, Distilling) and isinstance(task.criterion, U1Loss) and task.criterion.hue_weight == 0.25
    with pytest.raises(ValueError, match='--spatial'):
        u1_task(Distilling, U1Config(spatial=True))(student_model=_twin(), criterion=SoftTargetCrossEntropy())


# a script with the structure of timm's train.py that the hook relies on: a module-level `parser`,
# task classes imported from timm.task, a main() that parses sys.argv and builds its task from them
FAKE_TRAIN_PY = '''
import argparse, json, sys
import torch
import timm
from timm.loss import LabelSmoothingCrossEntropy
from timm.task import ClassificationTask

parser = argparse.ArgumentParser()
parser.add_argument('--model', default='u1_test_resnet')
parser.add_argument('--smoothing', type=float, default=0.0)
parser.add_argument('--bce-loss', action='store_true')
parser.add_argument('--output', required=True)


def main():
    args = parser.parse_args()
    model = timm.create_model(args.model, num_classes=5)
    task = ClassificationTask(model=model, criterion=LabelSmoothingCrossEntropy(args.smoothing), device=torch.device('cpu'))
    result = task(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    result['loss'].backward()
    with open(args.output, 'w') as f:
        json.dump({'task': type(task).__name__, 'criterion': repr(task.criterion), 'argv': sys.argv[1:],
                   'hue_weight': args.hue_weight}, f)


if __name__ == '__main__':
    raise SystemExit('the hook must not run main() when it loads the script')
'''


def _add_u1_options(parser):
    parser.add_argument('--hue-weight', type=float, default=1.0)


def test_script_runs_with_its_task_given_a_u1_loss(tmp_path):
    path = tmp_path / 'train.py'
    path.write_text(FAKE_TRAIN_PY)
    script = TimmTrainScript(path)
    assert script.tested is None  # not a train.py of a tested timm commit
    _add_u1_options(script.parser)
    script.use_u1_loss(lambda args: U1Config(hue_weight=args.hue_weight))
    argv_before = list(sys.argv)
    script.run(['--smoothing', '0.1', '--hue-weight', '0.3', '--output', str(tmp_path / 'out.json')])
    assert sys.argv == argv_before
    out = json.loads((tmp_path / 'out.json').read_text())
    assert out['task'] == 'U1ClassificationTask' and out['hue_weight'] == 0.3
    assert 'hue_weight=0.3' in out['criterion'] and 'smoothing=0.1' in out['criterion']


def test_a_script_that_is_not_timm_train_py_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match='train.py'):
        TimmTrainScript(tmp_path / 'missing.py')
    (tmp_path / 'other.py').write_text('def main():\n    pass\n')
    with pytest.raises(ValueError, match='parser'):
        TimmTrainScript(tmp_path / 'other.py')
    (tmp_path / 'no_task.py').write_text(FAKE_TRAIN_PY.replace('from timm.task import ClassificationTask\n', ''))
    with pytest.raises(ValueError, match='timm.task'):
        TimmTrainScript(tmp_path / 'no_task.py')


def test_cli_options_are_validated_when_parsed(tmp_path, capsys):
    from timm_u1.cli import main as cli_main

    path = tmp_path / 'train.py'
    path.write_text(FAKE_TRAIN_PY)
    out = tmp_path / 'out.json'
    with pytest.raises(SystemExit):
        cli_main(['timm-train', str(path), '--hue-weight', '-1', '--output', str(out)])
    assert '--hue-weight: must be a finite number >= 0, got -1' in capsys.readouterr().err
    assert cli_main(['timm-train', str(path), '--spatial', '--hue-weight', '0', '--output', str(out)]) == 1
    assert '--spatial' in capsys.readouterr().err and not out.exists()
    assert cli_main(['timm-train', str(path), '--bce-loss', '--output', str(out)]) == 1
    assert 'drop --bce-loss' in capsys.readouterr().err and not out.exists()
    assert cli_main(['timm-train', str(tmp_path / 'nope.py'), '--output', str(out)]) == 1
    assert 'nope.py' in capsys.readouterr().err
    assert cli_main(['timm-train', str(path), '--hue-weight', '0.5', '--hue-input', 'probs', '--output', str(out)]) == 0
    assert "hue_input='probs'" in json.loads(out.read_text())['criterion']


# --- the real train.py -------------------------------------------------------------------------------------

TRAIN_PY = os.environ.get('TIMM_TRAIN_PY')
needs_train_py = pytest.mark.skipif(
    not TRAIN_PY, reason="TIMM_TRAIN_PY is not set: timm's wheel does not ship train.py; point TIMM_TRAIN_PY at "
                         'train.py of huggingface/pytorch-image-models (docs/training.md names the tested commit)')


def _image_folder(root: Path, classes: int = 3, train: int = 8, val: int = 4) -> Path:
    rng = np.random.default_rng(0)
    colours = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]
    for split, n in (('train', train), ('validation', val)):
        for c in range(classes):
            (root / split / f'class{c}').mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colours[c]) + rng.normal(0, 30, (24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(root / split / f'class{c}' / f'{i}.png')
    return root


def _train_py(folder: Path, out: Path, hue_weight: float) -> dict:
    cmd = [sys.executable, '-m', 'timm_u1.cli.timm_train', TRAIN_PY, '--data-dir', str(folder),
           '--model', 'u1_test_resnet', '--num-classes', '3', '--img-size', '32', '--batch-size', '8',
           '--epochs', '1', '--warmup-epochs', '0', '--lr', '1e-6', '--workers', '0', '--device', 'cpu',
           '--mixup', '0.2', '--smoothing', '0.1', '--hue-weight', str(hue_weight), '--seed', '0',
           '--output', str(out), '--experiment', 'run']
    env = dict(os.environ, PYTHONPATH=str(Path(timm_u1.__file__).parents[1]), OMP_NUM_THREADS='1')
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / 'run' / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    return dict(log=done.stdout + done.stderr, rows=rows, run=out / 'run')


@needs_train_py
def test_timm_train_py_trains_an_epoch_with_mixup_smoothing_and_the_hue_loss(tmp_path):
    import yaml

    folder = _image_folder(tmp_path / 'images')
    ce = _train_py(folder, tmp_path / 'ce', hue_weight=0.0)
    hue = _train_py(folder, tmp_path / 'hue', hue_weight=1.0)
    assert 'criterion=U1Loss(hue_weight=1.0, smoothing=0.0' in hue['log']  # mixup's targets carry the smoothing
    args = yaml.safe_load((hue['run'] / 'args.yaml').read_text())
    assert (args['hue_weight'], args['hue_input'], args['spatial'], args['mixup'], args['smoothing']) == (
        1.0, 'logits', False, 0.2, 0.1)
    # lr 1e-6: the weights barely move, so the two runs differ by the hue term alone, which lies in (0, 2]
    difference = float(hue['rows'][0]['train_loss']) - float(ce['rows'][0]['train_loss'])
    assert 0 < difference <= 2
    # the checkpoint is timm's own (weights_only loads it) and plain timm loads its weights
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(hue['run'] / 'last.pth.tar', map_location='cpu', weights_only=True)
    timm.create_model('test_resnet', num_classes=3).load_state_dict(state['state_dict'])
    assert state['args'].hue_weight == 1.0


VALIDATE_PY = os.environ.get('TIMM_VALIDATE_PY') or (
    str(Path(TRAIN_PY).with_name('validate.py')) if TRAIN_PY and Path(TRAIN_PY).with_name('validate.py').is_file()
    else None)


def _validate_py(*args: str) -> float:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run([sys.executable, VALIDATE_PY, '--device', 'cpu', '--workers', '0', *args],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout[done.stdout.index('--result') + len('--result'):])['top1']


@pytest.mark.skipif(not VALIDATE_PY, reason="neither TIMM_VALIDATE_PY nor TIMM_TRAIN_PY is set: timm's wheel does "
                                            'not ship validate.py (docs/training.md names the tested commit)')
def test_timm_validate_py_scores_an_export_as_logged_and_a_checkpoint_with_the_runs_data_config(tmp_path):
    """docs/training.md's validate.py commands: an export needs no import of timm_u1 and no data options;
    its weights as --checkpoint need the run's size, crop, mean and std repeated."""
    from timm_u1.cli import main as cli_main

    folder = _image_folder(tmp_path / 'images')
    run = tmp_path / 'run'
    assert cli_main(['train', '--data', str(folder), '--model', 'resnet10t', '--img-size', '32', '--crop-pct', '0.8',
                     '--batch-size', '8', '--epochs', '1', '--no-progress', '--output', str(run)]) == 0
    logged = json.loads((run / 'summary.json').read_text())['final']['eval_top1']
    data = ['--data-dir', str(folder), '--split', 'validation']
    assert _validate_py('--model', f'local-dir:{run / "export"}', '--pretrained', *data) == pytest.approx(logged)
    cfg = json.loads((run / 'export' / 'config.json').read_text())['pretrained_cfg']
    repeated = ['--img-size', str(cfg['input_size'][-1]), '--crop-pct', str(cfg['crop_pct']),
                '--mean', *map(str, cfg['mean']), '--std', *map(str, cfg['std']), '--interpolation', cfg['interpolation']]
    assert _validate_py('--model', 'resnet10t', '--num-classes', '3', '--checkpoint',
                        str(run / 'export' / 'model.safetensors'), *repeated, *data) == pytest.approx(logged)
