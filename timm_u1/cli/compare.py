"""``timm-u1 compare``: cross-entropy vs cross-entropy + U(1) trained from scratch, selected on validation (:mod:`timm_u1.studies.scratch`).

    timm-u1 compare --data digits --model test_resnet --img-size 32 --epochs 8 \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --selection-seeds 100 101 --lrs 1e-3 2e-3 4e-3 \\
        --hue-weights 0.1 0.3 1 --jobs 2 --output runs/study_digits

    timm-u1 compare --output runs/study_digits --report   # table.md and the PNGs from study.json alone

Options after ``--`` go to every training run (any ``timm-u1 train`` option but those the study
sets per run: --lr, --loss, --hue-weight, --seed, the splits, --output).
"""
import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import List

from ..data.builtin import PHOTO_PATCHES
from ..studies.paired import MARGIN
from ..studies.scratch import ARMS, run_study, write_report
from ..training import TrainConfig
from ..runs.shard import process_group
from .options import Parser, integer, non_empty, number, seed
from .train import add_arguments, config_from_args

# set per run by the study: passing them after -- would be overridden silently
PER_RUN = ('--lr', '--loss', '--hue-weight', '--seed', '--train-split', '--eval-split', '--eval-data', '--output',
           '--resume')
# compare's own options: after -- they would silently win over the value compare records
OWN = ('--data', '--model', '--img-size', '--epochs', '--batch-size')


def folder(text: str) -> Path:
    """A study folder: a non-empty path (an empty one would be the current folder)."""
    return Path(non_empty(text))


def add_study_options(p: argparse.ArgumentParser) -> None:
    """What both studies share: seeds, the margin, worker processes."""
    p.add_argument('--margin', type=number(0, low_open=True), default=MARGIN,
                   help='equivalence margin, top-1 points')
    p.add_argument('--bootstrap', type=integer(1), default=None,
                   help='ignored (the interval is analytic now); 0.3 removes it')
    p.add_argument('--jobs', type=integer(1, 256), default=1,
                   help='worker processes, one torch thread each (under accelerate launch: per process)')


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'compare', help='CE vs CE + U(1) from scratch: lr and lambda chosen on validation, paired test over seeds',
        description=__doc__.split('\n\n')[0] + ' Options after -- go to every training run.',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--data', type=non_empty, default='digits',
                   help=f'as for timm-u1 train (with a train and a test split), or "{PHOTO_PATCHES}"')
    p.add_argument('--model', type=non_empty, default='test_resnet',
                   help='timm model (its u1_ twin is trained), from scratch')
    p.add_argument('--img-size', type=integer(1, 4096), default=16, help='input size of every run')
    p.add_argument('--epochs', type=integer(1), default=5, help='epochs of every run (one budget for all)')
    p.add_argument('--batch-size', type=integer(1), default=64, help='batch size of every run')
    p.add_argument('--arms', nargs='+', choices=ARMS, default=list(ARMS),
                   help='ce is the reference; u1_perm (permuted angles) runs at the lambda and lr chosen for u1_logits')
    p.add_argument('--seeds', type=seed, nargs='+', default=list(range(10)), help='test seeds')
    p.add_argument('--selection-seeds', type=seed, nargs='+', default=[100, 101],
                   help='seeds of the selection runs on validation; disjoint from --seeds')
    p.add_argument('--lrs', type=number(0, low_open=True), nargs='+', default=[1e-3, 2e-3, 4e-3],
                   help='learning rates tried per arm (one value: no selection runs)')
    p.add_argument('--hue-weights', type=number(0, low_open=True), nargs='+', default=[0.1, 0.3, 1.0],
                   help='lambda values tried for CE + lambda x U(1)')
    p.add_argument('--val-fraction', type=number(0, 1, low_open=True, high_open=True), default=0.2,
                   help='of the training split, stratified, for selection')
    add_study_options(p)
    p.add_argument('--output', type=folder, required=True,
                   help='study folder; rerun the same command to resume (finished runs are kept)')
    p.add_argument('--report', action='store_true', help='only rewrite table.md and the PNGs from OUTPUT/study.json')
    p.add_argument('train_args', nargs=argparse.REMAINDER, help='-- then options for every training run')
    p.set_defaults(func=run)


class _AfterSeparator(Parser):
    """The train options after ``--``, refused in one line (no prefix abbreviations: ``--outp`` is unknown)."""

    def error(self, message: str):
        # a usage error like any other of the command line (exit 2), under compare's name, not this parser's
        self.exit(2, f'timm-u1 compare: error: after --: {message} (the options after -- are those of '
                     f'timm-u1 train)\n')


def run_config(args: argparse.Namespace) -> TrainConfig:
    """What every training run of the study shares: compare's own options and those after ``--``."""
    extra: List[str] = list(args.train_args)
    if extra[:1] == ['--']:
        extra = extra[1:]
    clash = sorted({a.split('=')[0] for a in extra if a.split('=')[0] in PER_RUN})
    if clash:
        raise ValueError(f'{" ".join(clash)} after -- is set per run by the study; use --lrs / --hue-weights / '
                         f'--seeds / --output of timm-u1 compare instead.')
    own = sorted({a.split('=')[0] for a in extra if a.split('=')[0] in OWN})
    if own:
        raise ValueError(f'{" ".join(own)} after -- is an option of timm-u1 compare itself; put it before the --.')
    parser = _AfterSeparator(prog='timm-u1 compare ... --', add_help=False)
    add_arguments(parser)
    # the train parser requires --output: the study's, set per run anyway
    shared = config_from_args(parser.parse_args(['--output', str(args.output), *extra]))
    return replace(shared, data=args.data, model=args.model, img_size=args.img_size, epochs=args.epochs,
                   batch_size=args.batch_size)


def run(args: argparse.Namespace) -> int:
    if args.report:
        write_report(args.output)
        print((args.output / 'table.md').read_text(encoding='utf-8'))
        return 0
    base = run_config(args)
    if args.bootstrap is not None:
        print(f'timm-u1 {args.command}: --bootstrap is ignored (the interval is analytic now); 0.3 removes the '
              f'option.', file=sys.stderr)
    run_study(base, args.seeds, args.hue_weights, lrs=args.lrs, selection_seeds=args.selection_seeds,
              val_fraction=args.val_fraction, margin=args.margin, arms=args.arms, jobs=args.jobs,
              command=' '.join(['timm-u1', *sys.argv[1:]]))
    if process_group()[0] == 0:  # under accelerate launch: one table, not one per process
        print((args.output / 'table.md').read_text(encoding='utf-8'))
    return 0
