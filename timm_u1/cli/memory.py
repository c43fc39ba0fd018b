"""``timm-u1 memory build`` and ``timm-u1 memory eval``: training-free angle-prototype memories.

    timm-u1 memory build --data digits --split train --output runs/memory/digits
    timm-u1 memory build --data ./my_images --model resnet18 --mode instance --img-size 96 --output runs/memory/mine
    timm-u1 memory eval --memory runs/memory/digits --data digits --split test --plot runs/memory/digits/per_class.png
"""
import argparse
import logging
from pathlib import Path
from typing import Iterable

import torch

from ..runs import RunFolder
from ..core.knn import DEFAULT_FAISS_THRESHOLD
from ..memory.memory import DTYPES, METHODS, MODES, AnglePrototypeMemory
from .options import add_column_options, deprecated_alias

_logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'memory', help='training-free angle-prototype memories over a frozen backbone',
        description='Build and evaluate angle-prototype memories (docs/memory.md).')
    commands = parser.add_subparsers(dest='memory_command', metavar='{build,eval}', required=True)

    build = commands.add_parser(
        'build', help='stream a labelled dataset through a frozen backbone into a memory',
        description='Build a memory from a labelled dataset. An interrupted build resumes when run again '
                    'with the same arguments; other arguments are refused unless --overwrite.')
    build.add_argument('--model', default=None, help='backbone spec (default: the offline EfficientNet-Lite0)')
    build.add_argument(
        '--data', required=True, help="'digits', 'photos', a save_to_disk or image folder, or a Hub dataset")
    build.add_argument('--split', default='train')
    build.add_argument('--output', '--out', dest='out', action=deprecated_alias('--out'), required=True, metavar='DIR',
                       help='folder to write memory.safetensors and memory.json to (--out: its old name, until 0.3)')
    add_column_options(build)
    build.add_argument('--mode', choices=MODES, default='prototype')
    build.add_argument('--bins', type=int, default=8, help='angle sectors K (plus the centre bin); 0 = no angle')
    build.add_argument('--centre-radius', type=float, default=0.5, help='centre bin radius in grid cells')
    build.add_argument('--k', type=int, default=1, help='neighbours in the instance and pooled k-NN classifiers')
    build.add_argument('--dtype', choices=sorted(DTYPES), default='float32', help='storage of kept vectors')
    build.add_argument('--img-size', type=int, default=None, help="input size (default: the model's)")
    build.add_argument('--layer', default=None, help='feature layer (default: the bottleneck)')
    build.add_argument('--batch-size', type=int, default=64)
    build.add_argument('--workers', type=int, default=0)
    build.add_argument('--save-every', type=int, default=50, help='checkpoint every N batches, for resuming')
    build.add_argument('--overwrite', action='store_true', help='replace a memory (finished or not) in --output')
    build.set_defaults(func=run_build)

    evaluate = commands.add_parser(
        'eval', help='accuracy of a memory and of the pooled-feature baselines',
        description='Evaluate a memory (both modes it offers) beside the SimpleShot CL2N and pooled '
                    'k-NN baselines on the same features.')
    evaluate.add_argument('--memory', required=True, help='memory folder or Hub repo id')
    evaluate.add_argument('--subfolder', default=None, help="folder inside a Hub repo (default: '' or 'memory')")
    evaluate.add_argument('--model', default=None, help="backbone spec (default: the memory's)")
    evaluate.add_argument('--data', required=True)
    evaluate.add_argument('--split', default=None,
                          help='default: test if it is labelled, else validation (or val, valid, dev, ...)')
    add_column_options(evaluate)
    evaluate.add_argument('--methods', nargs='+', choices=METHODS, default=None)
    evaluate.add_argument('--batch-size', type=int, default=64)
    evaluate.add_argument('--workers', type=int, default=0)
    evaluate.add_argument('--faiss-threshold', type=int, default=DEFAULT_FAISS_THRESHOLD,
                          help='search with faiss (when installed) from this many stored vectors on (default: %(default)s)')
    evaluate.add_argument('--record', action='store_true', help="store the accuracies in the memory's memory.json")
    evaluate.add_argument(
        '--plot', default=None, metavar='PNG', help='bar chart of the per-class accuracy of every method')
    evaluate.set_defaults(func=run_eval)


