""" The paper's experiment trained from scratch: cross-entropy vs cross-entropy + U(1) hue loss.

Protocol (the frozen-backbone study's, :mod:`timm_u1.studies.frozen`, with full training runs):

1. The training split is split ONCE into train' and validation (stratified,
   :func:`timm_u1.data.stratified_split`), and the three splits are written as a ``DatasetDict``
   to ``OUTPUT/splits`` (train, validation, test). Every run trains on train'.
2. Selection, on validation only: every arm tries every learning rate of ``lrs`` (and the U(1)
   arm every lambda of ``hue_weights``), trained with each selection seed and evaluated on the
   validation split. An arm's choice is the configuration with the best mean validation top-1.
   Selection runs never read the test split.
3. Test: each arm's chosen configuration is trained with every test seed (disjoint from the
   selection seeds) and evaluated on the test split once. A seed fixes initialisation, data order
   and augmentation, so CE and CE + U(1) of one seed are paired.
4. :func:`timm_u1.studies.paired.summarize_task`: the paired difference to CE with a bootstrap over seeds
   and test images, superiority / inferiority / TOST at +-``margin`` points, and a verdict.

Arms: ``ce`` (cross-entropy) and ``u1`` (CE + lambda x U(1) on the logits).

Writes ``OUTPUT/study.json`` (settings, selection grid with validation top-1, test top-1 and
per-image correctness per seed), ``table.md``, ``paired_differences.png`` and ``curves.png``;
:func:`write_report` rewrites the last three from ``study.json`` alone. Runs sit in
``OUTPUT/selection/CONFIG/lrLR/seedS`` and ``OUTPUT/test/ARM/seedS``; a finished run is kept and an
interrupted one continues from its checkpoint, so the study resumes. ``timm-u1 compare`` is its
command line.

``data='photo-patches'`` builds a second real dataset offline: 32x32 tiles of scikit-image's
photographs, labelled by the photograph they come from, with the test tiles taken from a region of
each photograph that no training tile overlaps.
"""
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..files import read_json, write_json, write_text
from ..runs.identity import check_same_run
from ..training import METRICS_NAME, RESUMABLE_SETTINGS, MetricsLog, TrainConfig, has_checkpoint, train
from .paired import MARGIN, summarize_task, too_small_caution

__all__ = ['ARMS', 'make_splits', 'config_name', 'run_study',
           'markdown_report', 'write_report']

ARMS = ('ce', 'u1')
SPLITS_INFO = 'study_splits.json'


def make_splits(source: str, folder: Path, val_fraction: float) -> Path:
    """train' / validation / test of ``source`` as a DatasetDict in ``folder`` (kept if already made).

    The validation split is :func:`timm_u1.data.stratified_split` of ``source``'s training split (a
    fixed draw); the test split is ``source``'s, untouched. A folder made from another source or
    fraction is an error, not silently reused.
    """
    from datasets import DatasetDict

    from ..data import class_names, load_image_dataset, save_dataset_atomically, stratified_split

    info = {'source': str(source), 'val_fraction': val_fraction}
    if (folder / 'dataset_dict.json').is_file():
        made = json.loads((folder / SPLITS_INFO).read_text()) if (folder / SPLITS_INFO).is_file() else {}
        if {k: made.get(k) for k in info} != info:
            raise ValueError(f'{folder} holds the splits of {made or "another study"}, not of {info}. '
                             f'Use another --output, or the settings the study was started with.')
        return folder
    train_ds = load_image_dataset(source, 'train')
    names = class_names(train_ds)
    if 'label' not in train_ds.column_names or not names or len(names) < 3:
        raise ValueError(f'{source!r} needs a label column with >= 3 classes for the U(1) loss, got {names}.')
    test_ds = load_image_dataset(source, 'test', class_names=names)
    tr, va = stratified_split(np.asarray(train_ds['label']), val_fraction)
    dd = DatasetDict(train=train_ds.select(tr), validation=train_ds.select(va), test=test_ds)
    save_dataset_atomically(dd, folder, {SPLITS_INFO: dict(info, sizes={k: len(v) for k, v in dd.items()})})
    return folder


