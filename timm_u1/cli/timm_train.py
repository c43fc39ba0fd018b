"""``timm-u1 timm-train TRAIN_PY [train.py options]``: timm's own train.py with the U(1) hue loss.

    timm-u1 timm-train pytorch-image-models/train.py --data-dir DATA --model u1_resnet50 \\
        --mixup 0.2 --smoothing 0.1 --model-ema --hue-weight 0.5
    torchrun --nproc_per_node 2 -m timm_u1.cli.timm_train pytorch-image-models/train.py ...

Every train.py option works as in train.py; ``--hue-weight``, ``--hue-input`` and ``--spatial`` are added
to its parser (so ``--config`` YAML files, ``args.yaml`` and checkpoints hold them too). See
:mod:`timm_u1.training.timm_train` and docs/training.md.
"""
import argparse
import sys
from typing import List, Optional

from .options import number

_INCOMPATIBLE = (('bce_loss', '--bce-loss'), ('jsd_loss', '--jsd-loss'))


def add_u1_arguments(parser: argparse.ArgumentParser) -> None:
    """The U(1) options, added to train.py's own parser."""
    group = parser.add_argument_group('U(1) hue loss (timm_u1)')
    group.add_argument('--hue-weight', type=number(0), default=1.0,
                       help='lambda of the hue term: loss = CE + lambda * hue (0: the CE train.py chose; default: 1)')
    group.add_argument('--hue-input', choices=('logits', 'probs'), default='logits',
                       help='hue of the logits or of their softmax (default: logits)')
    group.add_argument('--spatial', action='store_true',
                       help='spatial (CAM-style, energy-weighted) hue loss; needs a u1_ model')


def u1_config_from_args(args: argparse.Namespace):
    """The U(1) settings of parsed train.py arguments; train.py options they cannot go with are refused."""
    from ..core.u1 import U1Config

    for name, flag in _INCOMPATIBLE:
        if getattr(args, name, False):
            raise ValueError(f'{flag} replaces softmax cross-entropy, which the hue loss extends; drop {flag}.')
    if args.spatial and not args.hue_weight:
        raise ValueError('--spatial is a form of the hue loss; it needs --hue-weight > 0.')
    if args.spatial and getattr(args, 'torchscript', False):
        raise ValueError('--spatial trains through forward_u1, which TorchScript cannot compile; use '
                         '--torchcompile instead of --torchscript.')
    return U1Config(hue_weight=args.hue_weight, hue_input=args.hue_input, spatial=args.spatial)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        'timm-train', help="timm's own train.py with the U(1) hue loss (every timm recipe option)",
        description="Run timm's train.py (from a clone of huggingface/pytorch-image-models; timm's wheel does "
                    'not ship it) with its loss made CE + lambda * hue: the cross-entropy train.py chose '
                    '(--smoothing, --mixup, --cutmix) plus the hue term. Every train.py option works; '
                    '`timm-u1 timm-train TRAIN_PY --help` lists them with the U(1) ones. docs/training.md.')
    p.add_argument('train_py', help="path to timm's train.py")
    p.add_argument('train_args', nargs=argparse.REMAINDER, metavar='...',
                   help='train.py options, and --hue-weight W (default 1), --hue-input {logits,probs}, --spatial')
    p.set_defaults(func=run, configures_logging=True)  # train.py sets up logging itself


def run(args: argparse.Namespace) -> int:
    from ..training.timm_train import TimmTrainScript

    script = TimmTrainScript(args.train_py)
    add_u1_arguments(script.parser)
    script.use_u1_loss(u1_config_from_args)
    script.run(args.train_args)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m timm_u1.cli.timm_train`` (and ``torchrun -m``): ``timm-u1 timm-train ...``."""
    from . import main as cli_main

    return cli_main(['timm-train', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
