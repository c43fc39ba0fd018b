#!/usr/bin/env python3
"""``U1Loss`` under ``torch.compile``: graph breaks and the compiled loss step against compiled
plain cross-entropy, on the same logits, measured in one run.

The loss's input checks (finite logits, class indices in range, soft targets that are
distributions) used to break the graph and sync the host on every step; they now compile to an
asynchronous assert. The script prints the graph-break count of each loss
(``torch._dynamo.explain``) and the time of one forward + backward of the loss alone on (B, C)
logits: compiled ``U1Loss``, compiled ``F.cross_entropy`` and a second compiled cross-entropy as
an A/A control (its ratio to the first is the noise floor). The steps are interleaved, so machine
load hits all alike; the ratio of the fastest steps is the headline, medians beside it.

    python scripts/bench_compile.py --batch-size 256 --num-classes 1000 --steps 200
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import timm_u1


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--num-classes', type=int, default=1000)
    parser.add_argument('--steps', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--hue-weight', type=float, default=1.0)
    parser.add_argument('--backend', default='inductor')
    args = parser.parse_args()

    torch.manual_seed(0)
    logits = torch.randn(args.batch_size, args.num_classes, requires_grad=True)
    target = torch.randint(0, args.num_classes, (args.batch_size,))
    u1 = timm_u1.U1Loss(hue_weight=args.hue_weight)

    breaks = {}
    for name, fn in (('U1Loss', u1), ('cross_entropy', cross_entropy)):
        explained = torch._dynamo.explain(fn)(logits, target)
        breaks[name] = (explained.graph_count, explained.graph_break_count)
    torch._dynamo.reset()

    losses = {
        'ce': torch.compile(cross_entropy, backend=args.backend),
        'u1': torch.compile(u1, backend=args.backend),
        # a separate compiled function, so the control is not the same cached graph as 'ce'
        'control': torch.compile(lambda x, y: F.cross_entropy(x, y), backend=args.backend),
        'u1 eager': u1,
    }

    def step(fn) -> float:
        start = time.perf_counter()
        fn(logits, target).backward()
        logits.grad = None
        return time.perf_counter() - start

    times = {name: [] for name in losses}
    for i in range(args.warmup + args.steps):
        names = list(losses)
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate who goes first
            t = step(losses[name])
            if i >= args.warmup:
                times[name].append(t)

    print(f'torch {torch.__version__}, timm_u1 from {timm_u1.__file__}, threads {torch.get_num_threads()}, '
          f'backend {args.backend}')
    print(f'logits {args.batch_size} x {args.num_classes}, loss forward + backward, {args.steps} steps')
    for name, (graphs, n_breaks) in breaks.items():
        print(f'{name:14s} graphs {graphs}, graph breaks {n_breaks}')
    labels = {'ce': 'compiled cross-entropy', 'u1': 'compiled U1Loss', 'control': 'compiled CE (control)',
              'u1 eager': 'eager U1Loss'}
    for name, label in labels.items():
        print(f'{label:24s} fastest {min(times[name]) * 1e3:8.3f} ms, median {statistics.median(times[name]) * 1e3:8.3f} ms')
    for name in ('u1', 'control', 'u1 eager'):
        print(f'ratio {labels[name]} / compiled CE: fastest {min(times[name]) / min(times["ce"]):.2f}, '
              f'median {statistics.median(times[name]) / statistics.median(times["ce"]):.2f}')


if __name__ == '__main__':
    main()