def config_name(hue_weight: float) -> str:
    return 'ce' if not hue_weight else f'u1_lambda{hue_weight:g}'


def train_run(run_dir: Path, base: TrainConfig, hue_weight: float, lr: float, seed: int, eval_split: str,
              log=print) -> Dict[str, Any]:
    """One training run, skipped when finished with the same settings (its summary is read) and resumed
    when interrupted; a finished run of other settings is refused, naming what differs."""
    config = replace(
        base, output=run_dir, seed=seed, loss='u1' if hue_weight else 'ce', hue_weight=hue_weight, lr=lr,
        train_split='train', eval_split=eval_split, no_export=True, no_progress=True,
        resume=has_checkpoint(run_dir))  # continues from a checkpoint, if there is one
    if (run_dir / 'summary.json').is_file():
        summary = read_json(run_dir / 'summary.json')
        # what a resumed training run may change, but epochs count: the runs of a study share one budget
        ignored = tuple(k for k in RESUMABLE_SETTINGS if k != 'epochs')
        wanted = {k: v for k, v in json.loads(json.dumps(asdict(config), default=str)).items() if k not in ignored}
        check_same_run({k: v for k, v in summary.get('args', {}).items() if k not in ignored}, wanted,
                       run_dir, 'run the study with the settings it was started with, or choose another --output',
                       state='a finished run')
        return summary
    log(f'train {run_dir}: seed {seed}, hue weight {hue_weight:g}, lr {lr:g}, eval on {eval_split}')
    return train(config)


def _grid(arm: str, lrs: Sequence[float], hue_weights: Sequence[float]) -> List[Dict[str, float]]:
    params = (0.0,) if arm == 'ce' else hue_weights
    return [dict(param=float(p), lr=float(lr)) for p in params for lr in lrs]