def build_settings(args: argparse.Namespace) -> dict:
    """The arguments that must match for a build to resume."""
    return {
        'data': args.data, 'split': args.split, 'model': args.model, 'mode': args.mode, 'bins': args.bins,
        'centre_radius': args.centre_radius, 'k': args.k, 'dtype': args.dtype, 'img_size': args.img_size,
        'layer': args.layer, 'image_column': args.image_column, 'label_column': args.label_column}


def run_build(args: argparse.Namespace) -> int:
    from ..data import class_names, load_image_dataset
    from ..io.factory import DEFAULT_MODEL, create_model_from_spec
    from ..runs.shard import process_group

    args.model = args.model or DEFAULT_MODEL
    settings = build_settings(args)
    rank, world = process_group()
    if world > 1:
        return _run_sharded_build(args, settings, rank, world)
    with RunFolder(args.out, '--output') as folder:  # writable and ours, before any image is read
        memory = AnglePrototypeMemory.resume_build(folder.path, settings, overwrite=args.overwrite)
        ds = load_image_dataset(args.data, args.split, split_option='--split', **_columns(args))
        names = class_names(ds)
        if names is None:
            raise ValueError(f'{args.data} ({args.split}) has no labels; a memory is built from labelled images.')
        model = create_model_from_spec(args.model)
        if memory is None:
            memory = AnglePrototypeMemory.for_model(
                model, names, backbone=args.model, layer=args.layer, img_size=args.img_size, mode=args.mode,
                num_bins=args.bins, centre_radius=args.centre_radius, k=args.k, dtype=DTYPES[args.dtype])
            memory.dataset = f'{args.data}:{args.split}'
        else:
            _logger.info('resuming the build in %s after %d of %d images', folder.path,
                         memory.build_progress['images_done'], len(ds))
        memory.build(model, ds, batch_size=args.batch_size, num_workers=args.workers, progress=not args.quiet,
                     save_directory=folder.path, save_every=args.save_every, settings=settings)
    _warn_empty_classes(memory, args)
    print(f'{memory} -> {folder.path}')
    return 0


def _columns(args: argparse.Namespace) -> dict:
    return dict(image_column=args.image_column, label_column=args.label_column)


def _warn_empty_classes(memory: AnglePrototypeMemory, args: argparse.Namespace) -> None:
    empty = [n for n, c in zip(memory.class_names, memory.class_counts.tolist()) if c == 0]
    if empty:
        _logger.warning('classes %s have no examples in %s (%s); the memory never predicts them.', empty, args.data,
                        args.split)


def _new_memory(model, names, args: argparse.Namespace) -> AnglePrototypeMemory:
    memory = AnglePrototypeMemory.for_model(
        model, names, backbone=args.model, layer=args.layer, img_size=args.img_size, mode=args.mode,
        num_bins=args.bins, centre_radius=args.centre_radius, k=args.k, dtype=DTYPES[args.dtype])
    memory.dataset = f'{args.data}:{args.split}'
    return memory


