"""``timm-u1 train``: train or fine-tune a timm / u1_ model with CE or CE + U(1), with Accelerate.

    timm-u1 train --data digits --model resnet10t --epochs 10 --output runs/digits
    timm-u1 train --data digits --model resnet10t --epochs 10 --output runs/digits --resume
    timm-u1 train --data digits --aa rand-m9-mstd0.5 --model-ema --log-with tensorboard --output runs/recipe
    accelerate launch -m timm_u1.cli.train --data digits --model resnet10t --output runs/digits

The options are the fields of :class:`timm_u1.training.TrainConfig`; each is checked when parsed, with
its range in the message. docs/training.md has the recipes.
"""
import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import Callable, List, Optional

from ..training.config import BOUNDS, SCHEDULERS, TRACKERS, TrainConfig
from .options import add_column_options, hub_license, integer, non_empty, number, seed

_INTEGERS = ('img_size', 'batch_size', 'workers', 'epochs', 'warmup_epochs', 'grad_accum', 'log_interval',
             'checkpoint_every_steps', 'keep_checkpoints')


def bounded(name: str) -> Callable[[str], float]:
    """The option type of a numeric :class:`TrainConfig` field, with the range :data:`BOUNDS` gives it."""
    low, high, low_open, high_open = BOUNDS[name]
    if name in _INTEGERS:
        return integer(low, high)
    return number(low, high, low_open=low_open, high_open=high_open)


def optimizer_name(text: str) -> str:
    """One of timm's optimizers (``timm.optim.list_optimizers``)."""
    from timm.optim import list_optimizers

    names = list_optimizers()
    if text.lower() not in names:
        raise argparse.ArgumentTypeError(f'must be one of timm\'s optimizers (e.g. adamw, sgd, lamb), got {text!r}')
    return text.lower()


def augment_policy(text: str) -> str:
    """A timm auto-augment policy string, checked by building it with timm's ``create_transform``."""
    from timm.data import create_transform

    try:
        create_transform(32, is_training=True, auto_augment=text)
    except Exception as e:  # timm asserts on malformed policy strings
        raise argparse.ArgumentTypeError(
            f'must be a timm auto-augment policy such as rand-m9-mstd0.5, augmix-m5-w3 or original, got {text!r} '
            f'({type(e).__name__}: {e})') from None
    return text


def compile_backend(text: str) -> str:
    """A torch.compile backend that Accelerate's ``dynamo_backend`` takes."""
    from accelerate.utils import DynamoBackend

    names = [b.value.lower() for b in DynamoBackend if b.value != 'NO']
    if text.lower() not in names:
        raise argparse.ArgumentTypeError(f'must be one of {", ".join(names)}, got {text!r}')
    return text.lower()


