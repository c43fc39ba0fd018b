""" The paper's experiment as a study: cross-entropy vs cross-entropy + U(1) hue loss, over seeds.

    python scripts/compare.py --data digits --model test_resnet --img-size 16 --epochs 5 \\
        --seeds 0 1 2 3 4 --hue-weights 0.3 1 --output runs/study_digits

For every seed it trains a CE run (hue weight 0) and one CE + U(1) run per hue weight with
``scripts/train.py`` (called in this process, which keeps the decoded dataset and spares the
start-up of every run; same data, model, budget and seed), then writes
``OUTPUT/study.json``, ``OUTPUT/table.md`` (final top-1: mean, std, per seed, and the paired
difference to CE with a 95% t confidence interval) and ``OUTPUT/curves.png`` (eval top-1 per epoch).
The study resumes: finished runs are kept, interrupted ones continue from their checkpoint.
Arguments after ``--`` go to ``train.py`` unchanged.

``--data photo-patches`` builds a second real dataset offline: 32x32 tiles of scikit-image's
photographs, labelled by the photograph they come from, with the test tiles taken from a region of
each photograph that no training tile overlaps.
"""
import argparse
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from timm_u1._files import write_json, write_text
from timm_u1.training import METRICS_NAME, MetricsLog

sys.path.insert(0, str(Path(__file__).parent))
import train  # noqa: E402  (scripts/train.py, beside this file)
PHOTO_PATCHES = 'photo-patches'


def build_photo_patches(folder: Path, tile: int = 32, grid: int = 12, test_columns: int = 3) -> Path:
    """Tiles of the scikit-image photographs as a DatasetDict saved to ``folder``.

    Each photograph (converted to RGB) is resized to ``grid * tile`` pixels square and cut into a
    ``grid x grid`` array of non-overlapping tiles; its name is the class. The right-most
    ``test_columns`` columns of tiles are the test split, so test tiles come from a part of the
    picture the model never saw, not from between training tiles.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    from timm_u1.data import photos_dataset

    if (folder / 'dataset_dict.json').is_file():
        return folder
    photos = photos_dataset()
    names = sorted(set(photos['name']))
    rows: Dict[str, Dict[str, list]] = {s: {'image': [], 'label': []} for s in ('train', 'test')}
    side = grid * tile
    for example in photos:
        image = example['image'].convert('RGB').resize((side, side))
        label = names.index(example['name'])
        for r in range(grid):
            for c in range(grid):
                split = 'test' if c >= grid - test_columns else 'train'
                rows[split]['image'].append(image.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)))
                rows[split]['label'].append(label)
    features = Features({'image': Image(), 'label': ClassLabel(names=names)})
    dd = DatasetDict({s: Dataset.from_dict(v, features=features) for s, v in rows.items()})
    tmp = folder.with_name(folder.name + '.tmp')
    dd.save_to_disk(str(tmp))
    tmp.rename(folder)  # a half-written dataset never sits at the final path
    return folder


def run_name(hue_weight: float) -> str:
    return 'ce' if not hue_weight else f'u1_lambda{hue_weight:g}'


def train_run(run_dir: Path, args: argparse.Namespace, hue_weight: float, seed: int, extra: Sequence[str]) -> None:
    """One train.py run, skipped when finished and resumed when interrupted."""
    if (run_dir / 'summary.json').is_file():
        return
    cmd = ['--data', str(args.data), '--model', args.model,
           '--epochs', str(args.epochs), '--batch-size', str(args.batch_size), '--seed', str(seed),
           '--output', str(run_dir), '--no-export', '--no-progress']
    cmd += ['--loss', 'ce'] if not hue_weight else ['--loss', 'u1', '--hue-weight', str(hue_weight)]
    if args.img_size:
        cmd += ['--img-size', str(args.img_size)]
    if (run_dir / 'checkpoint.pt').is_file():
        cmd.append('--resume')
    cmd += list(extra)
    print('train.py ' + ' '.join(cmd), flush=True)
    train.main(cmd)


def paired_ci(diffs: Sequence[float], level: float = 0.95) -> Dict[str, float]:
    """Mean of paired differences with a two-sided Student-t confidence interval."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return dict(mean=mean, lo=math.nan, hi=math.nan, p=math.nan)
    sem = float(d.std(ddof=1) / math.sqrt(len(d)))
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * sem)
    p = float(stats.ttest_1samp(d, 0.0).pvalue) if sem > 0 else (0.0 if mean else 1.0)
    return dict(mean=mean, lo=mean - half, hi=mean + half, p=p)


