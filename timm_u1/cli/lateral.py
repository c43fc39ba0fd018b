"""``timm-u1 lateral``: what the LGN pre-filter, first-layer filters and lateral kernel of a trained V1 model
became, each claim judged beside its controls (docs/early.md).

    timm-u1 lateral --model runs/v1/full-s0/run/export --step0 runs/v1/full-s0/step0 --output runs/v1/full-s0/lateral
    timm-u1 lateral --model lgn_v1net_s --output runs/lateral-init   # a model at initialisation (nothing to find)
    timm-u1 lateral --model local-dir:my-v1-resnet --permutations 999 --shuffles 200 --output runs/quick
"""
import argparse

from .options import integer, non_empty, seed


def add_parser(subparsers) -> None:
    from ..early.fits import GABOR_STARTS

    p = subparsers.add_parser(
        'lateral', help='LGN pre-filter, first-layer filters and lateral kernel of a V1 model, with controls',
        description='Analyse a trained lgn_v1net_* or v1_<arch> model: its pre-filter against a Laplacian of '
                    'Gaussian (radial symmetry, beside its pixels shuffled and step 0), its first-layer filters '
                    '(Gabor, LoG and orientation fits beside random-init, pixel-shuffle and step-0 controls), and '
                    'its lateral kernel (orientation selectivity, co-axiality, association field against the '
                    'SE(2) co-circularity model and the direction-process kernel, beside an orientation-shuffled '
                    'null, the step-0 kernel and the parameter-free filter-correlation kernel). Writes report.json, '
                    'report.md and PNGs to --output, the filter analysis to --output/filters. Definitions and '
                    'results: docs/early.md.')
    p.add_argument('--model', type=non_empty, required=True,
                   help='the trained model: a model folder, local-dir:PATH, hf-hub:ORG/NAME, or a registered name '
                        '(lgn_v1net_s, v1_<arch>: analysed at initialisation)')
    p.add_argument('--step0', type=non_empty, default=None,
                   help='the same run\'s step-0 model (a folder or spec): the step-0 control of every claim')
    p.add_argument('--seeds', type=integer(1, 100), default=3,
                   help='random-initialisation seeds of the filter analysis, in [1, 100] (default: 3)')
    p.add_argument('--starts', type=integer(1, 9), default=GABOR_STARTS,
                   help=f'Gabor-fit starts per filter, in [1, 9] (default: {GABOR_STARTS})')
    p.add_argument('--permutations', type=integer(1, 100_000), default=10000,
                   help='orientation permutations of the selectivity test, in [1, 100000] (default: 10000)')
    p.add_argument('--shuffles', type=integer(1, 10_000), default=1000,
                   help='orientation shuffles of the association null, in [1, 10000] (default: 1000; the kernel '
                        'correlation and the pre-filter use at most 200)')
    p.add_argument('--seed', type=seed, default=0, help='seeds the controls, shuffles and permutations (default: 0)')
    p.add_argument('--output', type=non_empty, default='runs/lateral', help='output folder (default: runs/lateral)')
    p.add_argument('--overwrite', action='store_true', help='fit the filters afresh over fits of other settings')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..early.v1analysis import analyze_v1

    report = analyze_v1(args.model, step0=args.step0, out=args.output, seeds=args.seeds, starts=args.starts,
                        permutations=args.permutations, shuffles=args.shuffles, seed=args.seed,
                        overwrite=args.overwrite)
    print(f"{report.meta['subject']} ({report.meta['parts']}) -> {report.paths['report.md']}")
    for verdict in report.verdicts.values():
        print(f"  {verdict['claim']}: {verdict['verdict'] or 'not evaluated'} ({verdict['reason']})")
    return 0
