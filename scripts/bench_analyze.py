"""Benchmark: the cost of ``analyze`` with each control level, as a ratio to a plain forward pass.

    python scripts/bench_analyze.py [--images 450] [--controls none fast] [--baseline-tree PATH] [--repeats 1]
                                    [--clock wall|cpu]

The plain pass is ``forward_features`` of the model over the same preprocessed digits (the test split, data
loading included as in analyze); each ``analyze`` run is timed end to end without plots and without an output
folder. With ``--baseline-tree`` the same ``analyze`` calls also run with the timm_u1 of another source tree (e.g.
a worktree of an earlier commit), in a fresh process that times only the call, so that an old and a new analysis
are measured in one run against the same plain pass. Rounds rotate the order of the runs (load from other
processes then hits each alike); the table gives the median seconds and the ratio of medians to the plain pass.
``--clock cpu`` times the CPU seconds of the process (all its threads) instead of the wall clock: on a machine shared
with other jobs, wall time measures their load as much as the work.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from timm_u1.cli.options import Parser, integer, non_empty  # noqa: E402

# run with the timm_u1 of the tree on sys.path[0]; prints the seconds of the analyze call alone
_TIMED_CALL = """
import sys, time
sys.path.insert(0, sys.argv[1])
from timm_u1.analysis.analyzer import analyze
from timm_u1.data import load_image_dataset
from timm_u1.io.factory import create_model_from_spec
model = create_model_from_spec(sys.argv[2]).eval()
ds = load_image_dataset('digits', split='test')
ds = ds.select(range(min(int(sys.argv[3]), len(ds))))
clock = time.process_time if sys.argv[6] == 'cpu' else time.perf_counter
t0 = clock()
analyze(model, ds, batch_size=int(sys.argv[4]), progress=False, plots=False, controls=sys.argv[5])
print(clock() - t0)
"""


CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def plain_pass(model, ds, batch_size: int, clock=time.perf_counter) -> float:
    from timm_u1.data import make_loader

    t0 = clock()
    with torch.inference_mode():
        for x, _ in make_loader(ds, model, batch_size=batch_size):
            model.forward_features(x)
    return clock() - t0


def timed_in(tree: Path, args, level: str) -> float:
    """Seconds of one analyze call with the timm_u1 of ``tree``, in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, '-c', _TIMED_CALL, str(tree), args.model, str(args.images),
                           str(args.batch_size), level, args.clock], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f'analyze with the timm_u1 of {tree} failed: {done.stderr.strip()[-2000:]}')
    return float(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=non_empty, default=None, help='default: the offline Lite0')
    parser.add_argument('--images', type=integer(1, 450), default=450, help='test digits (default: %(default)s)')
    parser.add_argument('--batch-size', type=integer(1, 4096), default=32)
    parser.add_argument('--controls', nargs='+', default=['none', 'fast'], choices=['none', 'fast', 'full'])
    parser.add_argument('--baseline-tree', type=Path, default=None,
                        help='also time analyze with the timm_u1 of this source tree (a folder holding timm_u1/)')
    parser.add_argument('--repeats', type=integer(1, 100), default=1, help='rounds (default: %(default)s)')
    parser.add_argument('--clock', choices=sorted(CLOCKS), default='wall',
                        help="wall seconds, or the process's CPU seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.baseline_tree is not None and not (args.baseline_tree / 'timm_u1' / '__init__.py').is_file():
        parser.error(f'--baseline-tree {args.baseline_tree} holds no timm_u1 package; give a source tree (its root)')

    from timm_u1.analysis.analyzer import analyze
    from timm_u1.data import load_image_dataset
    from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec

    args.model = args.model or DEFAULT_MODEL
    model = create_model_from_spec(args.model).eval()
    ds = load_image_dataset('digits', split='test')
    ds = ds.select(range(min(args.images, len(ds))))

    clock = CLOCKS[args.clock]

    def this_tree(level: str) -> float:
        t0 = clock()
        analyze(model, ds, batch_size=args.batch_size, progress=False, plots=False, controls=level)
        return clock() - t0

    runs = {'plain forward_features': lambda: plain_pass(model, ds, args.batch_size, clock)}
    for level in args.controls:
        runs[f'analyze --controls {level}'] = (lambda lv=level: this_tree(lv))
        if args.baseline_tree is not None:
            runs[f'analyze --controls {level} (baseline tree)'] = (lambda lv=level: timed_in(args.baseline_tree, args, lv))
    times: Dict[str, List[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(runs[name]())
    print(f'model {args.model}, {len(ds)} digits, batch {args.batch_size}, {torch.get_num_threads()} threads, '
          f'{args.repeats} rounds, {args.clock} clock, load average {os.getloadavg()[0]:.1f} at the end'
          + (f', baseline tree {args.baseline_tree}' if args.baseline_tree else ''))
    plain = statistics.median(times['plain forward_features'])
    for name in names:
        seconds = statistics.median(times[name])
        print(f'  {name:45s} {seconds:8.1f} s  ratio {seconds / plain:.2f}')
    print(json.dumps({name: values for name, values in times.items()}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
