#!/usr/bin/env python3
"""Worst-case wall time of each Hub path against a broken Hub, each the first Hub call of a fresh process.

For each Hub state (silent: accepts connections and never answers; refused: nothing listens; 500:
answers every request with HTTP 500) and each path (an ``hf-hub:`` model, timm's ``pretrained=True``
weights, a Hub dataset, a push: the functions behind ``--model``, ``--data`` and ``timm-u1 push``), a
fresh interpreter imports timm_u1, then times the call with ``TIMM_U1_HUB_TIMEOUT=LIMIT``. Beside it,
the same call with ``HF_HUB_OFFLINE=1`` in the same run (the call's own work without the Hub: the
baseline), and what the Hub cost: wall - baseline, as a multiple of the limit. Interpreter start-up
and imports are not timed: on a loaded machine they vary by more than the limits measured.

    python scripts/bench_hub_limits.py --limit 2
    python scripts/bench_hub_limits.py --limit 0.5 --states refused --paths model   # the suite's setting
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))  # the test Hubs: tests/hub_server.py

from hub_server import ErrorServer, SilentServer, closed_endpoint  # noqa: E402

PATHS = {
    'model': 'from timm_u1.io import create_model_from_spec as f; call = lambda: f("hf-hub:org/tiny")',
    'timm-pretrained': 'from timm_u1.io import create_model_from_spec as f; '
                       'call = lambda: f("resnet10t", pretrained=True)',
    'dataset': 'from timm_u1.data import load_image_dataset as f; call = lambda: f("org/ds")',
    'push': 'from timm_u1.publish import push_path as f; call = lambda: f(sys.argv[1], "org/tiny")',
}
STATES = ('silent', 'refused', '500')
TIMED = """
import sys, time
{setup}
start = time.perf_counter()
try:
    call()
    outcome = 'no error'
except Exception as e:
    outcome = f'{{type(e).__name__}}: {{" ".join(str(e).split())}}'
print(f'{{time.perf_counter() - start:.3f}}\t{{outcome}}')
"""


def run(path: str, folder: str, env) -> tuple:
    done = subprocess.run([sys.executable, '-c', TIMED.format(setup=PATHS[path]), folder], env=env,
                          capture_output=True, text=True, timeout=1800)
    line = (done.stdout.strip().splitlines() or ['nan\tno output: ' + done.stderr[-300:]])[-1]
    wall, _, outcome = line.partition('\t')
    return float(wall), outcome


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
                        TIMM_U1_HUB_TIMEOUT=str(args.limit), OMP_NUM_THREADS='1')
        print(f'TIMM_U1_HUB_TIMEOUT={args.limit:g}; each row the first Hub call of a fresh process; baseline: the '
              f'same call with HF_HUB_OFFLINE=1 in this run')
        print(f'{"state":8} {"path":16} {"wall s":>7} {"baseline s":>10} {"Hub s":>6} {"x limit":>7}  error')
        for state in args.states:
            server = SilentServer() if state == 'silent' else ErrorServer(500) if state == '500' else None
            endpoint = server.endpoint if server else closed_endpoint()
            try:
                for name in args.paths:
                    env = dict(base_env, HF_ENDPOINT=endpoint, HF_HUB_CACHE=f'{tmp}/cache-{state}-{name}')
                    baseline, _ = run(name, f'{tmp}/model', dict(env, HF_HUB_OFFLINE='1'))
                    wall, outcome = run(name, f'{tmp}/model', env)
                    hub = max(wall - baseline, 0.0)
                    print(f'{state:8} {name:16} {wall:7.2f} {baseline:10.2f} {hub:6.2f} {hub / args.limit:7.2f}  '
                          f'{outcome[:160]}', flush=True)
            finally:
                if server:
                    server.close()


if __name__ == '__main__':
    main()
