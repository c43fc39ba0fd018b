#!/usr/bin/env python3
"""The timm user's paths end to end, timed: train on digits, push to a Hub, load with plain timm from
``hf-hub:`` and ``local-dir:`` (a fresh interpreter without timm_u1), and run timm's own validate.py
on the export.

The Hub is tests/hub_server.py on 127.0.0.1 (the real Hub cannot be reached from the build machine).
validate.py is not in timm's wheel: pass its path (from a checkout of pytorch-image-models) with
``--validate-py``; without it that step is skipped and said so.

    python scripts/timm_user_paths.py --epochs 10 --validate-py ~/pytorch-image-models/validate.py
    python scripts/timm_user_paths.py --epochs 1 --img-size 16   # the suite's setting
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))  # the test Hub: tests/hub_server.py

from hub_server import TEST_TOKEN, HubServer  # noqa: E402

# a fresh interpreter in which timm_u1 cannot be imported: what a user of plain timm has
PLAIN_TIMM = '''
import sys
sys.modules['timm_u1'] = None
import torch, timm
x = torch.load(sys.argv[1], weights_only=True)
out = {}
for spec in sys.argv[3:]:
    model = timm.create_model(spec, pretrained=True).eval()
    with torch.no_grad():
        out[spec] = (type(model).__name__, model(x))
torch.save(out, sys.argv[2])
'''


def step(name: str, argv, env, log: Path) -> float:
    start = time.perf_counter()
    with open(log, 'a') as f:
        done = subprocess.run(argv, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f'{name} failed (exit {done.returncode}); see {log}')
    print(f'{name:42} {wall:7.1f} s', flush=True)
    return wall


def digits_folder(folder: Path) -> None:
    """The digits test split as an image folder (one sub-folder per class), what validate.py reads."""
    from timm_u1.data import load_image_dataset

    ds = load_image_dataset('digits', split='test')
    names = ds.features['label'].names
    for i, row in enumerate(ds):
        path = folder / names[row['label']] / f'{i:04d}.png'
        path.parent.mkdir(parents=True, exist_ok=True)
        row['image'].convert('RGB').save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--img-size', type=int, default=32)
    parser.add_argument('--model', default='u1_test_efficientnet')
    parser.add_argument('--validate-py', type=Path, default=None, help="timm's validate.py (pytorch-image-models)")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory(prefix='timm-user-') as tmp, HubServer(tokens=(TEST_TOKEN,)) as hub:
        tmp = Path(tmp)
        log = tmp / 'log.txt'
        env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_TOKEN=TEST_TOKEN, HF_HUB_DISABLE_XET='1',
                   HF_HUB_CACHE=str(tmp / 'hf-cache'), HF_HOME=str(tmp / 'hf-home'),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
        cli = [sys.executable, '-m', 'timm_u1.cli']
        run = tmp / 'run'
        print(f'{"step":42} {"wall":>9}')
        step('timm-u1 train (digits)', cli + [
            'train', '--model', args.model, '--data', 'digits', '--img-size', str(args.img_size), '--epochs',
            str(args.epochs), '--batch-size', '64', '--output', str(run), '--no-progress'], env, log)
        step('timm-u1 push (run -> org/digits-u1)', cli + [
            'push', str(run), '--repo-id', 'org/digits-u1', '--license', 'mit'], env, log)
        x = torch.randn(4, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
        torch.save(x, tmp / 'x.pt')
        plain_env = dict(env, PYTHONPATH='')
        step('plain timm: hf-hub: and local-dir:', [
            sys.executable, '-c', PLAIN_TIMM, str(tmp / 'x.pt'), str(tmp / 'y.pt'), 'hf-hub:org/digits-u1',
            f'local-dir:{run / "export"}'], plain_env, log)
        outputs = torch.load(tmp / 'y.pt', weights_only=True)
        (name_hub, y_hub), (name_dir, y_dir) = outputs.values()
        print(f'plain timm builds {name_hub} from hf-hub: and {name_dir} from local-dir:; logits equal: '
              f'{torch.equal(y_hub, y_dir)}')
        logged = json.loads((run / 'export' / 'config.json').read_text())['timm_u1']['card']['metrics']
        print(f'logged by timm-u1 train: top1 {logged.get("top1")}')
        if args.validate_py is None:
            print("validate.py: skipped (pass --validate-py PATH from a pytorch-image-models checkout)")
            return
        digits_folder(tmp / 'digits-test')
        results = tmp / 'validate.json'
        step("timm's validate.py on local-dir: export", [
            sys.executable, str(args.validate_py), str(tmp / 'digits-test'), '--model', f'local-dir:{run / "export"}',
            '--pretrained', '--batch-size', '64', '--workers', '0', '--device', 'cpu', '--results-file',
            str(results), '--results-format', 'json'], plain_env, log)
        top1 = json.loads(results.read_text())['top1']
        print(f'validate.py on the export: top1 {top1} (logged {logged.get("top1")}; equal to 1e-3: '
              f'{abs(top1 - logged.get("top1", float("nan"))) < 1e-3})')


if __name__ == '__main__':
    main()
