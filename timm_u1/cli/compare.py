"""``timm-u1 compare``: cross-entropy vs cross-entropy + U(1) hue loss over seeds (:mod:`timm_u1.study`).

    timm-u1 compare --data digits --model test_resnet --img-size 16 --epochs 5 \\
        --seeds 0 1 2 3 4 --hue-weights 0.3 1 --output runs/study_digits

Options after ``--`` go to every training run (any ``timm-u1 train`` option, e.g. ``-- --lr 3e-3``).
"""
import argparse
import sys
from pathlib import Path

from ..study import PHOTO_PATCHES, markdown_table, run_study
from .train import add_arguments, config_from_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'compare', help='CE vs CE + U(1) over seeds and hue weights, with paired differences',
        description=__doc__.split('\n\n')[0] + ' Options after -- go to every training run.')
    p.add_argument('--data', default='digits', help=f'as for timm-u1 train, or "{PHOTO_PATCHES}"')
    p.add_argument('--model', default='test_resnet')
    p.add_argument('--img-size', type=int, default=16)
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--hue-weights', type=float, nargs='+', default=[1.0], help='lambda values of CE + U(1)')
    p.add_argument('--output', type=Path, required=True)
    p.add_argument('train_args', nargs=argparse.REMAINDER, help='-- then options for every training run')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    extra = list(args.train_args)
    if extra[:1] == ['--']:
        extra = extra[1:]
    train_parser = argparse.ArgumentParser(prog='timm-u1 compare ... --', add_help=False)
    add_arguments(train_parser)
    shared = ['--data', str(args.data), '--model', args.model, '--epochs', str(args.epochs),
              '--batch-size', str(args.batch_size), '--output', str(args.output)]
    if args.img_size:
        shared += ['--img-size', str(args.img_size)]
    base = config_from_args(train_parser.parse_args(shared + extra))
    study = run_study(base, args.seeds, args.hue_weights, command=' '.join(['timm-u1', *sys.argv[1:]]))
    print(markdown_table(study))
    return 0