def tracker(text: str) -> str:
    """A tracker of Accelerate's ``log_with`` that is installed, or 'all'."""
    from ..training.metrics import resolve_trackers

    try:
        resolve_trackers([text])
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).partition(': ')[2]) from None
    return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every :class:`TrainConfig` field as an option."""
    data = p.add_argument_group('data')
    data.add_argument('--data', type=non_empty, default='digits',
                      help='"digits", a Hub dataset name, an image folder or a save_to_disk folder')
    data.add_argument('--train-split', type=non_empty, default='train')
    data.add_argument('--eval-split', type=non_empty, default=None,
                      help='default: test if it is labelled, else validation (or val, valid, dev, ...)')
    data.add_argument('--eval-data', type=non_empty, default=None,
                      help='source of the evaluation split (default: --data), e.g. for a single-Dataset folder')
    add_column_options(data)
    data.add_argument('--streaming', action='store_true',
                      help='read the splits as streams (datasets.IterableDataset): data larger than memory')
    data.add_argument('--img-size', type=bounded('img_size'), default=None, help="input size (default: the model's)")
    data.add_argument('--crop-pct', type=bounded('crop_pct'), default=None,
                      help="eval center-crop fraction (default: the model's)")
    data.add_argument('--batch-size', type=bounded('batch_size'), default=64, help='per process')
    data.add_argument('--workers', type=bounded('workers'), default=0)
    aug = p.add_argument_group("augmentation (timm's create_transform)")
    aug.add_argument('--no-aug', action='store_true', help='train with the eval transform')
    aug.add_argument('--scale', type=bounded('scale'), nargs=2, default=(0.08, 1.0), metavar=('MIN', 'MAX'),
                     help='random-resized-crop area range')
    aug.add_argument('--hflip', type=bounded('hflip'), default=0.5, help='horizontal flip probability')
    aug.add_argument('--color-jitter', type=bounded('color_jitter'), default=0.4)
    aug.add_argument('--aa', type=augment_policy, default=None, metavar='POLICY',
                     help="timm's auto-augment / RandAugment / AugMix policy, e.g. rand-m9-mstd0.5")

    model = p.add_argument_group('model')
    model.add_argument('--model', type=non_empty, default='resnet10t',
                       help='timm or u1_ name, hf-hub:, local-dir: or a folder')
    model.add_argument('--pretrained', action='store_true', help='start from pretrained weights (fine-tuning)')
    model.add_argument('--drop-rate', type=bounded('drop_rate'), default=0.0)
    model.add_argument('--drop-path', type=bounded('drop_path'), default=0.0, help='stochastic depth rate')
    model.add_argument('--model-ema', action='store_true',
                       help="keep an EMA of the weights (timm's ModelEmaV3): evaluated, exported and picked as best")
    model.add_argument('--model-ema-decay', type=bounded('model_ema_decay'), default=0.9998)
    model.add_argument('--torchcompile', type=compile_backend, nargs='?', const='inductor', default=None,
                       metavar='BACKEND', help='torch.compile the model (default backend inductor)')

    loss = p.add_argument_group('loss')
    loss.add_argument('--loss', choices=('u1', 'ce'), default='u1', help='ce = plain cross-entropy (hue weight 0)')
    loss.add_argument('--hue-weight', type=bounded('hue_weight'), default=1.0, help='lambda of the hue term')
    loss.add_argument('--hue-input', choices=('logits', 'probs'), default='logits')
    loss.add_argument('--spatial', action='store_true', help='spatial (CAM-style, energy-weighted) hue loss')
    loss.add_argument('--smoothing', type=bounded('smoothing'), default=0.0, help='label smoothing')
    loss.add_argument('--mixup', type=bounded('mixup'), default=0.0, help='mixup alpha (0 = off)')
    loss.add_argument('--cutmix', type=bounded('cutmix'), default=0.0, help='cutmix alpha (0 = off)')

    opt = p.add_argument_group('optimisation')
    opt.add_argument('--epochs', type=bounded('epochs'), default=10)
    opt.add_argument('--opt', type=optimizer_name, default='adamw', help="one of timm's optimizers")
    opt.add_argument('--lr', type=bounded('lr'), default=1e-3)
    opt.add_argument('--weight-decay', type=bounded('weight_decay'), default=0.05)
    opt.add_argument('--sched', choices=SCHEDULERS, default='cosine')
    opt.add_argument('--warmup-epochs', type=bounded('warmup_epochs'), default=0)
    opt.add_argument('--clip-grad', type=bounded('clip_grad'), default=None, help='max gradient norm')
    opt.add_argument('--grad-accum', type=bounded('grad_accum'), default=1, help='gradient accumulation steps')
    opt.add_argument('--mixed-precision', choices=('auto', 'no', 'fp16', 'bf16'), default=None,
                     help="default: Accelerate's (accelerate launch --mixed_precision, accelerate config); "
                          'auto: bf16 or fp16 on a GPU that has it, full precision on CPU')

    run = p.add_argument_group('run')
    run.add_argument('--output', type=Path, required=True, help='run folder (checkpoints, metrics, export)')
    run.add_argument('--seed', type=seed, default=0)
    run.add_argument('--resume', action='store_true', help='continue from the newest checkpoint in OUTPUT/checkpoints')
    run.add_argument('--no-export', action='store_true', help='skip the Hub-layout export (export/, best/)')
    run.add_argument('--license', type=hub_license, default=None, metavar='ID',
                     help="the export's licence, a Hub licence id such as apache-2.0 or mit (default: the base "
                          "weights' licence when timm knows it, else none)")
    run.add_argument('--no-progress', action='store_true', help='no progress bars')
    run.add_argument('--log-with', type=tracker, nargs='+', default=(), metavar='TRACKER',
                     help=f'experiment trackers ({", ".join(TRACKERS)} or all; installed ones only)')
    run.add_argument('--log-interval', type=bounded('log_interval'), default=50,
                     help='optimizer updates between two tracker records of the training loss')
    run.add_argument('--checkpoint-every-steps', type=bounded('checkpoint_every_steps'), default=0, metavar='N',
                     help='also checkpoint every N optimizer updates inside an epoch (0: at epoch ends only)')
    run.add_argument('--keep-checkpoints', type=bounded('keep_checkpoints'), default=1, metavar='N',
                     help='how many of the newest checkpoints are kept')


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'train', help='train or fine-tune with CE or CE + U(1) hue loss (Accelerate)',
        description='Train or fine-tune a timm / u1_ model with cross-entropy or CE + U(1) hue loss. Run it '
                    'under `accelerate launch -m timm_u1.cli.train` for several processes or GPUs.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})


def run(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from ..training import train

    summary = train(config_from_args(args))
    final = summary.get('final') or {}
    if 'eval_top1' in final and PartialState().is_main_process:  # one line, not one per process
        ema = summary.get('exported') == 'ema'  # the exported model's top-1: the EMA's with --model-ema
        top1 = final['eval_ema_top1' if ema else 'eval_top1']
        print(f"final eval top-1 {top1:.2f}%{' (EMA)' if ema else ''} after {final['epoch'] + 1} epochs -> "
              f"{args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``accelerate launch -m timm_u1.cli.train ...``: ``timm-u1 train ...``."""
    from . import main as cli_main

    return cli_main(['train', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
