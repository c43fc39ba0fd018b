"""The early-layer study of docs/early.md: lgn_v1net trained on photo-ID crops, ablation arms x seeds, each
run analysed (timm_u1.early.v1analysis), and one summary of accuracies against chance and verdicts.

    python scripts/v1_study.py --output /work/runs/v1/study                  # everything, in turn
    python scripts/v1_study.py --output DIR --arms full --seeds 0 --train-only # one run (launch several at once)
    python scripts/v1_study.py --output DIR --summarize-only                  # analyse what is trained, summarise

Each run is ``OUTPUT/ARM-sSEED``: ``step0/`` (the model before training, saved with timm_u1.save_pretrained),
``run/`` (timm_u1.training.train: checkpoint, metrics, ``export/``) and ``lateral/`` (the analysis). A stopped
study resumes: finished trainings and analyses are kept, an interrupted training continues from its checkpoint.
"""
import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

ARMS = {
    'full': {},
    'no-lateral': {'lateral_steps': 0},
    'no-prefilter': {'prefilter': False},
}


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--output', required=True, help='study folder')
    p.add_argument('--model', default='lgn_v1net_s', help='a registered lgn_v1net model (default lgn_v1net_s)')
    p.add_argument('--arms', nargs='+', default=list(ARMS), choices=list(ARMS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--train-crops', type=int, default=400, help='train crops per photograph')
    p.add_argument('--test-crops', type=int, default=80, help='test crops per photograph')
    p.add_argument('--size', type=int, default=32, help='crop size in pixels')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--model-args', default='{}', help='JSON of model arguments for every arm (e.g. smaller widths)')
    p.add_argument('--analysis-seeds', type=int, default=3, help='random-init seeds of the filter analysis')
    p.add_argument('--permutations', type=int, default=10000)
    p.add_argument('--shuffles', type=int, default=1000)
    p.add_argument('--starts', type=int, default=8, help='Gabor-fit starts per filter')
    p.add_argument('--train-only', action='store_true', help='train the runs, analyse nothing')
    p.add_argument('--summarize-only', action='store_true', help='train nothing: analyse what is trained, summarise')
    args = p.parse_args(argv)
    for name in ('epochs', 'train_crops', 'test_crops', 'batch_size', 'analysis_seeds', 'permutations', 'shuffles',
                 'starts'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if args.size < 8:
        p.error(f'--size must be >= 8, got {args.size}')
    if not 0 < args.lr < 10:
        p.error(f'--lr must be in (0, 10), got {args.lr}')
    args.model_args = json.loads(args.model_args)
    return args


def train_run(args: argparse.Namespace, data: Path, num_classes: int, arm: str, seed: int) -> Path:
    import timm
    import torch

    import timm_u1
    from timm_u1.training import TrainConfig, train

    folder = Path(args.output) / f'{arm}-s{seed}'
    step0 = folder / 'step0'
    if not (step0 / 'config.json').is_file():
        torch.manual_seed(seed)
        model = timm.create_model('u1_' + args.model, num_classes=num_classes, **args.model_args, **ARMS[arm])
        timm_u1.save_pretrained(model, step0, label_names=[str(i) for i in range(num_classes)])
    if (folder / 'run' / 'summary.json').is_file():
        return folder
    started = time.time()
    train(TrainConfig(
        output=folder / 'run', data=str(data), model=f'local-dir:{step0}', pretrained=True, loss='ce',
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=0.05, opt='adamw', sched='cosine',
        no_aug=True, hflip=0.0, color_jitter=0.0, seed=seed, resume=(folder / 'run' / 'checkpoint.pt').is_file(),
        no_progress=True))
    (folder / 'train_wall_s.txt').write_text(f'{time.time() - started:.0f}\n')
    return folder


def analyse_run(args: argparse.Namespace, folder: Path) -> Dict[str, Any]:
    from timm_u1.early.v1analysis import analyze_v1
    from timm_u1.early.v1report import read_v1_report

    report = folder / 'lateral' / 'report.json'
    if not report.is_file():
        analyze_v1(folder / 'run' / 'export', step0=folder / 'step0', out=folder / 'lateral',
                   seeds=args.analysis_seeds, starts=args.starts, permutations=args.permutations,
                   shuffles=args.shuffles, progress=False)
    return read_v1_report(report)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    from timm_u1.data import build_photo_crops

    data = build_photo_crops(Path(args.output) / 'photo-crops', size=args.size, train_crops=args.train_crops,
                             test_crops=args.test_crops)
    classes = json.loads((data / 'photo_crops.json').read_text())['classes']
    runs = []
    for arm in args.arms:
        for seed in args.seeds:
            folder = Path(args.output) / f'{arm}-s{seed}'
            if not args.summarize_only:
                train_run(args, data, len(classes), arm, seed)
            if not args.train_only and (folder / 'run' / 'summary.json').is_file():
                runs.append((arm, seed, folder, analyse_run(args, folder)))
    if not args.train_only:
        from timm_u1.early.v1study import summarize

        text = summarize(runs, Path(args.output), chance=1 / len(classes))
        print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
