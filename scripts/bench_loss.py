#!/usr/bin/env python3
"""Training-step cost of the U(1) loss: ``u1_resnet18`` + ``U1Loss`` against ``resnet18`` + plain
cross-entropy, on the same batch, measured in one run.

Both models start from the same weights; the two steps are interleaved so that machine load hits
both alike. A second copy of the base model with cross-entropy runs as a control: its ratio to the
first is the noise floor of the measurement. Load only ever adds time, so the ratio of the fastest
steps is the headline figure (target <= 1.02); beside it, the median over rounds of the ratio of
the two steps of a round, which shares their load.

    python scripts/bench_loss.py --batch-size 32 --img-size 96 --steps 30

``--clock cpu`` times the process's CPU time instead of the wall clock, so that other jobs on a
shared machine do not count. ``--loss-only`` times forward + backward of the loss alone on
(batch, classes) logits: ``U1Loss`` with and without its hue term against ``F.cross_entropy``,
``--calls`` calls per round, rounds interleaved. ``--baseline-tree`` adds the ``U1Loss`` of another
source tree (e.g. the commit before a change, ``git archive <commit> | tar -x -C /tmp/before``) to
the same rotation, in this process: the before/after ratio of one run.

    python scripts/bench_loss.py --loss-only --batch-size 64 --num-classes 10 --steps 20 --clock cpu
    python scripts/bench_loss.py --model test_resnet --img-size 32 --batch-size 64 --num-classes 10 \
        --steps 60 --clock cpu --baseline-tree /tmp/before
"""
import argparse
import importlib
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional

import timm
import torch
import torch.nn.functional as F

import timm_u1
from timm_u1.cli.options import Parser, integer, number


def make_step(model: torch.nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
              clock: Callable[[], float] = time.perf_counter) -> Callable[[], float]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> float:
        start = clock()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return clock() - start
    return step


def report(times: Dict[str, List[float]], labels: Dict[str, str], unit: float, unit_name: str,
           baseline: str) -> None:
    """Fastest and median of each timing, and its ratios to ``baseline``'s: of the fastest, and the
    median of the per-round ratios (each round runs both back to back, so it shares their load)."""
    for name, label in labels.items():
        paired = statistics.median(a / b for a, b in zip(times[name], times[baseline]))
        print(f'{label:38s} fastest {min(times[name]) * unit:9.1f} {unit_name}, '
              f'median {statistics.median(times[name]) * unit:9.1f} {unit_name}, '
              f'{min(times[name]) / min(times[baseline]):.3f}x fastest, {paired:.3f}x paired median')


def interleaved(runs: Dict[str, Callable[[], float]], rounds: int, warmup: int) -> Dict[str, List[float]]:
    """Each of ``runs`` (name -> a function returning its time) once per round, rotating who goes first."""
    times = {name: [] for name in runs}
    for i in range(warmup + rounds):
        for name in list(runs)[i % len(runs):] + list(runs)[:i % len(runs)]:
            t = runs[name]()
            if i >= warmup:
                times[name].append(t)
    return times


def baseline_loss_class(tree: str) -> type:
    """``U1Loss`` of the timm_u1 in another source tree, imported beside this one as ``timm_u1_baseline``.

    Only ``timm_u1/core`` is imported from there (the package ``__init__`` would register the u1_
    models with timm a second time): empty parent packages are put in ``sys.modules`` with the
    tree's paths, which is how Python resolves the relative imports of the modules below them.
    """
    root = Path(tree) / 'timm_u1'
    for name, path in (('timm_u1_baseline', root), ('timm_u1_baseline.core', root / 'core')):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    return importlib.import_module('timm_u1_baseline.core.loss').U1Loss


