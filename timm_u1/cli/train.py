"""``timm-u1 train``: train or fine-tune a timm / u1_ model with CE or CE + U(1), with Accelerate.

    timm-u1 train --data digits --model resnet10t --epochs 10 --output runs/digits
    accelerate launch -m timm_u1.cli.train --data digits --model resnet10t --output runs/digits

The options are the fields of :class:`timm_u1.training.TrainConfig`; docs/training.md has the recipes.
"""
import argparse
import sys
from dataclasses import fields
from pathlib import Path
from typing import List, Optional

from ..training.trainer import CHECKPOINT_NAME, TrainConfig, train
from .options import add_column_options, integer


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every :class:`TrainConfig` field as an option."""
    data = p.add_argument_group('data')
    data.add_argument('--data', default='digits',
                      help='"digits", a Hub dataset name, an image folder or a save_to_disk folder')
    data.add_argument('--train-split', default='train')
    data.add_argument('--eval-split', default=None,
                      help='default: test if it is labelled, else validation (or val, valid, dev, ...)')
    data.add_argument('--eval-data', default=None,
                      help='source of the evaluation split (default: --data), e.g. for a single-Dataset folder')
    add_column_options(data)
    data.add_argument('--streaming', action='store_true',
                      help='read the splits as streams (datasets.IterableDataset): data larger than memory')
    data.add_argument('--img-size', type=int, default=None, help="input size (default: the model's)")
    data.add_argument('--crop-pct', type=float, default=None, help="eval center-crop fraction (default: the model's)")
    data.add_argument('--batch-size', type=integer(1), default=64, help='per process')
    data.add_argument('--workers', type=integer(0), default=0)
    aug = p.add_argument_group("augmentation (timm's create_transform)")
    aug.add_argument('--no-aug', action='store_true', help='train with the eval transform')
    aug.add_argument('--scale', type=float, nargs=2, default=(0.08, 1.0), help='random-resized-crop area range')
    aug.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    aug.add_argument('--color-jitter', type=float, default=0.4)

    model = p.add_argument_group('model')
    model.add_argument('--model', default='resnet10t', help='timm or u1_ name, hf-hub:, local-dir: or a folder')
    model.add_argument('--pretrained', action='store_true', help='start from pretrained weights (fine-tuning)')
    model.add_argument('--drop-rate', type=float, default=0.0)

    loss = p.add_argument_group('loss')
    loss.add_argument('--loss', choices=('u1', 'ce'), default='u1', help='ce = plain cross-entropy (hue weight 0)')
    loss.add_argument('--hue-weight', type=float, default=1.0, help='lambda of the hue term')
    loss.add_argument('--hue-input', choices=('logits', 'probs'), default='logits')
    loss.add_argument('--spatial', action='store_true', help='spatial (CAM-style, energy-weighted) hue loss')
    loss.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')
    loss.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0 = off)')
    loss.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0 = off)')

    opt = p.add_argument_group('optimisation')
    opt.add_argument('--epochs', type=integer(1), default=10)
    opt.add_argument('--opt', default='adamw')
    opt.add_argument('--lr', type=float, default=1e-3)
    opt.add_argument('--weight-decay', type=float, default=0.05)
    opt.add_argument('--sched', default='cosine')
    opt.add_argument('--warmup-epochs', type=int, default=0)
    opt.add_argument('--clip-grad', type=float, default=None, help='max gradient norm')
    opt.add_argument('--grad-accum', type=integer(1), default=1, help='gradient accumulation steps')
    opt.add_argument('--mixed-precision', choices=('auto', 'no', 'fp16', 'bf16'), default=None,
                     help="default: Accelerate's (accelerate launch --mixed_precision, accelerate config); "
                          'auto: bf16 or fp16 on a GPU that has it, full precision on CPU')

    run = p.add_argument_group('run')
    run.add_argument('--output', type=Path, required=True, help='run folder (checkpoint, metrics, export)')
    run.add_argument('--seed', type=int, default=0)
    run.add_argument('--resume', action='store_true', help=f'continue from OUTPUT/{CHECKPOINT_NAME}')
    run.add_argument('--no-export', action='store_true', help='skip the Hub-layout export at the end')
    run.add_argument('--no-progress', action='store_true', help='no progress bars')


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

    summary = train(config_from_args(args))
    final = summary.get('final') or {}
    if 'eval_top1' in final and PartialState().is_main_process:  # one line, not one per process
        print(f"final eval top-1 {final['eval_top1']:.2f}% after {final['epoch'] + 1} epochs -> {args.output}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``accelerate launch -m timm_u1.cli.train ...``: ``timm-u1 train ...``."""
    from . import main as cli_main

    return cli_main(['train', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
