""" Training throughput of scripts/train.py against timm's own training loop, on this machine.

    python scripts/bench_train.py --model test_resnet --img-size 32 --batch-size 64 --repeats 3
    python scripts/bench_train.py --before /tmp/main-tree   # also the trainer of another checkout

Both loops train the same model on the same data (scikit-learn digits through the same timm
transforms and DataLoader settings), batch size and optimizer (AdamW, cosine schedule). The timm
baseline is the inner loop of timm's ``train.py``: ``timm.task.ClassificationTask`` forward and
loss, backward, ``optimizer.step``, ``lr_scheduler.step_update``. Every measurement is its own
subprocess (so peak memory is per loop), the two alternate, and each times its last epoch, the
first being warm-up. Printed: images per second of wall-clock time and per second of the process's
CPU time (median over repeats; on a shared machine the CPU rate is the one to read), their ratios
to timm, and peak resident memory. Not a test: the numbers depend on the machine and its load.
``--before DIR`` adds the CE and CE+U(1) runs of the trainer in another checkout (its ``timm_u1``
imported from DIR), so a change to the trainer or the loss is measured against the code before it,
in the same run.
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
from typing import Dict, List

from timm_u1.cli.options import Parser, integer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_rate(stamps: List[tuple]) -> float:
    """Images per CPU-second of the last epoch's training steps: ``stamps`` are (epoch, process CPU time,
    images) at each training loss, and the steps between the epoch's first and last loss are counted.

    CPU time of one single-threaded process is what the loop costs, whatever else runs on the machine;
    wall-clock rates on a shared machine mostly measure the other jobs.
    """
    last = [s for s in stamps if s[0] == stamps[-1][0]]
    return sum(n for _, _, n in last[1:]) / (last[-1][1] - last[0][1])


def _stamp_training_losses() -> List[tuple]:
    """Record (epoch, CPU time, images) at each training call of ``U1Loss.parts`` (the trainer's loss in
    every version of timm_u1); an evaluation's calls run without grad and are left out."""
    import torch

    from timm_u1.core.loss import U1Loss

    stamps, parts, epoch = [], U1Loss.parts, [0]

    def stamped(self, out, target, *a, **kw):
        if torch.is_grad_enabled():
            stamps.append((epoch[0], time.process_time(), len(target)))
        elif stamps and stamps[-1][0] == epoch[0]:
            epoch[0] += 1  # the first evaluation call ends the epoch
        return parts(self, out, target, *a, **kw)
    U1Loss.parts = stamped
    return stamps


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
    model = timm.create_model(args.model, num_classes=10)
    cfg = resolve_data_config(dict(input_size=(3, args.img_size, args.img_size)), model=model)
    transform = create_transform(**{k: cfg[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')},
                                 is_training=True)
    loader = DataLoader(TransformDataset(ds, transform), batch_size=args.batch_size, shuffle=True, num_workers=0)
    optimizer = create_optimizer_v2(model, opt='adamw', lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=args.epochs, updates_per_epoch=len(loader))
    task = ClassificationTask(model, criterion=torch.nn.CrossEntropyLoss(), verbose=False)
    task.train()
    num_updates, rate, stamps = 0, 0.0, []
    for epoch in range(args.epochs):
        seen, start = 0, time.perf_counter()
        for images, target in loader:
            stamps.append((epoch, time.process_time(), len(target)))
            loss = task(images, target)['loss']
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates)
            seen += len(images)
        scheduler.step(epoch + 1)
        rate = seen / (time.perf_counter() - start)
    return dict(images_per_s=rate, images_per_cpu_s=cpu_rate(stamps), peak_rss_mb=peak_rss_mb())


def ours(args: argparse.Namespace, loss: str) -> Dict[str, float]:
    """timm_u1's trainer (what ``timm-u1 train`` and scripts/train.py run), parsed from the same options."""
    from timm_u1.cli.train import add_arguments, config_from_args
    from timm_u1.training import train

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    stamps = _stamp_training_losses()
    with tempfile.TemporaryDirectory() as out:
        summary = train(config_from_args(parser.parse_args([
            '--data', args.data, '--model', args.model, '--img-size', str(args.img_size),
            '--batch-size', str(args.batch_size), '--epochs', str(args.epochs), '--loss', loss,
            '--lr', '1e-3', '--output', out, '--no-export', '--no-progress'])))
    return dict(images_per_s=summary['final']['train_images_per_s'], images_per_cpu_s=cpu_rate(stamps),
                peak_rss_mb=peak_rss_mb())


LOOPS = {
    'timm': timm_loop,
    'train.py CE': lambda a: ours(a, 'ce'),
    'train.py CE+U(1)': lambda a: ours(a, 'u1'),
    'before: CE': lambda a: ours(a, 'ce'),  # run with PYTHONPATH=--before
    'before: CE+U(1)': lambda a: ours(a, 'u1'),
}


def _digits_subset(images: int, folder: str) -> str:
    """The first ``images`` digits training and test images, saved to disk in ``folder``."""
    from datasets import DatasetDict

    from timm_u1.data import load_image_dataset

    splits = {split: load_image_dataset('digits', split=split) for split in ('train', 'test')}
    subsets = {split: ds.select(range(min(images, ds.num_rows))) for split, ds in splits.items()}
    DatasetDict(subsets).save_to_disk(folder)
    return folder


def _child(name: str, common: List[str], before: str = None) -> Dict[str, float]:
    """One loop in its own process (so peak memory is its own); 'before' loops import timm_u1 from ``before``."""
    env = dict(os.environ)
    if name.startswith('before'):
        env['PYTHONPATH'] = os.pathsep.join([os.path.abspath(before), env.get('PYTHONPATH', '')])
    done = subprocess.run([sys.executable, __file__, '--one', name, *common], capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f'{name} failed:\n{done.stderr[-2000:]}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> int:
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='test_resnet')
    p.add_argument('--img-size', type=integer(8), default=32)
    p.add_argument('--batch-size', type=integer(1), default=64)
    p.add_argument('--epochs', type=integer(2), default=2,
                   help='per measurement; only the last is timed (the first is warm-up)')
    p.add_argument('--repeats', type=integer(1), default=3)
    p.add_argument('--threads', type=integer(1), default=None, help="torch threads in every loop (default: torch's)")
    p.add_argument('--images', type=integer(1), default=None,
                   help='the first N digits training and test images only (default: all 1347 and 450)')
    p.add_argument('--data', default='digits', help=argparse.SUPPRESS)  # set for the child processes
    p.add_argument('--before', default=None, metavar='DIR',
                   help="a checkout whose trainer also runs, as 'before: CE' and 'before: CE+U(1)'")
    p.add_argument('--one', choices=LOOPS, help=argparse.SUPPRESS)  # child process: run one loop
    args = p.parse_args(argv)
    if args.before and not os.path.isdir(os.path.join(args.before, 'timm_u1')):
        p.error(f'--before {args.before}: not a checkout (no timm_u1 folder in it).')
    if args.one:
        import torch
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(dict(LOOPS[args.one](args), threads=torch.get_num_threads())))
        return 0

    loops = [name for name in LOOPS if args.before or not name.startswith('before')]
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in loops}
    with tempfile.TemporaryDirectory() as tmp:
        data = _digits_subset(args.images, tmp) if args.images else 'digits'
        common = ['--data', data, '--model', args.model, '--img-size', str(args.img_size),
                  '--batch-size', str(args.batch_size), '--epochs', str(args.epochs)]
        common += ['--threads', str(args.threads)] if args.threads else []
        for r in range(args.repeats):
            for name in loops:
                results[name].append(_child(name, common, args.before))
                m = results[name][-1]
                print(f'repeat {r + 1}/{args.repeats} {name}: {m["images_per_s"]:.1f} img/s, '
                      f'{m["images_per_cpu_s"]:.1f} img/CPU-s', flush=True)

    base = statistics.median(m['images_per_s'] for m in results['timm'])
    cpu_base = statistics.median(m['images_per_cpu_s'] for m in results['timm'])
    print(f'\n{args.model} at {args.img_size}px, batch {args.batch_size}, digits train split, '
          f'{results["timm"][0]["threads"]} torch threads, median of {args.repeats} '
          f'(last of {args.epochs} epochs timed)')
    print(f'{"loop":<18} {"img/s":>8} {"vs timm":>8} {"img/CPU-s":>10} {"vs timm":>8} {"peak RSS MB":>12}')
    for name, runs in results.items():
        rate = statistics.median(m['images_per_s'] for m in runs)
        cpu = statistics.median(m['images_per_cpu_s'] for m in runs)
        rss = max(m['peak_rss_mb'] for m in runs)
        print(f'{name:<18} {rate:8.1f} {rate / base:7.2f}x {cpu:10.1f} {cpu / cpu_base:7.2f}x {rss:12.0f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
