"""``timm-u1 compare``: cross-entropy vs cross-entropy + U(1) trained from scratch, selected on validation (:mod:`timm_u1.studies.scratch`).

    timm-u1 compare --data digits --model test_resnet --img-size 32 --epochs 8 \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --selection-seeds 100 101 --lrs 1e-3 2e-3 4e-3 \\
        --hue-weights 0.1 0.3 1 --output runs/study_digits

    timm-u1 compare --output runs/study_digits --report   # table.md and the PNGs from study.json alone

Options after ``--`` go to every training run (any ``timm-u1 train`` option but those the study
sets per run: --lr, --loss, --hue-weight, --seed, the splits, --output).
"""
import argparse
import sys
from pathlib import Path

from ..studies.paired import MARGIN
from ..data.builtin import PHOTO_PATCHES
from ..studies.scratch import run_study, write_report
from .options import Parser
from .train import add_arguments, config_from_args

# set per run by the study: passing them after -- would be overridden silently
PER_RUN = ('--lr', '--loss', '--hue-weight', '--seed', '--train-split', '--eval-split', '--eval-data', '--output',
           '--resume')
# compare's own options: after -- they would silently win over the value compare records
OWN = ('--data', '--model', '--img-size', '--epochs', '--batch-size')


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'compare', help='CE vs CE + U(1) from scratch: lr and lambda chosen on validation, paired test over seeds',
        description=__doc__.split('\n\n')[0] + ' Options after -- go to every training run.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', default='digits', help=f'as for timm-u1 train (with a train and a test split), '
                                                     f'or "{PHOTO_PATCHES}"')
    p.add_argument('--model', default='test_resnet', help='timm model (its u1_ twin is trained), from scratch')
    p.add_argument('--img-size', type=int, default=16, help='input size of every run')
    p.add_argument('--epochs', type=int, default=5, help='epochs of every run (one budget for all)')
    p.add_argument('--batch-size', type=int, default=64, help='batch size of every run')
    p.add_argument('--seeds', type=int, nargs='+', default=list(range(10)), help='test seeds')
    p.add_argument('--selection-seeds', type=int, nargs='+', default=[100, 101],
                   help='seeds of the selection runs on validation; disjoint from --seeds')
    p.add_argument('--lrs', type=float, nargs='+', default=[1e-3, 2e-3, 4e-3], help='learning rates tried per arm')
    p.add_argument('--hue-weights', type=float, nargs='+', default=[0.1, 0.3, 1.0],
                   help='lambda values tried for CE + lambda x U(1)')
    p.add_argument('--val-fraction', type=float, default=0.2, help='of the training split, stratified, for selection')
    p.add_argument('--bootstrap', type=int, default=4000, help='bootstrap resamples of seeds and test images')
    p.add_argument('--margin', type=float, default=MARGIN, help='equivalence margin, top-1 points')
    p.add_argument('--output', type=Path, required=True,
                   help='study folder; rerun the same command to resume (finished runs are kept)')
    p.add_argument('--report', action='store_true', help='only rewrite table.md and the PNGs from OUTPUT/study.json')
    p.add_argument('train_args', nargs=argparse.REMAINDER, help='-- then options for every training run')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.report:
        write_report(args.output)
        print((args.output / 'table.md').read_text())
        return 0
    extra = list(args.train_args)
    if extra[:1] == ['--']:
        extra = extra[1:]
    clash = sorted({a.split('=')[0] for a in extra if a.split('=')[0] in PER_RUN})
    if clash:
        raise ValueError(f'{" ".join(clash)} after -- is set per run by the study; use --lrs / --hue-weights / '
                         f'--seeds / --output of timm-u1 compare instead.')
    own = sorted({a.split('=')[0] for a in extra if a.split('=')[0] in OWN})
    if own:
        raise ValueError(f'{" ".join(own)} after -- is an option of timm-u1 compare itself; put it before the --.')
    train_parser = Parser(prog='timm-u1 compare ... --', add_help=False)  # no abbreviations past the checks above
    add_arguments(train_parser)
    shared = ['--data', str(args.data), '--model', args.model, '--epochs', str(args.epochs),
              '--batch-size', str(args.batch_size), '--output', str(args.output)]
    if args.img_size:
        shared += ['--img-size', str(args.img_size)]
    base = config_from_args(train_parser.parse_args(shared + extra))
    run_study(base, args.seeds, args.hue_weights, lrs=args.lrs, selection_seeds=args.selection_seeds,
              val_fraction=args.val_fraction, bootstrap=args.bootstrap, margin=args.margin,
              command=' '.join(['timm-u1', *sys.argv[1:]]))
    print((args.output / 'table.md').read_text())
    return 0