def summarize(output: Path, hue_weights: Sequence[float], seeds: Sequence[int]) -> Dict[str, Any]:
    """Final top-1 of every run, per-config mean/std, and paired differences to CE."""
    configs = [0.0] + [w for w in hue_weights if w]
    study: Dict[str, Any] = {'seeds': list(seeds), 'configs': {}}
    for w in configs:
        curves = [MetricsLog(output / run_name(w) / f'seed{s}' / METRICS_NAME).read() for s in seeds]
        final = [c[-1]['eval_top1'] for c in curves]
        study['configs'][run_name(w)] = dict(
            hue_weight=w, top1=final, mean=float(np.mean(final)), std=float(np.std(final, ddof=1)),
            hue_error_deg=[c[-1]['eval_hue_error_deg'] for c in curves],
            curves=[[r['eval_top1'] for r in c] for c in curves])
    ce = study['configs']['ce']['top1']
    for name, cfg in study['configs'].items():
        if name != 'ce':
            diffs = [a - b for a, b in zip(cfg['top1'], ce)]
            cfg['diff_vs_ce'] = dict(paired_ci(diffs), per_seed=diffs, wins=sum(d > 0 for d in diffs),
                                     ties=sum(d == 0 for d in diffs))
    return study


def markdown_table(study: Dict[str, Any]) -> str:
    seeds = study['seeds']
    lines = ['| loss | top-1 mean ± std (%) | per seed ' + ' / '.join(map(str, seeds))
             + ' | minus CE: mean [95% CI] (p) | wins/ties of ' + str(len(seeds)) + ' | hue error (deg) |',
             '|---|---|---|---|---|---|']
    for name, cfg in study['configs'].items():
        label = 'CE' if name == 'ce' else f'CE + {cfg["hue_weight"]:g} x U(1)'
        d = cfg.get('diff_vs_ce')
        diff = f'{d["mean"]:+.2f} [{d["lo"]:+.2f}, {d["hi"]:+.2f}] (p={d["p"]:.3f})' if d else '—'
        wins = f'{d["wins"]}/{d["ties"]}' if d else '—'
        lines.append(f'| {label} | {cfg["mean"]:.2f} ± {cfg["std"]:.2f} | '
                     + ' / '.join(f'{v:.1f}' for v in cfg['top1'])
                     + f' | {diff} | {wins} | {np.mean(cfg["hue_error_deg"]):.1f} |')
    return '\n'.join(lines) + '\n'


def plot_curves(study: Dict[str, Any], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, cfg in study['configs'].items():
        curves = np.asarray(cfg['curves'], dtype=float)  # (seeds, epochs)
        epochs = np.arange(1, curves.shape[1] + 1)
        mean, std = curves.mean(0), curves.std(0)
        label = 'CE' if name == 'ce' else f'CE + {cfg["hue_weight"]:g} x U(1)'
        ax.plot(epochs, mean, marker='o', ms=3, label=f'{label} ({cfg["mean"]:.1f}%)')
        ax.fill_between(epochs, mean - std, mean + std, alpha=0.2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel('epoch')
    ax.set_ylabel('eval top-1 (%), mean ± std over seeds')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name('.' + path.name)
    fig.savefig(tmp, format='png')
    plt.close(fig)
    tmp.replace(path)


def parse_args(argv: Optional[List[str]] = None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--data', default='digits', help=f'as for train.py, or "{PHOTO_PATCHES}"')
    p.add_argument('--model', default='test_resnet')
    p.add_argument('--img-size', type=int, default=16)
    p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    p.add_argument('--hue-weights', type=float, nargs='+', default=[1.0], help='lambda values of CE + U(1)')
    p.add_argument('--output', type=Path, required=True)
    argv = sys.argv[1:] if argv is None else argv
    extra: List[str] = []
    if '--' in argv:
        i = argv.index('--')
        argv, extra = argv[:i], argv[i + 1:]
    args = p.parse_args(argv)
    if any(w <= 0 for w in args.hue_weights):
        p.error('--hue-weights are the lambdas of the U(1) runs and must be > 0 (CE is always run).')
    return args, extra


def main(argv: Optional[List[str]] = None) -> int:
    args, extra = parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    if args.data == PHOTO_PATCHES:
        args.data = build_photo_patches(args.output / 'photo_patches')
    for seed in args.seeds:
        for w in [0.0] + list(args.hue_weights):
            train_run(args.output / run_name(w) / f'seed{seed}', args, w, seed, extra)

    study = summarize(args.output, args.hue_weights, args.seeds)
    study['settings'] = dict(data=str(args.data), model=args.model, img_size=args.img_size, epochs=args.epochs,
                             batch_size=args.batch_size, train_args=extra, command=' '.join(sys.argv))
    write_json(args.output / 'study.json', study)
    table = markdown_table(study)
    write_text(args.output / 'table.md', table)
    plot_curves(study, args.output / 'curves.png',
                f'{args.model} on {Path(str(args.data)).name}, {args.epochs} epochs, {len(args.seeds)} seeds')
    print(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