def run_study(
        base: TrainConfig,
        seeds: Sequence[int],
        hue_weights: Sequence[float],
        lrs: Sequence[float] = (1e-3, 2e-3, 4e-3),
        selection_seeds: Sequence[int] = (100, 101),
        val_fraction: float = 0.2,
        bootstrap: int = 4000,
        margin: float = MARGIN,
        command: str = '',
        log=print,
) -> Dict[str, Any]:
    """Select each arm's configuration on validation, train it with every test seed, write the study.

    ``base`` holds everything the runs share (data, model, budget, augmentation); its ``output`` is
    the study folder; seed, loss, hue weight, lr and the splits are set per run. Returns the study
    (also ``study.json``; the report files are written by :func:`write_report`).
    """
    seeds, selection_seeds = list(seeds), list(selection_seeds)
    if len(set(seeds)) != len(seeds) or len(set(selection_seeds)) != len(selection_seeds):
        raise ValueError(f'Seeds must differ (got {seeds}, selection {selection_seeds}): a repeated seed '
                         f'counts one run twice.')
    if set(seeds) & set(selection_seeds):
        raise ValueError(f'Test seeds {sorted(set(seeds) & set(selection_seeds))} are also selection seeds; '
                         f'choose --selection-seeds disjoint from --seeds, so no test run repeats a selection run.')
    if len(seeds) < 2:
        raise ValueError(f'Paired statistics need >= 2 test seeds, got {seeds}.')
    if not selection_seeds or not lrs or not hue_weights:
        raise ValueError('--selection-seeds, --lrs and --hue-weights need at least one value each.')
    if any(w <= 0 for w in hue_weights):
        raise ValueError('hue weights are the lambdas of the U(1) arm and must be > 0 (CE is always run).')
    if any(lr <= 0 for lr in lrs) or not 0 < val_fraction < 1:
        raise ValueError(f'--lrs must be > 0 and 0 < --val-fraction < 1, got {list(lrs)} and {val_fraction}.')
    output = Path(base.output)
    if output.exists() and not output.is_dir():
        raise ValueError(f'--output {output} is a file; the study needs a folder (a new or an earlier study\'s).')
    output.mkdir(parents=True, exist_ok=True)
    from ..data import PHOTO_PATCHES, build_photo_patches

    source = str(build_photo_patches(output / 'photo_patches')) if base.data == PHOTO_PATCHES else str(base.data)
    splits = make_splits(source, output / 'splits', val_fraction)
    base = replace(base, data=str(splits), eval_data=None)
    settings = {k: v for k, v in asdict(base).items()
                if k not in ('output', 'seed', 'loss', 'hue_weight', 'lr', 'resume', 'train_split', 'eval_split')}
    sizes = read_json(splits / SPLITS_INFO)['sizes']
    study: Dict[str, Any] = dict(
        settings=dict(settings, data=source, splits=str(splits),
                      seeds=seeds, selection_seeds=selection_seeds, lrs=list(lrs), hue_weights=list(hue_weights),
                      val_fraction=val_fraction, bootstrap=bootstrap, margin=margin, arms=list(ARMS), command=command),
        num_train=sizes['train'], num_val=sizes['validation'], num_test=sizes['test'],
        selection={}, test={}, seconds={})

    t0 = time.perf_counter()
    for arm in ARMS:
        rows = []
        for cfg in _grid(arm, lrs, hue_weights):
            val = [train_run(output / 'selection' / config_name(cfg['param']) / f'lr{cfg["lr"]:g}' / f'seed{s}',
                             base, cfg['param'], cfg['lr'], s, 'validation', log)['final']['eval_top1']
                   for s in selection_seeds]
            rows.append(dict(cfg, val_top1=float(np.mean(val)), val_top1_per_seed=val))
        best = max(rows, key=lambda r: r['val_top1'])  # first of equals: the smaller lambda, then lr
        study['selection'][arm] = dict(grid=rows, chosen=dict(param=best['param'], lr=best['lr']))
        log(f'{arm}: chose param {best["param"]:g}, lr {best["lr"]:g} (validation top-1 {best["val_top1"]:.2f})')
    study['seconds']['selection'] = time.perf_counter() - t0

    t0 = time.perf_counter()
    summaries: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in ARMS}
    for s in seeds:  # seed-major: a study stopped early has complete pairs for its first seeds
        for arm in ARMS:
            chosen = study['selection'][arm]['chosen']
            summaries[arm].append(train_run(output / 'test' / arm / f'seed{s}', base, chosen['param'], chosen['lr'],
                                            s, 'test', log))
    for arm in ARMS:
        chosen, runs = study['selection'][arm]['chosen'], [output / 'test' / arm / f'seed{s}' for s in seeds]
        study['test'][arm] = dict(
            param=chosen['param'], lr=chosen['lr'],
            top1=[r['final']['eval_top1'] for r in summaries[arm]],
            correct=[r['final_correct'] for r in summaries[arm]],
            hue_error_deg=[r['final']['eval_hue_error_deg'] for r in summaries[arm]],
            curves=[[r['eval_top1'] for r in MetricsLog(run / METRICS_NAME).read()] for run in runs])
    study['seconds']['test'] = time.perf_counter() - t0
    write_json(output / 'study.json', study)
    write_report(output)
    return study


