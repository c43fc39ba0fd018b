"""``timm-u1 memory build|eval|predict``: training-free angle-prototype memories.

    timm-u1 memory build --data digits --split train --output runs/memory/digits
    timm-u1 memory build --data ./my_images --model local-dir:./backbone --backbone-id ORG/NAME --mode instance --img-size 96 --output runs/memory/mine
    timm-u1 memory eval --memory runs/memory/digits --data digits --split test --plot runs/memory/digits/per_class.png
    timm-u1 memory predict photo.jpg ./more_photos --memory runs/memory/digits --top-k 3
"""
import argparse
from pathlib import Path
from typing import Iterable

from .options import add_column_options, deprecated_alias, integer, non_empty, number

# the memory package imports torch: the parsers need only these names
MODES = ('prototype', 'instance')
METHODS = ('prototype', 'instance', 'cl2n', 'pooled_knn')
DTYPES = ('float16', 'float32')
MAX_BINS = 360  # timm_u1.memory.bins.MAX_BINS (a test holds them equal)
DEFAULT_FAISS_THRESHOLD = 100_000  # timm_u1.core.knn.DEFAULT_FAISS_THRESHOLD (a test holds them equal)
CHECKPOINT_EVERY = 60.0  # timm_u1.runs.stream.CHECKPOINT_EVERY (a test holds them equal)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        'memory', help='training-free angle-prototype memories over a frozen backbone',
        description='Build, evaluate and use angle-prototype memories (docs/memory.md).')
    commands = parser.add_subparsers(dest='memory_command', metavar='{build,eval,predict}', required=True)
    _add_build(commands)
    _add_eval(commands)
    _add_predict(commands)


def _add_build(commands) -> None:
    build = commands.add_parser(
        'build', help='stream a labelled dataset through a frozen backbone into a memory',
        description='Build a memory from a labelled dataset. An interrupted build resumes when run again with the '
                    'same arguments over the same data and weights; anything else is refused unless --overwrite.')
    build.add_argument('--model', type=non_empty, default=None,
                       help='backbone spec (default: the offline EfficientNet-Lite0)')
    build.add_argument('--data', type=non_empty, required=True,
                       help="'digits', 'photos', a save_to_disk or image folder, or a Hub dataset")
    build.add_argument('--split', type=non_empty, default='train', help='dataset split (default: %(default)s)')
    add_column_options(build)
    build.add_argument('--output', '--out', dest='out', type=non_empty, action=deprecated_alias('--out'),
                       required=True, metavar='DIR',
                       help='folder to write memory.safetensors and memory.json to (--out: its old name, until 0.3)')
    build.add_argument('--mode', choices=MODES, default='prototype', help='(default: %(default)s)')
    build.add_argument('--bins', type=integer(0, MAX_BINS), default=8,
                       help='angle sectors K (plus the centre bin); 0 = no angle (default: %(default)s)')
    build.add_argument('--centre-radius', type=number(0), default=0.5,
                       help='centre bin radius in grid cells (default: %(default)s)')
    build.add_argument('--k', type=integer(1), default=1,
                       help='neighbours in the instance and pooled k-NN classifiers (default: %(default)s)')
    build.add_argument('--dtype', choices=DTYPES, default='float32', help='storage of kept vectors (default: %(default)s)')
    build.add_argument('--img-size', type=integer(1), default=None, help="input size (default: the model's)")
    build.add_argument('--layer', type=non_empty, default=None, help='feature layer (default: the bottleneck)')
    build.add_argument('--batch-size', type=integer(1), default=64, help='(default: %(default)s)')
    build.add_argument('--workers', type=integer(0), default=0, help='DataLoader worker processes (default: %(default)s)')
    build.add_argument('--save-every', type=number(0), default=CHECKPOINT_EVERY, metavar='SECONDS',
                       help='seconds between checkpoints, for resuming; 0: after every batch (default: %(default)s)')
    build.add_argument('--backbone-id', type=non_empty, default=None, metavar='ORG/NAME',
                       help='Hub repo others load the backbone from, when --model is a local folder (recorded in '
                            "memory.json; the backbone's fingerprint is checked wherever the memory is loaded)")
    build.add_argument('--overwrite', action='store_true', help='replace a memory (finished or not) in --output')
    build.set_defaults(func=run_build)