def _run_sharded_build(args: argparse.Namespace, settings: dict, rank: int, world: int) -> int:
    """``memory build`` as process ``rank`` of ``world`` under ``accelerate launch``.

    Each process builds the memory of a contiguous shard of the dataset (``ds.shard(world, rank,
    contiguous=True)``) in ``--output/.shard-R-of-N`` (checkpointed there, so an interrupted build
    resumes per shard); the main process gathers the shards, merges them in order
    (:meth:`AnglePrototypeMemory.merge`: the memory of a one-process build) and alone writes it.
    """
    import shutil

    from ..files import read_json
    from ..data import class_names, load_image_dataset
    from ..runs.identity import backbone_fingerprint
    from ..io.factory import create_model_from_spec
    from ..memory.memory import MEMORY_CONFIG
    from ..runs.shard import gather, on_main, same_model

    folder = RunFolder(args.out, '--output')

    def start() -> None:
        folder.acquire()  # the main process alone holds the lock
        try:
            if AnglePrototypeMemory.resume_build(folder.path, settings, overwrite=args.overwrite) is not None:
                raise ValueError(
                    f'{folder.path} holds an unfinished one-process build; finish it with one process, or pass '
                    f'--overwrite to start over with {world}.')
        except BaseException:
            folder.release()
            raise

    on_main(start)
    try:
        ds = load_image_dataset(args.data, args.split, split_option='--split', **_columns(args))
        names = class_names(ds)
        if names is None:
            raise ValueError(f'{args.data} ({args.split}) has no labels; a memory is built from labelled images.')
        model = create_model_from_spec(args.model)
        same_model(model, backbone_fingerprint)  # random initialisations differ: the main process's weights
        shard_dir = folder.path / f'.shard-{rank}-of-{world}'
        shard_settings = {**settings, 'shard': [rank, world]}
        if args.overwrite and shard_dir.exists():
            shutil.rmtree(shard_dir)
        shard_ds = ds.shard(num_shards=world, index=rank, contiguous=True)
        meta = read_json(shard_dir / MEMORY_CONFIG) if (shard_dir / MEMORY_CONFIG).is_file() else None
        if isinstance(meta, dict) and meta.get('complete') is True:
            part = AnglePrototypeMemory.from_pretrained(shard_dir)  # finished before an interruption
        else:
            part = AnglePrototypeMemory.resume_build(shard_dir, shard_settings) or _new_memory(model, names, args)
            if len(shard_ds):
                part.build(model, shard_ds, batch_size=args.batch_size, num_workers=args.workers,
                           progress=rank == 0 and not args.quiet, save_directory=shard_dir,
                           save_every=args.save_every, settings=shard_settings)
        part._cache.clear()  # derived search structures are rebuilt, not sent
        parts = gather(part)
        if rank != 0:
            return 0
        memory = _new_memory(model, names, args).merge(parts)
        memory.save_pretrained(folder.path)
        for r in range(world):
            shutil.rmtree(folder.path / f'.shard-{r}-of-{world}', ignore_errors=True)
    finally:
        if rank == 0:
            folder.release()
    _warn_empty_classes(memory, args)
    print(f'{memory} ({world} processes) -> {folder.path}')
    return 0


class _Relabelled:
    """A loader whose labels are mapped from the dataset's class indices to the memory's."""

    def __init__(self, loader: Iterable, mapping: torch.Tensor):
        self.loader, self.mapping = loader, mapping

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield images, self.mapping[labels]


def run_eval(args: argparse.Namespace) -> int:
    from ..data import choose_eval_split, class_names, load_image_dataset, make_loader
    from ..io.factory import create_model_from_spec
    from ..memory.plots import plot_per_class_accuracy

    if args.plot and Path(args.plot).is_dir():
        raise ValueError(f'--plot {args.plot} is a folder; name the PNG file to write, e.g. {Path(args.plot) / "per_class.png"}.')
    if args.record and not Path(args.memory).is_dir():
        raise ValueError('--record updates a local memory folder; download the memory first.')
    memory = AnglePrototypeMemory.from_pretrained(
        args.memory, subfolder=args.subfolder, faiss_threshold=args.faiss_threshold)
    if args.split is None:
        args.split = choose_eval_split(args.data, split_option='--split', **_columns(args))
    ds = load_image_dataset(args.data, args.split, split_option='--split', **_columns(args))
    names = class_names(ds)
    if names is None:
        raise ValueError(f'{args.data} ({args.split}) has no labels; evaluation needs labelled images.')
    unknown = [n for n in names if n not in memory.class_names]
    if unknown:
        raise ValueError(
            f'{args.data} ({args.split}) has classes {unknown} that the memory does not know '
            f'({memory.class_names}); add their images to the memory first, or evaluate on known classes.')
    mapping = torch.tensor([memory.class_names.index(n) for n in names])
    model = create_model_from_spec(args.model or memory.backbone)
    loader = make_loader(ds, memory.data_config, args.batch_size, args.workers)
    results = memory.evaluate(model, _Relabelled(loader, mapping), methods=args.methods, per_class=bool(args.plot),
                              progress=not args.quiet)
    num_images = results.pop('num_images')
    per_class = results.pop('per_class', None)
    print(f'\n{memory}\n{args.data} ({args.split}), {num_images} images\n')
    print(f"| {'method':<12} | top-1 accuracy |\n|{'-' * 14}|----------------|")
    for method, accuracy in results.items():
        print(f'| {method:<12} | {accuracy:14.4f} |')
    if args.record:
        memory.metrics = {f'{args.split}_accuracy_{m}': round(a, 4) for m, a in results.items()}
        memory.save_pretrained(Path(args.memory) / (args.subfolder or ''))
    if args.plot:
        title = f'{memory.backbone} memory on {args.data} ({args.split}, {num_images} images)'
        plot = plot_per_class_accuracy(per_class, results, memory.class_names, args.plot, title)
        if plot is not None:  # else a warning said why
            print(f'plot: {plot}')
    return 0
