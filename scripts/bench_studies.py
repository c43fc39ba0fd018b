""" Wall time of one study run with 1 worker process against N (``--jobs``), measured in one run.

    python scripts/bench_studies.py                       # from scratch: test_resnet, digits, 32 px, 3 epochs, 8 seeds
    python scripts/bench_studies.py --study finetune --model test_efficientnet --tasks digits:5

Every measurement is a fresh ``timm-u1 compare`` (or ``finetune``) process into an empty folder (so
the jobs' process start-up is counted), with one torch thread; the job counts alternate between
repeats. The script checks that every run wrote the same study.json (but for times and the job
count) and prints the median wall time per job count and its ratio to 1 job.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]


def study_command(args: argparse.Namespace, output: Path, jobs: int) -> List[str]:
    seeds = [str(s) for s in range(args.seeds)]
    if args.study == 'compare':
        return ['compare', '--data', args.data, '--model', args.model, '--img-size', str(args.img_size),
                '--epochs', str(args.epochs), '--seeds', *seeds, '--selection-seeds', '1000', '--lrs', '2e-3',
                '--hue-weights', '0.3', '--jobs', str(jobs), '--output', str(output),
                '--', '--scale', '0.7', '1.0', '--hflip', '0', '--color-jitter', '0', '--no-progress']
    return ['finetune', '--model', args.model, '--img-size', str(args.img_size), '--tasks', *args.tasks,
            '--seeds', *seeds, '--selection-seeds', '1000', '--lrs', '1e-2', '--hue-weights', '0.3',
            '--smoothings', '0.1', '--steps', str(args.steps), '--jobs', str(jobs), '--output', str(output)]


def measure(args: argparse.Namespace, output: Path, jobs: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'timm_u1.cli', *study_command(args, output, jobs)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f'{args.study} --jobs {jobs} failed: {done.stderr[-2000:]}')
    return seconds


def comparable(output: Path) -> Dict:
    study = json.loads((output / 'study.json').read_text())
    for key in ('seconds', 'execution'):
        study.pop(key)
    study['settings'].pop('command')
    return study


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--study', choices=('compare', 'finetune'), default='compare')
    p.add_argument('--data', default='digits', help='compare: its --data')
    p.add_argument('--tasks', nargs='+', default=['digits:5'], help='finetune: its --tasks')
    p.add_argument('--model', default=None, help='default: test_resnet (compare), test_efficientnet (finetune)')
    p.add_argument('--img-size', type=int, default=32)
    p.add_argument('--epochs', type=int, default=3, help='compare: epochs per run')
    p.add_argument('--steps', type=int, default=150, help='finetune: steps per run')
    p.add_argument('--seeds', type=int, default=8, help='test seeds (runs: 3 per seed for compare, 6 for finetune)')
    p.add_argument('--jobs', type=int, default=2, help='the job count measured against 1')
    p.add_argument('--repeats', type=int, default=2)
    args = p.parse_args()
    args.model = args.model or ('test_resnet' if args.study == 'compare' else 'test_efficientnet')
    times: Dict[int, List[float]] = {1: [], args.jobs: []}
    with tempfile.TemporaryDirectory(prefix='bench_studies_') as tmp:
        reference = None
        for r in range(args.repeats):
            for jobs in ((1, args.jobs) if r % 2 == 0 else (args.jobs, 1)):
                output = Path(tmp) / f'repeat{r}_jobs{jobs}'
                times[jobs].append(measure(args, output, jobs))
                print(f'repeat {r + 1}/{args.repeats} --jobs {jobs}: {times[jobs][-1]:.1f} s', flush=True)
                study = comparable(output)
                reference = reference or study
                if study != reference:
                    sys.exit(f'--jobs {jobs} wrote another study.json than the first run: the runs are not '
                             f'independent of where they ran.')
    base = statistics.median(times[1])
    print(f'\n{args.study}, {args.model} at {args.img_size} px, {args.seeds} test seeds, 1 torch thread per process, '
          f'median of {args.repeats}; study.json identical in every run')
    print(f'{"jobs":>4}  {"wall s":>8}  {"vs 1 job":>8}  {"median of per-repeat ratios":>27}')
    for jobs, values in times.items():
        # each repeat measures both job counts back to back: its ratio is the one least moved by other load
        per_repeat = statistics.median(v / b for v, b in zip(values, times[1]))
        print(f'{jobs:>4}  {statistics.median(values):8.1f}  {statistics.median(values) / base:7.2f}x  '
              f'{per_repeat:26.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
