""" The paper's experiment as a study: cross-entropy vs cross-entropy + U(1) hue loss, over seeds.

For every seed :func:`run_study` trains a CE run (hue weight 0) and one CE + U(1) run per hue
weight (in this process, which keeps the decoded dataset and spares the start-up of every run;
same data, model, budget and seed), then writes ``OUTPUT/study.json``, ``OUTPUT/table.md`` (final
top-1: mean, std, per seed, and the paired difference to CE with a 95% t confidence interval) and
``OUTPUT/curves.png`` (eval top-1 per epoch). The study resumes: finished runs are kept,
interrupted ones continue from their checkpoint. ``timm-u1 compare`` is its command line.

``data='photo-patches'`` builds a second real dataset offline: 32x32 tiles of scikit-image's
photographs, labelled by the photograph they come from, with the test tiles taken from a region of
each photograph that no training tile overlaps.
"""
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, Sequence

import numpy as np

from ._files import write_json, write_text
from .training import METRICS_NAME, MetricsLog, TrainConfig, train

__all__ = ['PHOTO_PATCHES', 'build_photo_patches', 'run_name', 'paired_ci', 'summarize', 'markdown_table', 'run_study']

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


def train_run(run_dir: Path, base: TrainConfig, hue_weight: float, seed: int) -> None:
    """One training run of the study, skipped when finished and resumed when interrupted."""
    if (run_dir / 'summary.json').is_file():
        return
    config = replace(
        base, output=run_dir, seed=seed, loss='u1' if hue_weight else 'ce', hue_weight=hue_weight,
        no_export=True, no_progress=True, resume=True)  # continues from a checkpoint, if there is one
    print(f'train {run_dir}: seed {seed}, hue weight {hue_weight:g}', flush=True)
    train(config)


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


def run_study(
        base: TrainConfig,
        seeds: Sequence[int],
        hue_weights: Sequence[float],
        command: str = '',
) -> Dict[str, Any]:
    """Train CE and CE + lambda x U(1) for every seed into ``base.output`` and summarise them.

    ``base`` holds everything the runs share (data, model, budget); its ``output`` is the study
    folder, its ``seed``, loss and hue weight are set per run. Returns the study (also in
    ``study.json``, ``table.md`` and ``curves.png``).
    """
    from .plots import plot_study_curves

    if len(set(seeds)) != len(seeds):
        raise ValueError(f'Seeds must differ (got {list(seeds)}): a repeated seed counts one run twice.')
    if any(w <= 0 for w in hue_weights):
        raise ValueError('hue weights are the lambdas of the U(1) runs and must be > 0 (CE is always run).')
    output = Path(base.output)
    output.mkdir(parents=True, exist_ok=True)
    if base.data == PHOTO_PATCHES:
        base = replace(base, data=str(build_photo_patches(output / 'photo_patches')))
    for seed in seeds:
        for w in [0.0] + list(hue_weights):
            train_run(output / run_name(w) / f'seed{seed}', replace(base, output=output), w, seed)

    study = summarize(output, hue_weights, seeds)
    settings = {k: v for k, v in asdict(base).items() if k not in ('output', 'seed', 'loss', 'hue_weight', 'resume')}
    study['settings'] = dict(settings, data=str(base.data), command=command)
    write_json(output / 'study.json', study)
    table = markdown_table(study)
    write_text(output / 'table.md', table)
    plot_study_curves(study, output / 'curves.png',
                      f'{base.model} on {Path(str(base.data)).name}, {base.epochs} epochs, {len(seeds)} seeds')
    return study
