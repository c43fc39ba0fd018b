"""Training throughput of V1 models against their base, measured in one run: what the LGN pre-filter and each
lateral step cost.

Two families, each against its own baseline:

* a timm model with the V1 stem (``v1_<arch>``: pre-filter only, then 1 and 2 lateral steps) against the
  plain ``<arch>``, same weights, same input;
* the registered ``lgn_v1net_s`` with 0 (the no-lateral arm), 1 and 2 (the default) lateral steps, against
  the same network without the pre-filter and without lateral steps.

A training step is forward, cross-entropy, backward and an AdamW update on a random batch. The variants
alternate step by step (round-robin), so a change of load hits all alike, and times are this process's
CPU seconds (``time.process_time``, one thread), which other jobs on the cores inflate far less than wall
time. Printed: images per CPU second, and the ratio to the baseline (< 1 = slower).

    python scripts/bench_v1.py                                                # resnet18 at 112 px, 64-image batches
    python scripts/bench_v1.py --arch test_resnet --size 32 --batch 4 --steps 1   # smallest setting (the suite runs it)
"""
import argparse
import os
import sys
import time
from typing import Dict, List

os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import timm  # noqa: E402

import timm_u1  # noqa: E402,F401  (registers v1_<arch> and lgn_v1net_*)


def variants(arch: str) -> Dict[str, Dict[str, object]]:
    """name -> (model name, kwargs); the first of each family is its baseline."""
    return {
        f'{arch} (baseline)': dict(name=arch),
        f'v1_{arch}, pre-filter only': dict(name=f'v1_{arch}', lateral_steps=0),
        f'v1_{arch}, pre-filter + 1 lateral step (default)': dict(name=f'v1_{arch}', lateral_steps=1),
        f'v1_{arch}, pre-filter + 2 lateral steps': dict(name=f'v1_{arch}', lateral_steps=2),
        'lgn_v1net_s, no pre-filter, no lateral (baseline)': dict(name='lgn_v1net_s', prefilter=False, lateral_steps=0),
        'lgn_v1net_s, pre-filter, no lateral': dict(name='lgn_v1net_s', lateral_steps=0),
        'lgn_v1net_s, pre-filter + 1 lateral step': dict(name='lgn_v1net_s', lateral_steps=1),
        'lgn_v1net_s, pre-filter + 2 lateral steps (default)': dict(name='lgn_v1net_s'),
    }


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--arch', default='resnet18', help='the timm architecture the V1 stem is added to')
    p.add_argument('--size', type=int, default=112, help='input size of the timm model (lgn_v1net_s: 32)')
    p.add_argument('--batch', type=int, default=64)
    p.add_argument('--steps', type=int, default=10, help='timed training steps per variant')
    args = p.parse_args(argv)
    if args.size < 16 or args.batch < 1 or args.steps < 1:
        p.error('--size must be >= 16, --batch and --steps >= 1')
    torch.set_num_threads(1)
    specs = variants(args.arch)
    models, optims, inputs = {}, {}, {}
    for label, spec in specs.items():
        torch.manual_seed(0)
        kwargs = {k: v for k, v in spec.items() if k != 'name'}
        models[label] = timm.create_model(spec['name'], num_classes=10, **kwargs).train()
        optims[label] = torch.optim.AdamW(models[label].parameters(), lr=1e-3)
        size = 32 if spec['name'].startswith('lgn_') else args.size
        inputs[label] = (torch.randn(args.batch, 3, size, size), torch.randint(0, 10, (args.batch,)))
    spent = {label: 0.0 for label in specs}

    def step(label: str) -> None:
        x, y = inputs[label]
        loss = torch.nn.functional.cross_entropy(models[label](x), y)
        loss.backward()
        optims[label].step()
        optims[label].zero_grad()

    for label in specs:  # one untimed step each: allocations and first-call costs
        step(label)
    wall = time.perf_counter()
    for _ in range(args.steps):
        for label in specs:
            start = time.process_time()
            step(label)
            spent[label] += time.process_time() - start
    print(f'{args.arch} at {args.size} px and lgn_v1net_s at 32 px, batch {args.batch}, {args.steps} timed steps '
          f'each, images per CPU second of this process (1 thread), variants interleaved step by step')
    print(f'{"variant":<58} {"img/CPU-s":>10} {"vs baseline":>12}')
    baseline = None
    for label in specs:
        rate = args.batch * args.steps / max(spent[label], 1e-9)
        if label.endswith('(baseline)'):
            baseline = rate
        print(f'{label:<58} {rate:>10.1f} {rate / baseline:>11.2f}x')
    print(f'wall time {time.perf_counter() - wall:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
