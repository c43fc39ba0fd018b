""" Training throughput of scripts/train.py against timm's own training loop, on this machine.

    python scripts/bench_train.py --model test_resnet --img-size 32 --batch-size 64 --repeats 3
    python scripts/bench_train.py --threads 1 --repeats 9 --clock cpu --baseline-tree /tmp/main

Both loops train the same model on the same data (scikit-learn digits through the same timm
transforms and DataLoader settings), batch size and optimizer (AdamW, cosine schedule). The timm
baseline is the inner loop of timm's ``train.py``: ``timm.task.ClassificationTask`` forward and
loss, backward, ``optimizer.step``, ``lr_scheduler.step_update``. Every measurement is its own
subprocess (so peak memory is per loop), the loops alternate, and each times its epochs after the
first, which is warm-up. ``--clock cpu`` times the process's CPU time instead of the wall clock, so
that other jobs on a shared machine do not count. ``--baseline-tree`` also runs timm_u1's loops
with timm_u1 imported from another source tree (e.g. a worktree of the commit before a change),
in the same rotation. Printed: images per second (median over repeats), the ratio to timm (median
of the per-repeat ratios, with their range), and peak resident memory. Not a test: the numbers
depend on the machine and its load.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from timm_u1.cli.options import Parser, integer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def after_warmup(rates: List[float]) -> float:
    """Images per second over every epoch but the first (each epoch sees the same images)."""
    return len(rates[1:]) / sum(1 / r for r in rates[1:])


def timm_loop(args: argparse.Namespace) -> Dict[str, float]:
    """timm's train_one_epoch core on the data and transforms train.py uses."""
    import torch
    from torch.utils.data import DataLoader

    import timm
    from timm.data import create_transform, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.task import ClassificationTask
    from timm_u1.data import TransformDataset, load_image_dataset

    torch.manual_seed(0)
    ds = load_image_dataset(args.data, split='train')
    model = timm.create_model(args.model, num_classes=ds.features['label'].num_classes)
    cfg = resolve_data_config(dict(input_size=(3, args.img_size, args.img_size)), model=model)
    transform = create_transform(**{k: cfg[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')},
                                 is_training=True)
    loader = DataLoader(TransformDataset(ds, transform), batch_size=args.batch_size, shuffle=True, num_workers=0)
    optimizer = create_optimizer_v2(model, opt='adamw', lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=args.epochs, updates_per_epoch=len(loader))
    task = ClassificationTask(model, criterion=torch.nn.CrossEntropyLoss(), verbose=False)
    task.train()
    num_updates, rates = 0, []
    for epoch in range(args.epochs):
        seen, start = 0, time.perf_counter()
        for images, target in loader:
            loss = task(images, target)['loss']
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates)
            seen += len(images)
        scheduler.step(epoch + 1)
        rates.append(seen / (time.perf_counter() - start))
    return dict(images_per_s=after_warmup(rates), peak_rss_mb=peak_rss_mb())


def ours(args: argparse.Namespace, loss: str) -> Dict[str, float]:
    """timm_u1's trainer (what ``timm-u1 train`` and scripts/train.py run), parsed from the same options."""
    from timm_u1.cli.train import add_arguments, config_from_args
    from timm_u1.training import train
    from timm_u1.training.trainer import METRICS_NAME, MetricsLog

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with tempfile.TemporaryDirectory() as out:
        train(config_from_args(parser.parse_args([
            '--data', args.data, '--model', args.model, '--img-size', str(args.img_size),
            '--batch-size', str(args.batch_size), '--epochs', str(args.epochs), '--loss', loss,
            '--lr', '1e-3', '--output', out, '--no-export', '--no-progress'])))
        rates = [r['train_images_per_s'] for r in MetricsLog(Path(out) / METRICS_NAME).read()]
    return dict(images_per_s=after_warmup(rates), peak_rss_mb=peak_rss_mb())


LOOPS = {
    'timm': timm_loop,
    'train.py CE': lambda a: ours(a, 'ce'),
    'train.py CE+U(1)': lambda a: ours(a, 'u1'),
}


def child_env(tree: str = None) -> Dict[str, str]:
    """The environment of a measurement: timm_u1 imported from ``tree`` if given."""
    env = dict(os.environ)
    if tree:
        env['PYTHONPATH'] = os.pathsep.join([tree] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    return env


def run_one(args: argparse.Namespace) -> int:
    """Child process: run one loop and print its measurement as JSON."""
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == 'cpu':
        # both loops time their epochs with time.perf_counter; the process's CPU time instead leaves
        # out what other jobs on a shared machine take (one thread, loader workers 0)
        time.perf_counter = time.process_time
    import timm_u1
    result = dict(LOOPS[args.one](args), threads=torch.get_num_threads(), timm_u1=str(Path(timm_u1.__file__).parent))
    print(json.dumps(result))
    return 0


def main(argv: List[str] = None) -> int:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='test_resnet')
    p.add_argument('--data', default='digits', help='any --data of timm-u1 train (its train split is timed)')
    p.add_argument('--img-size', type=integer(8), default=32)
    p.add_argument('--batch-size', type=integer(1), default=64)
    p.add_argument('--epochs', type=integer(2), default=2, help='per measurement; all but the first are timed')
    p.add_argument('--repeats', type=integer(1), default=3)
    p.add_argument('--threads', type=integer(1), default=None, help="torch threads in every loop (default: torch's)")
    p.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                   help="time the epoch by the wall clock or by the process's CPU time")
    p.add_argument('--baseline-tree', default=None,
                   help="also run timm_u1's loops importing timm_u1 from this source tree (the 'before' of a change)")
    p.add_argument('--loops', nargs='+', choices=LOOPS, default=list(LOOPS),
                   help="the loops to run ('timm' always runs: it is the baseline)")
    p.add_argument('--one', choices=LOOPS, help=argparse.SUPPRESS)  # child process: run one loop
    args = p.parse_args(argv)
    if args.one:
        return run_one(args)
    if args.baseline_tree and not (Path(args.baseline_tree) / 'timm_u1' / '__init__.py').is_file():
        p.error(f'--baseline-tree {args.baseline_tree} holds no timm_u1 package; pass a checkout of this repository.')

    # (label, loop, source tree): the baseline tree's loops run in the same rotation
    loops = ['timm'] + [name for name in args.loops if name != 'timm']
    runs = [(name, name, None) for name in loops]
    if args.baseline_tree:
        runs += [(f'{name} (baseline)', name, args.baseline_tree) for name in loops if name != 'timm']
    results: Dict[str, List[Dict[str, float]]] = {label: [] for label, _, _ in runs}
    common = ['--model', args.model, '--data', args.data, '--img-size', str(args.img_size),
              '--batch-size', str(args.batch_size), '--epochs', str(args.epochs), '--clock', args.clock]
    common += ['--threads', str(args.threads)] if args.threads else []
    for r in range(args.repeats):
        order = runs[r % len(runs):] + runs[:r % len(runs)]  # rotate who goes first
        for label, loop, tree in order:
            out = subprocess.run([sys.executable, __file__, '--one', loop, *common], env=child_env(tree),
                                 check=True, capture_output=True, text=True).stdout
            results[label].append(json.loads(out.strip().splitlines()[-1]))
            print(f'repeat {r + 1}/{args.repeats} {label}: {results[label][-1]["images_per_s"]:.1f} img/s', flush=True)

    base = [m['images_per_s'] for m in results['timm']]
    print(f'\n{args.model} at {args.img_size}px, batch {args.batch_size}, {args.data} train split, '
          f'{results["timm"][0]["threads"]} torch threads, {args.clock} clock, median of {args.repeats} '
          f'(epochs 2-{args.epochs} of each timed)')
    if args.baseline_tree:
        print(f'baseline: timm_u1 from {results[runs[-1][0]][0]["timm_u1"]}')
    print(f'{"loop":<29} {"img/s":>8} {"vs timm":>8} {"per-repeat ratios":>18} {"peak RSS MB":>12}')
    for label, runs_of in results.items():
        rate = statistics.median(m['images_per_s'] for m in runs_of)
        ratios = [m['images_per_s'] / b for m, b in zip(runs_of, base)]
        rss = max(m['peak_rss_mb'] for m in runs_of)
        print(f'{label:<29} {rate:8.1f} {statistics.median(ratios):7.3f}x '
              f'{min(ratios):8.3f}-{max(ratios):.3f}x {rss:12.0f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