def _add_eval(commands) -> None:
    evaluate = commands.add_parser(
        'eval', help='accuracy of a memory and of the pooled-feature baselines',
        description='Evaluate a memory (both modes it offers) beside the SimpleShot CL2N and pooled k-NN baselines '
                    'on the same features.')
    evaluate.add_argument('--memory', type=non_empty, required=True, help='memory folder or Hub repo id')
    evaluate.add_argument('--subfolder', type=non_empty, default=None,
                          help="folder inside a Hub repo (default: '' or 'memory')")
    evaluate.add_argument('--model', type=non_empty, default=None,
                          help="backbone spec (default: the memory's, its local folder if it exists here)")
    evaluate.add_argument('--data', type=non_empty, required=True)
    evaluate.add_argument('--split', type=non_empty, default=None,
                          help='default: test if it is labelled, else validation (or val, valid, dev, ...)')
    add_column_options(evaluate)
    evaluate.add_argument('--methods', nargs='+', choices=METHODS, default=None)
    evaluate.add_argument('--batch-size', type=integer(1), default=64, help='(default: %(default)s)')
    evaluate.add_argument('--workers', type=integer(0), default=0, help='(default: %(default)s)')
    evaluate.add_argument('--faiss-threshold', type=integer(0), default=DEFAULT_FAISS_THRESHOLD,
                          help='search with faiss (when installed) from this many stored vectors on (default: %(default)s)')
    evaluate.add_argument('--record', action='store_true', help="store the accuracies in the memory's memory.json")
    evaluate.add_argument(
        '--plot', type=non_empty, default=None, metavar='PNG', help='bar chart of the per-class accuracy of every method')
    evaluate.set_defaults(func=run_eval)


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        'predict', help='classify image files with a memory',
        description='Print the top-k classes of every image (folders: every image file under them) with their '
                    'probabilities.')
    predict.add_argument('images', nargs='+', type=non_empty, metavar='IMAGE', help='image files or folders of them')
    predict.add_argument('--memory', type=non_empty, required=True, help='memory folder or Hub repo id')
    predict.add_argument('--subfolder', type=non_empty, default=None,
                         help="folder inside a Hub repo (default: '' or 'memory')")
    predict.add_argument('--model', type=non_empty, default=None,
                         help="backbone spec (default: the memory's, its local folder if it exists here)")
    predict.add_argument('--method', choices=METHODS, default=None, help="(default: the memory's mode)")
    predict.add_argument('--top-k', type=integer(1), default=5, help='classes shown per image (default: %(default)s)')
    predict.add_argument('--batch-size', type=integer(1), default=32, help='(default: %(default)s)')
    predict.set_defaults(func=run_predict)


def run_build(args: argparse.Namespace) -> int:
    from ..memory import build_memory

    memory = build_memory(
        args.data, args.out, model=args.model, split=args.split, mode=args.mode, num_bins=args.bins,
        centre_radius=args.centre_radius, k=args.k, dtype=args.dtype, img_size=args.img_size, layer=args.layer,
        batch_size=args.batch_size, num_workers=args.workers, save_every=args.save_every,
        overwrite=args.overwrite, backbone_id=args.backbone_id, image_column=args.image_column,
        label_column=args.label_column, progress=not args.quiet)
    if memory is not None:  # the main process
        from ..runs.shard import process_group

        world = process_group()[1]
        print(f"{memory}{f' ({world} processes)' if world > 1 else ''} -> {Path(args.out)}")
    return 0


class _Relabelled:
    """A loader whose labels are mapped from the dataset's class indices to the memory's."""

    def __init__(self, loader: Iterable, mapping):
        self.loader, self.mapping = loader, mapping

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            yield images, self.mapping[labels]


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from ..data import choose_eval_split, class_names, load_image_dataset, make_loader
    from ..io.factory import create_model_from_spec
    from ..memory import AnglePrototypeMemory
    from ..memory.plots import plot_per_class_accuracy

    if args.plot and Path(args.plot).is_dir():
        raise ValueError(f'--plot {args.plot} is a folder; name the PNG file to write, e.g. {Path(args.plot) / "per_class.png"}.')
    if args.record and not Path(args.memory).is_dir():
        raise ValueError('--record updates a local memory folder; download the memory first.')
    memory = AnglePrototypeMemory.from_pretrained(
        args.memory, subfolder=args.subfolder, faiss_threshold=args.faiss_threshold)
    if memory.data_config is None:
        raise ValueError(f'{args.memory} records no data config (a memory of raw features); it cannot be evaluated on '
                         f'images. Build it with timm-u1 memory build.')
    columns = dict(image_column=args.image_column, label_column=args.label_column)
    if args.split is None:
        args.split = choose_eval_split(args.data, split_option='--split', **columns)
    ds = load_image_dataset(args.data, args.split, split_option='--split', **columns)
    names = class_names(ds)
    if names is None:
        raise ValueError(f'{args.data} ({args.split}) has no labels; evaluation needs labelled images.')
    unknown = [n for n in names if n not in memory.class_names]
    if unknown:
        raise ValueError(
            f'{args.data} ({args.split}) has classes {unknown} that the memory does not know '
            f'({memory.class_names}); add their images to the memory first, or evaluate on known classes.')
    mapping = torch.tensor([memory.class_names.index(n) for n in names])
    model = create_model_from_spec(args.model or memory.local_backbone)
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
        from ..memory.persistence import resolve_memory_folder

        memory.save_pretrained(resolve_memory_folder(args.memory, args.subfolder))  # where it was loaded from
    if args.plot:
        title = f'{memory.backbone} memory on {args.data} ({args.split}, {num_images} images)'
        plot = plot_per_class_accuracy(per_class, results, memory.class_names, args.plot, title)
        if plot is not None:  # else a warning said why
            print(f'plot: {plot}')
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from ..io.factory import create_model_from_spec
    from ..memory import AnglePrototypeMemory, image_paths

    memory = AnglePrototypeMemory.from_pretrained(args.memory, subfolder=args.subfolder)
    paths = image_paths(args.images)  # a missing file fails before the backbone is loaded
    model = create_model_from_spec(args.model or memory.local_backbone)
    top = memory.predict_images(model, paths, top_k=args.top_k, method=args.method, batch_size=args.batch_size)
    for path, classes in zip(paths, top):
        print(f'{path}  ' + '  '.join(f'{name} {score:.4f}' for name, score in classes))
    return 0