def loss_only(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    """Forward + backward of the loss alone, per call."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch_size, args.num_classes, generator=g).requires_grad_(True)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=g)
    losses = {'ce': F.cross_entropy, 'ce only': timm_u1.U1Loss(hue_weight=0.0),
              'u1': timm_u1.U1Loss(hue_weight=args.hue_weight)}
    labels = {'ce': 'F.cross_entropy', 'ce only': 'U1Loss(hue_weight=0)',
              'u1': f'U1Loss(hue_weight={args.hue_weight:g})'}
    if args.baseline_tree:
        losses['u1 baseline'] = baseline_loss_class(args.baseline_tree)(hue_weight=args.hue_weight)
        labels['u1 baseline'] = labels['u1'] + ' (baseline)'

    def timed(fn):
        def run() -> float:
            start = clock()
            for _ in range(args.calls):
                fn(logits, y).backward()
            return (clock() - start) / args.calls
        return run
    if args.profile:
        profile(losses, logits, y, args.calls)
    times = interleaved({name: timed(fn) for name, fn in losses.items()}, args.steps, args.warmup)
    print(f'loss alone, forward + backward, logits {args.batch_size} x {args.num_classes}, '
          f'{args.steps} rounds of {args.calls} calls')
    report(times, labels, 1e6, 'us', 'ce')
    if args.baseline_tree:
        before_after(times)


def before_after(times: Dict[str, List[float]]) -> None:
    """The new U1Loss against the baseline tree's, of the same rotation."""
    paired = statistics.median(a / b for a, b in zip(times['u1'], times['u1 baseline']))
    print(f"after / before, u1 / u1 baseline: fastest {min(times['u1']) / min(times['u1 baseline']):.3f}, "
          f'paired median {paired:.3f}')


def profile(losses: Dict[str, Callable], logits: torch.Tensor, y: torch.Tensor, calls: int) -> None:
    """Where a loss call's time goes: operators dispatched per call (forward + backward) and the costliest."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, fn in losses.items():
        fn(logits, y).backward()  # warm-up
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(calls):
                fn(logits, y).backward()
        ops = [e for e in prof.key_averages() if e.key.startswith('aten::')]
        top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        print(f'{name:8s} {sum(e.count for e in ops) / calls:6.1f} aten operators per call; most self time: '
              + ', '.join(f'{e.key[6:]} x{e.count / calls:g}' for e in top))


def main(argv: Optional[List[str]] = None) -> None:
    parser = Parser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='resnet18')
    parser.add_argument('--batch-size', type=integer(1), default=32)
    parser.add_argument('--img-size', type=integer(8), default=96)
    parser.add_argument('--num-classes', type=integer(3), default=100)
    parser.add_argument('--steps', type=integer(1), default=30, help='timed steps (rounds with --loss-only)')
    parser.add_argument('--warmup', type=integer(0), default=3)
    parser.add_argument('--hue-weight', type=number(0), default=1.0)
    parser.add_argument('--clock', choices=('wall', 'cpu'), default='wall',
                        help="time each step by the wall clock or by the process's CPU time")
    parser.add_argument('--loss-only', action='store_true', help='time the loss alone, not a training step')
    parser.add_argument('--calls', type=integer(1), default=200, help='loss calls per round of --loss-only')
    parser.add_argument('--profile', action='store_true', help='with --loss-only: count the operators of a call')
    parser.add_argument('--baseline-tree', default=None,
                        help="also time the U1Loss of this source tree (the 'before' of a change) in the same rotation")
    args = parser.parse_args(argv)
    if args.baseline_tree and not (Path(args.baseline_tree) / 'timm_u1' / 'core' / 'loss.py').is_file():
        parser.error(f'--baseline-tree {args.baseline_tree} holds no timm_u1/core/loss.py; '
                     f'pass a checkout of this repository.')
    clock = time.process_time if args.clock == 'cpu' else time.perf_counter
    print(f'torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}, '
          f'{args.clock} clock, timm_u1 from {timm_u1.__file__}')
    if args.loss_only:
        loss_only(args, clock)
        return

    steps(args, clock)


def steps(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    """Training steps of the same weights and batch: plain CE, ``U1Loss`` without and with its hue term,
    and a second plain CE as the control."""
    torch.manual_seed(0)
    base = timm.create_model(args.model, num_classes=args.num_classes).train()
    models = {'ce': base}
    arches = {'ce only': 'u1_' + args.model, 'u1': 'u1_' + args.model, 'control': args.model}
    losses = {'ce': F.cross_entropy, 'ce only': timm_u1.U1Loss(hue_weight=0.0),
              'u1': timm_u1.U1Loss(hue_weight=args.hue_weight), 'control': F.cross_entropy}
    labels = {'ce': f'{args.model} + cross-entropy', 'ce only': f'u1_{args.model} + U1Loss(hue_weight=0)',
              'u1': f'u1_{args.model} + U1Loss', 'control': f'{args.model} + CE (control)'}
    if args.baseline_tree:
        arches['u1 baseline'] = 'u1_' + args.model
        losses['u1 baseline'] = baseline_loss_class(args.baseline_tree)(hue_weight=args.hue_weight)
        labels['u1 baseline'] = f'u1_{args.model} + U1Loss (baseline)'
    for name, arch in arches.items():
        models[name] = timm.create_model(arch, num_classes=args.num_classes).train()
        models[name].load_state_dict(base.state_dict())
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, args.num_classes, (args.batch_size,))
    times = interleaved({name: make_step(models[name], losses[name], x, y, clock) for name in models},
                        args.steps, args.warmup)
    print(f'{args.model} batch {args.batch_size} x {args.img_size}px, {args.num_classes} classes, {args.steps} steps')
    report(times, labels, 1000, 'ms', 'ce')
    pairs = [('u1', 'ce', 'ratio u1 / ce'), ('u1', 'ce only', 'hue term, u1 / ce only'),
             ('control', 'ce', 'noise floor, control / ce')]
    if args.baseline_tree:
        pairs.insert(1, ('u1 baseline', 'ce', 'before, u1 baseline / ce'))
    for name, base_name, what in pairs:
        paired = statistics.median(a / b for a, b in zip(times[name], times[base_name]))
        print(f"{what}: fastest {min(times[name]) / min(times[base_name]):.3f}, paired median {paired:.3f}"
              + (' (target <= 1.02)' if what == 'ratio u1 / ce' else ''))
    if args.baseline_tree:
        before_after(times)


if __name__ == '__main__':
    main()
