"""``timm-u1 finetune``: CE vs CE + U(1) (and label smoothing, permuted angles) on a pretrained backbone
frozen up to its head or its last block, from cached features, over seeds, with validation-only
selection (:mod:`timm_u1.studies.frozen`).

    timm-u1 finetune --output runs/finetune_lite0 --jobs 2
    timm-u1 finetune --train last-block --output runs/finetune_lite0_last_block
    timm-u1 finetune --output runs/finetune_lite0 --report   # table.md and the plot from study.json alone
"""
import argparse
import sys
from pathlib import Path

from ..studies.frozen import ARMS, TRAIN_PARTS, FinetuneConfig, parse_task, run_finetune_study, write_report
from .compare import add_study_options, folder
from ..runs.shard import process_group
from .options import integer, non_empty, number, seed


def task(text: str) -> str:
    """A task spec, SOURCE:SHOTS, checked when parsed."""
    try:
        parse_task(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f'must be SOURCE:SHOTS with SHOTS an integer >= 1 or "all" ({e})') from None
    return text


def add_parser(subparsers) -> None:
    d = FinetuneConfig(output=Path('.'))
    p = subparsers.add_parser(
        'finetune', help='CE vs CE + U(1) on a pretrained backbone: linear head or last block (cached features), '
                         'many seeds',
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--output', type=folder, required=True,
                   help='study folder (features cache, study.json, table.md, PNG); rerun the same command to resume')
    p.add_argument('--report', action='store_true', help='only rewrite table.md and the plot from OUTPUT/study.json')
    p.add_argument('--model', type=non_empty, default=d.model, help='timm model spec of the frozen backbone')
    p.add_argument('--pretrained', action='store_true', default=None,
                   help="load the backbone's pretrained weights (default: the spec's default, e.g. yes for "
                        "the offline Lite0 and hf-hub: names, no for plain registry names)")
    p.add_argument('--img-size', type=integer(8, 4096), default=d.img_size, help='input size (bicubic resize, no crop)')
    p.add_argument('--train', choices=TRAIN_PARTS, default=d.train,
                   help='head: a linear classifier on the cached forward_features map; last-block: also the '
                        "backbone's last block and what follows it (EfficientNet: conv_head + bn2), from its "
                        'cached input, BN statistics frozen (timm EfficientNet and ResNet families)')
    p.add_argument('--block-lr-scale', type=number(0, low_open=True), default=d.block_lr_scale,
                   help='--train last-block: the block trains at lr x this, the classifier at lr')
    p.add_argument('--tasks', type=task, nargs='+', default=list(d.tasks),
                   help='SOURCE:SHOTS, e.g. digits:5 photo-patches:all')
    p.add_argument('--arms', nargs='+', default=list(d.arms), choices=ARMS,
                   help='ce is the reference; u1_perm (permuted angles) runs at the lambda and lr chosen for u1_logits')
    p.add_argument('--seeds', type=seed, nargs='+', default=list(d.seeds), help='test seeds (paired across arms)')
    p.add_argument('--selection-seeds', type=seed, nargs='+', default=list(d.selection_seeds),
                   help='seeds of the selection runs on validation; disjoint from --seeds')
    p.add_argument('--lrs', type=number(0, low_open=True), nargs='+', default=None,
                   help='learning-rate grid (default: 3e-3 1e-2 3e-2 for head, 3e-3 1e-2 for last-block)')
    p.add_argument('--hue-weights', type=number(0, low_open=True), nargs='+', default=list(d.hue_weights),
                   help='lambda grid of the U(1) arms')
    p.add_argument('--smoothings', type=number(0, 1, low_open=True, high_open=True), nargs='+',
                   default=list(d.smoothings), help='label-smoothing grid of the ls arm')
    p.add_argument('--steps', type=integer(1), default=None, help='training steps per run (default: 150 for head, '
                                                                 '50 for last-block)')
    p.add_argument('--batch-size', type=integer(1), default=d.batch_size, help='training batch size')
    add_study_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.report:
        write_report(args.output)
        print((args.output / 'table.md').read_text(encoding='utf-8'))
        return 0
    if args.bootstrap is not None:
        print(f'timm-u1 {args.command}: --bootstrap is ignored (the interval is analytic now); 0.3 removes the '
              f'option.', file=sys.stderr)
    cfg = FinetuneConfig(
        output=args.output, model=args.model, img_size=args.img_size, train=args.train,
        block_lr_scale=args.block_lr_scale, tasks=tuple(args.tasks), arms=tuple(args.arms),
        seeds=tuple(args.seeds), selection_seeds=tuple(args.selection_seeds), lrs=args.lrs and tuple(args.lrs),
        hue_weights=tuple(args.hue_weights), smoothings=tuple(args.smoothings), steps=args.steps,
        batch_size=args.batch_size, margin=args.margin, pretrained=args.pretrained)
    run_finetune_study(cfg, command=' '.join(['timm-u1', *sys.argv[1:]]), jobs=args.jobs)
    if process_group()[0] == 0:  # under accelerate launch: one table, not one per process
        print((args.output / 'table.md').read_text(encoding='utf-8'))
    return 0
