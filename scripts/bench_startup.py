"""Start-up of the command line: wall time and peak RSS of ``timm-u1 --help`` and of a command's help,
against the full parser (every command's module and the library imported: what ``timm-u1 --help`` did
before the launcher) measured in the same run, each in a fresh interpreter.

    python scripts/bench_startup.py --repeats 5
    python scripts/bench_startup.py --repeats 5 --old-tree /tmp/old   # also `python -m timm_u1.cli --help` of an old checkout

Prints one row per command line (median wall, median peak RSS) and its ratio to the baseline, then the
size of this venv and of its largest packages.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]

BASELINE = 'full parser (before)'


def _run(argv: List[str], pythonpath: str) -> Tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one fresh process."""
    env = {**os.environ, 'PYTHONPATH': pythonpath}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 2):
        raise RuntimeError(f'{" ".join(argv)} exited {proc.returncode}')
    return wall, usage.ru_maxrss / 1024  # Linux reports kB


def _cases(old_tree: Optional[Path]) -> Dict[str, Tuple[List[str], str]]:
    py, here = sys.executable, str(ROOT)
    cases = {
        BASELINE: ([py, '-c', 'from timm_u1.cli import build_parser; build_parser().parse_args(["--help"])'], here),
        'timm-u1 --help': ([py, '-m', 'timm_u1_launcher', '--help'], here),
        'timm-u1 --version': ([py, '-m', 'timm_u1_launcher', '--version'], here),
        'timm-u1 train --help': ([py, '-m', 'timm_u1_launcher', 'train', '--help'], here),
        'import torch (reference)': ([py, '-c', 'import torch'], here),
    }
    if old_tree is not None:
        cases['old checkout: timm-u1 --help'] = ([py, '-m', 'timm_u1.cli', '--help'], str(old_tree))
    return cases


def _size_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2 ** 20


def _install_sizes() -> None:
    import sysconfig

    site = Path(sysconfig.get_paths()['purelib'])
    print(f'\nvenv {Path(sys.prefix).resolve()}: {_size_mb(Path(sys.prefix)) / 1024:.2f} GB')
    sizes = sorted(((_size_mb(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:6]
    for mb, name in sizes:
        print(f'  {name:<28} {mb:8.0f} MB')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    parser.add_argument('--repeats', type=int, default=5, help='fresh processes per command line (>= 1)')
    parser.add_argument('--old-tree', type=Path, default=None, help='an old checkout to time as well')
    parser.add_argument('--no-sizes', action='store_true', help='skip the venv size')
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f'--repeats must be an integer >= 1, got {args.repeats}')
    cases = _cases(args.old_tree)
    walls: Dict[str, List[float]] = {name: [] for name in cases}
    rss: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so that a change of load hits every case alike
        for name, (argv, pythonpath) in cases.items():
            wall, peak = _run(argv, pythonpath)
            walls[name].append(wall)
            rss[name].append(peak)
    base_wall, base_rss = statistics.median(walls[BASELINE]), statistics.median(rss[BASELINE])
    print(f'{"command line":<32} {"wall s":>8} {"x base":>7} {"RSS MB":>8} {"x base":>7}   (medians of {args.repeats})')
    for name in cases:
        wall, peak = statistics.median(walls[name]), statistics.median(rss[name])
        print(f'{name:<32} {wall:8.3f} {wall / base_wall:7.3f} {peak:8.0f} {peak / base_rss:7.3f}')
    print(f'load average: {os.getloadavg()[0]:.1f}')
    if not args.no_sizes:
        _install_sizes()


if __name__ == '__main__':
    main()
