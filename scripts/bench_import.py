#!/usr/bin/env python3
"""Import cost of timm_u1: ``import timm_u1`` (which imports timm and registers every u1_ twin)
against ``import timm`` alone, each in fresh interpreters, alternated, in one run (target: <= 1.20).

    python scripts/bench_import.py --repeats 10
"""
import argparse
import statistics
import subprocess
import sys
import time


def time_import(module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, '-c', f'import {module}'], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=10)
    args = parser.parse_args()

    time_import('timm_u1')  # warm the file cache for both
    times = {'timm': [], 'timm_u1': []}
    for i in range(args.repeats):
        for module in (('timm', 'timm_u1') if i % 2 == 0 else ('timm_u1', 'timm')):
            times[module].append(time_import(module))
    timm_s, u1_s = statistics.median(times['timm']), statistics.median(times['timm_u1'])
    print(f'import timm     median {timm_s:.3f} s over {args.repeats} fresh interpreters')
    print(f'import timm_u1  median {u1_s:.3f} s')
    print(f'ratio timm_u1 / timm: {u1_s / timm_s:.3f} (target <= 1.20)')


if __name__ == '__main__':
    main()