def markdown_report(study: Dict[str, Any], summary: Optional[Dict[str, Any]] = None) -> str:
    """``table.md``, from ``study.json`` alone: the selection grid, then the paired test comparison
    (``summary``: its :func:`~timm_u1.studies.paired.summarize_task`, if already computed)."""
    s = study['settings']
    summary = summary if summary is not None else summarize_task(study, s['bootstrap'], s['margin'])
    name = Path(s['data']).name
    lines = [f'Model `{s["model"]}` from scratch at {s["img_size"]} px, {s["epochs"]} epochs; '
             f'{study["num_train"]} train, {study["num_val"]} validation, {study["num_test"]} test images; '
             f'{len(s["seeds"])} test seeds, selection seeds {s["selection_seeds"]}; margin ±{s["margin"]:g} '
             f'points; Holm over {len(s["arms"]) - 1} arm(s); {s["bootstrap"]} bootstrap resamples of seeds and '
             f'test images.', '']
    caution = too_small_caution(len(s['seeds']), s['bootstrap'], len(s['arms']) - 1)
    lines += [caution, ''] if caution else []
    lines += [f'Selection on validation ({name}): mean top-1 over the selection seeds (%), chosen in bold.', '',
              '| config | ' + ' | '.join(f'lr {lr:g}' for lr in s['lrs']) + ' |',
              '|---|' + '---|' * len(s['lrs'])]
    for arm, sel in study['selection'].items():
        for param in dict.fromkeys(r['param'] for r in sel['grid']):
            cells = []
            for r in sel['grid']:
                if r['param'] == param:
                    v = f'{r["val_top1"]:.2f}'
                    cells.append(f'**{v}**' if (r['param'], r['lr']) == (sel['chosen']['param'], sel['chosen']['lr'])
                                 else v)
            lines.append(f'| {"CE" if arm == "ce" else f"CE + {param:g} x U(1)"} | ' + ' | '.join(cells) + ' |')
    lines += ['', f'Test ({name}):', '',
              '| arm | chosen lambda, lr | top-1 mean ± std (%) | minus CE [95% bootstrap CI] | wins/ties | '
              'p better / worse / TOST (Holm) | hue error (deg) | verdict |',
              '|---|---|---|---|---|---|---|---|']
    for arm, o in summary.items():
        hue = float(np.mean(study['test'][arm]['hue_error_deg']))
        label = 'CE' if arm == 'ce' else 'CE + λ U(1), logits'
        head = f'| {label} | {o["param"]:g}, {o["lr"]:g} | {o["mean"]:.2f} ± {o["std"]:.2f} |'
        if arm == 'ce':
            lines.append(head + f' — | — | — | {hue:.1f} | reference |')
        else:
            lines.append(head + f' {o["diff"]:+.2f} [{o["lo"]:+.2f}, {o["hi"]:+.2f}] | {o["wins"]}/{o["ties"]} | '
                         f'{o["p_better_holm"]:.3f} / {o["p_worse_holm"]:.3f} / {o["p_tost_holm"]:.3f} | {hue:.1f} | '
                         f'**{o["verdict"]}** |')
    return '\n'.join(lines) + '\n'


def write_report(output: Path) -> Dict[str, Any]:
    """Rewrite ``table.md``, ``paired_differences.png`` and ``curves.png`` from ``OUTPUT/study.json`` alone."""
    from .plots import plot_paired_differences, plot_study_curves

    output = Path(output)
    if not (output / 'study.json').is_file():
        raise FileNotFoundError(f'{output / "study.json"} does not exist; run the study first (without --report).')
    study = read_json(output / 'study.json')
    s = study['settings']
    summary = summarize_task(study, s['bootstrap'], s['margin'])  # the bootstrap once, for the table and the plot
    write_text(output / 'table.md', markdown_report(study, summary))
    name = Path(s['data']).name
    plot_paired_differences({name: summary}, output / 'paired_differences.png', margin=s['margin'],
                            title=f'{s["model"]} from scratch, {s["img_size"]} px, {s["epochs"]} epochs; '
                                  f'arm minus CE, {len(s["seeds"])} seeds')
    configs = {arm: dict(curves=r['curves'], hue_weight=r['param'], mean=float(np.mean(r['top1'])))
               for arm, r in study['test'].items()}
    plot_study_curves({'configs': configs}, output / 'curves.png',
                      f'{s["model"]} on {name}, {s["epochs"]} epochs, {len(s["seeds"])} test seeds (test split)')
    return study
