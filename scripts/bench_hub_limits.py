#!/usr/bin/env python3
"""Worst-case wall time of each Hub path of the command line against a broken Hub, from fresh processes.

For each Hub state (silent: accepts connections and never answers; refused: nothing listens; 500:
answers every request with HTTP 500) and each path (an ``hf-hub:`` model, timm's ``pretrained=True``
weights, a Hub dataset, a push), it runs the ``timm-u1`` command in a fresh process with
``TIMM_U1_HUB_TIMEOUT=LIMIT`` and prints its wall time, beside the same command with ``HF_HUB_OFFLINE=1``
measured in the same run (start-up and imports: the baseline), and what the Hub cost: wall - baseline,
as a multiple of the limit.

    python scripts/bench_hub_limits.py --limit 2
    python scripts/bench_hub_limits.py --limit 0.5 --states silent --paths model   # the suite's setting
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))  # the test Hubs: tests/hub_server.py

from hub_server import ErrorServer, SilentServer, closed_endpoint  # noqa: E402

PATHS = {
    'model': ['analyze', '--model', 'hf-hub:org/tiny', '--data', 'digits', '--out', '{tmp}/a'],
    'timm-pretrained': ['analyze', '--model', 'resnet10t', '--pretrained', '--data', 'digits', '--out', '{tmp}/b'],
    'dataset': ['analyze', '--model', 'test_resnet', '--data', 'org/ds', '--out', '{tmp}/c'],
    'push': ['push', '{tmp}/model', '--repo-id', 'org/tiny'],
}
STATES = ('silent', 'refused', '500')


def run(argv, env) -> tuple:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, '-m', 'timm_u1.cli', *argv], env=env, capture_output=True, text=True,
                          timeout=1800)
    last = (done.stderr.strip().splitlines() or [''])[-1]
    return time.perf_counter() - start, done.returncode, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--limit', type=float, default=2.0, help='TIMM_U1_HUB_TIMEOUT for the runs')
    parser.add_argument('--states', nargs='+', choices=STATES, default=list(STATES))
    parser.add_argument('--paths', nargs='+', choices=list(PATHS), default=list(PATHS))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix='bench-hub-') as tmp:
        if 'push' in args.paths:  # a model folder to push
            import timm

            import timm_u1

            timm_u1.save_pretrained(timm.create_model('u1_test_resnet', num_classes=3), Path(tmp) / 'model')
        base_env = dict(os.environ, HF_TOKEN='hf_bench_token', HF_HUB_DISABLE_XET='1', HF_HOME=f'{tmp}/hf-home',
                        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
                        TIMM_U1_HUB_TIMEOUT=str(args.limit))
        print(f'TIMM_U1_HUB_TIMEOUT={args.limit:g}; each row a fresh process; baseline: the same command with '
              f'HF_HUB_OFFLINE=1 in this run')
        print(f'{"state":8} {"path":16} {"wall s":>7} {"baseline s":>10} {"Hub s":>6} {"x limit":>7}  exit  message')
        for state in args.states:
            server = SilentServer() if state == 'silent' else ErrorServer(500) if state == '500' else None
            endpoint = server.endpoint if server else closed_endpoint()
            try:
                for name in args.paths:
                    argv = [a.format(tmp=tmp) for a in PATHS[name]]
                    env = dict(base_env, HF_ENDPOINT=endpoint, HF_HUB_CACHE=f'{tmp}/cache-{state}-{name}')
                    baseline, _, _ = run(argv, dict(env, HF_HUB_OFFLINE='1'))
                    wall, code, message = run(argv, env)
                    hub = max(wall - baseline, 0.0)
                    print(f'{state:8} {name:16} {wall:7.1f} {baseline:10.1f} {hub:6.1f} {hub / args.limit:7.2f}  '
                          f'{code:4}  {message[:150]}', flush=True)
            finally:
                if server:
                    server.close()


if __name__ == '__main__':
    main()
