""" The paper's experiment trained from scratch: cross-entropy vs CE + U(1), through the trainer.

The back-end of :mod:`timm_u1.studies.protocol` whose runs are whole training runs
(:func:`timm_u1.training.train`). The training split is split ONCE into train' and validation
(stratified, :func:`timm_u1.data.stratified_split`) and the three splits are written as a
``DatasetDict`` to ``OUTPUT/splits``; every run trains on train'. Selection runs are evaluated on
validation, test runs on the test split.

Arms: ``ce``; ``u1_logits`` (CE + lambda x U(1) on the logits); ``u1_perm``, the same with the
class-to-angle order a random permutation per seed, at ``u1_logits``' chosen lambda and lr. The
trainer puts class ``c`` at angle 2 pi c / C, so the permuted arm trains on a copy of the splits
relabelled by the permutation (``OUTPUT/permuted/seedS``, removed when its run has finished).

Run folders: ``OUTPUT/PHASE/CONFIG/lrLR/seedS`` (PHASE ``selection`` or ``test``); a finished run is
kept and an interrupted one continues from its checkpoint. Writes ``OUTPUT/study.json``,
``table.md``, ``paired_differences.png`` and ``curves.png``; :func:`write_report` rewrites the last
three from ``study.json`` alone. ``timm-u1 compare`` is its command line.
"""
import json
import logging
import shutil
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..files import read_json, write_text
from ..runs.identity import check_same_run
from ..training import METRICS_NAME, RESUMABLE_SETTINGS, MetricsLog, TrainConfig, has_checkpoint, train
from .arms import LABELS, PERMUTED, class_order
from .ledger import Run
from .paired import MARGIN, summarize_family, too_small_caution
from .protocol import Backend, Design, run_protocol
from .report import comparison_table, design_lines, load_study, verdict_line

__all__ = ['ARMS', 'make_splits', 'config_name', 'ScratchBackend', 'run_study', 'markdown_report', 'write_report']

_logger = logging.getLogger(__name__)

ARMS = ('ce', 'u1_logits', 'u1_perm')
SPLITS_INFO = 'study_splits.json'
# set per run by the study, so not part of what its runs share
PER_RUN = ('output', 'seed', 'loss', 'hue_weight', 'lr', 'resume', 'train_split', 'eval_split')


def make_splits(source: str, folder: Path, val_fraction: float, **columns: Optional[str]) -> Path:
    """train' / validation / test of ``source`` as a DatasetDict in ``folder`` (kept if already made).

    The validation split is :func:`timm_u1.data.stratified_split` of ``source``'s training split (a
    fixed draw); the test split is ``source``'s, untouched. ``columns`` (``image_column``,
    ``label_column``) pick the source's columns; the splits hold them as ``image`` and ``label``. A
    folder made from another source or fraction is an error, not silently reused.
    """
    from datasets import DatasetDict

    from ..data import class_names, load_image_dataset, save_dataset_atomically, stratified_split

    info = {'source': str(source), 'val_fraction': val_fraction}
    if (folder / 'dataset_dict.json').is_file():
        made = read_json(folder / SPLITS_INFO) if (folder / SPLITS_INFO).is_file() else {}
        if not isinstance(made, dict) or {k: made.get(k) for k in info} != info:
            raise ValueError(f'{folder} holds the splits of {made or "another study"}, not of {info}. '
                             f'Use another --output, or the settings the study was started with.')
        return folder
    train_ds = load_image_dataset(source, 'train', **columns)
    names = class_names(train_ds)
    if 'label' not in train_ds.column_names or not names or len(names) < 3:
        raise ValueError(f'{source!r} needs a label column with >= 3 classes for the U(1) loss, got {names}.')
    test_ds = load_image_dataset(source, 'test', class_names=names, **columns)
    tr, va = stratified_split(np.asarray(train_ds['label']), val_fraction)
    dd = DatasetDict(train=train_ds.select(tr), validation=train_ds.select(va), test=test_ds)
    save_dataset_atomically(dd, folder, {SPLITS_INFO: dict(info, sizes={k: len(v) for k, v in dd.items()})})
    return folder


def permuted_splits(splits: Path, folder: Path, seed: int) -> Path:
    """The splits relabelled by :func:`~timm_u1.studies.arms.class_order` of ``seed`` (kept if made).

    Class ``order[j]`` becomes label j (and keeps its name), so the trainer puts it at angle
    2 pi j / C: the permuted arm's class-to-angle assignment.
    """
    from datasets import ClassLabel, load_from_disk

    from ..data import save_dataset_atomically

    if (folder / 'dataset_dict.json').is_file():
        return folder
    dd = load_from_disk(str(splits))
    names = dd['train'].features['label'].names
    order = class_order(seed, len(names)).tolist()
    position = {c: j for j, c in enumerate(order)}
    features = dd['train'].features.copy()
    features['label'] = ClassLabel(names=[names[c] for c in order])
    relabelled = dd.map(lambda batch: {'label': [position[c] for c in batch['label']]}, batched=True,
                        features=features, load_from_cache_file=False)
    save_dataset_atomically(relabelled, folder)
    return folder


def config_name(hue_weight: float, arm: str = 'u1_logits') -> str:
    """The folder name of a configuration: ``ce``, ``u1_lambda0.3``, ``u1_perm_lambda0.3``."""
    if not hue_weight:
        return 'ce'
    return f'{"u1_perm" if arm == "u1_perm" else "u1"}_lambda{hue_weight:g}'


def train_run(run_dir: Path, base: TrainConfig, hue_weight: float, lr: float, seed: int, eval_split: str,
              data: Optional[str] = None) -> Dict[str, Any]:
    """One training run, skipped when finished with the same settings (its summary is read) and resumed
    when interrupted; a finished run of other settings is refused, naming what differs."""
    config = replace(
        base, output=run_dir, seed=seed, loss='u1' if hue_weight else 'ce', hue_weight=hue_weight, lr=lr,
        data=data or base.data, train_split='train', eval_split=eval_split, no_export=True, no_progress=True,
        resume=has_checkpoint(run_dir))  # continues from a checkpoint, if there is one
    if (run_dir / 'summary.json').is_file():
        summary = read_json(run_dir / 'summary.json')
        # what a resumed training run may change, but epochs count: the runs of a study share one budget
        ignored = tuple(k for k in RESUMABLE_SETTINGS if k != 'epochs')
        wanted = {k: v for k, v in json.loads(json.dumps(asdict(config), default=str)).items() if k not in ignored}
        stored = summary.get('args') if isinstance(summary, dict) else None
        check_same_run({k: v for k, v in (stored or {}).items() if k not in ignored}, wanted,
                       run_dir, 'run the study with the settings it was started with, or choose another --output',
                       state='a finished run')
        return summary
    _logger.info('train %s: seed %d, hue weight %g, lr %g, eval on %s', run_dir, seed, hue_weight, lr, eval_split)
    return train(config)


def _checked_summary(summary: Any, run_dir: Path) -> Dict[str, Any]:
    """The ``final`` record of a run's summary, with each field the study reads checked."""
    def bad(field: str) -> ValueError:
        return ValueError(f'{run_dir / "summary.json"}: field {field!r} is missing or invalid; delete {run_dir} to '
                          f'train that run again.')

    final = summary.get('final') if isinstance(summary, dict) else None
    if not isinstance(final, dict):
        raise bad('final')
    for key in ('eval_top1', 'eval_hue_error_deg'):
        if not isinstance(final.get(key), (int, float)) or isinstance(final.get(key), bool):
            raise bad(f'final.{key}')
    if not isinstance(summary.get('final_correct'), str) or set(summary['final_correct']) - {'0', '1'}:
        raise bad('final_correct')
    return final


class ScratchBackend(Backend):
    """Runs trained from scratch by the trainer on ``OUTPUT/splits``; ``base`` holds what they share."""

    isolated_runs = True  # the trainer starts Accelerate in every run

    def __init__(self, base: TrainConfig, hue_weights: Sequence[float], lrs: Sequence[float], val_fraction: float):
        self.base, self.source = base, str(base.data)
        self.output = Path(base.output)
        self.hue_weights, self.lrs, self.val_fraction = tuple(hue_weights), tuple(lrs), val_fraction
        self.splits = self.output / 'splits'

    def shared_settings(self) -> Dict[str, Any]:
        return {k: v for k, v in asdict(self.base).items() if k not in PER_RUN}

    def identity(self) -> Dict[str, Any]:
        ignored = tuple(k for k in RESUMABLE_SETTINGS if k != 'epochs')
        return dict({k: v for k, v in self.shared_settings().items() if k not in ignored},
                    backend='scratch', data=self.source, val_fraction=self.val_fraction)

    def tasks(self) -> List[str]:
        return [self.source]

    def grid(self, arm: str) -> List[Tuple[float, float]]:
        params = (0.0,) if arm == 'ce' else self.hue_weights
        return [(float(p), float(lr)) for p in params for lr in self.lrs]

    def prepare(self) -> Dict[str, Dict[str, int]]:
        from ..data import PHOTO_PATCHES, build_photo_patches

        source = str(build_photo_patches(self.output / 'photo_patches')) if self.source == PHOTO_PATCHES else self.source
        make_splits(source, self.splits, self.val_fraction, image_column=self.base.image_column,
                    label_column=self.base.label_column)
        sizes = read_json(self.splits / SPLITS_INFO)['sizes']
        return {self.source: dict(num_train=sizes['train'], num_val=sizes['validation'], num_test=sizes['test'])}

    def run(self, run: Run) -> Dict[str, Any]:
        # the splits hold the chosen columns as image and label
        base = replace(self.base, data=str(self.splits), eval_data=None, image_column=None, label_column=None)
        run_dir = self.output / run.phase / config_name(run.param, run.arm) / f'lr{run.lr:g}' / f'seed{run.seed}'
        relabelled = self.output / 'permuted' / f'seed{run.seed}'
        data = str(permuted_splits(self.splits, relabelled, run.seed)) if run.arm in PERMUTED else None
        summary = train_run(run_dir, base, run.param, run.lr, run.seed,
                            'validation' if run.phase == 'selection' else 'test', data)
        if data is not None:
            shutil.rmtree(relabelled, ignore_errors=True)  # 1 copy of the data per seed: removed once used
        final = _checked_summary(summary, run_dir)
        return dict(top1=float(final['eval_top1']), correct=summary['final_correct'],
                    hue_error_deg=float(final['eval_hue_error_deg']),
                    eval_top1_per_epoch=[r['eval_top1'] for r in MetricsLog(run_dir / METRICS_NAME).read()])

    def write_report(self, output: Path) -> Dict[str, Any]:
        return write_report(output)


def run_study(
        base: TrainConfig,
        seeds: Sequence[int],
        hue_weights: Sequence[float],
        lrs: Sequence[float] = (1e-3, 2e-3, 4e-3),
        selection_seeds: Sequence[int] = (100, 101),
        val_fraction: float = 0.2,
        bootstrap: Optional[int] = None,
        margin: float = MARGIN,
        command: str = '',
        log: Any = None,
        arms: Sequence[str] = ARMS,
        jobs: int = 1,
) -> Dict[str, Any]:
    """Select each arm's configuration on validation, train it with every test seed, write the study.

    ``base`` holds everything the runs share (data, model, budget, augmentation); its ``output`` is
    the study folder; seed, loss, hue weight, lr and the splits are set per run. ``jobs``: worker
    processes (one thread each). Returns the study (also ``study.json``, with ``table.md`` and the
    plots). ``bootstrap`` and ``log`` are ignored (0.3 removes them).
    """
    if bootstrap is not None or log is not None:
        warnings.warn('run_study(bootstrap=, log=) are ignored: the interval is analytic and progress goes to '
                      'logging; they go in 0.3.', DeprecationWarning, stacklevel=2)
    design = Design(arms, seeds, selection_seeds, margin, known_arms=ARMS)
    if not lrs or not hue_weights:
        raise ValueError('--lrs and --hue-weights need at least one value each.')
    if any(not w > 0 for w in hue_weights):
        raise ValueError('hue weights are the lambdas of the U(1) arm and must be > 0 (CE is always run).')
    if any(not lr > 0 for lr in lrs) or not 0 < val_fraction < 1:
        raise ValueError(f'--lrs must be > 0 and 0 < --val-fraction < 1, got {list(lrs)} and {val_fraction}.')
    backend = ScratchBackend(base, hue_weights, lrs, val_fraction)
    settings = dict(backend.shared_settings(), data=backend.source, seeds=list(design.seeds),
                    selection_seeds=list(design.selection_seeds), lrs=list(lrs), hue_weights=list(hue_weights),
                    val_fraction=val_fraction, margin=margin, arms=list(design.arms), command=command)
    return run_protocol(backend, design, Path(base.output), json.loads(json.dumps(settings, default=str)), jobs)


def _selection_table(study: Dict[str, Any], task: str) -> List[str]:
    s, selection = study['settings'], study['tasks'][task]['selection']
    lines = [f'Selection on validation ({Path(task).name}): mean top-1 over the selection seeds (%), chosen in bold.',
             '', '| config | ' + ' | '.join(f'lr {lr:g}' for lr in s['lrs']) + ' |', '|---|' + '---|' * len(s['lrs'])]
    for arm, sel in selection.items():
        if sel.get('inherited_from'):
            lines.append(f'| {LABELS[arm]} | ' + ' | '.join([f'as {LABELS[sel["inherited_from"]]}'] * len(s['lrs'])) + ' |')
            continue
        for param in dict.fromkeys(r['param'] for r in sel['grid']):
            cells = {r['lr']: r for r in sel['grid'] if r['param'] == param}
            row = []
            for lr in s['lrs']:
                r = cells.get(lr)
                text = '' if r is None else 'fixed' if r['val_top1'] is None else f'{r["val_top1"]:.2f}'
                chosen = r is not None and (param, lr) == (sel['chosen']['param'], sel['chosen']['lr'])
                row.append(f'**{text}**' if chosen else text)
            lines.append(f'| {"CE" if arm == "ce" else f"CE + {param:g} x U(1)"} | ' + ' | '.join(row) + ' |')
    return lines


def markdown_report(study: Dict[str, Any], summary: Optional[Dict[str, Any]] = None) -> str:
    """``table.md``, from ``study.json`` alone: the selection grid, then the paired test comparisons
    (``summary``: its :func:`~timm_u1.studies.paired.summarize_family`, if already computed)."""
    s = study['settings']
    summary = summary if summary is not None else summarize_family(study['tasks'], s['margin'])
    lines = [f'Model `{s["model"]}` from scratch at {s["img_size"]} px, {s["epochs"]} epochs; selection seeds '
             f'{s["selection_seeds"]}; ' + design_lines(study, summary)[0], '', verdict_line(summary), '']
    caution = too_small_caution(len(s['seeds']))
    lines += [caution, ''] if caution else []
    for task, result in study['tasks'].items():
        name = Path(task).name
        lines += [f'### {name} ({result["num_train"]} train, {result["num_val"]} validation, {result["num_test"]} '
                  f'test images)', '']
        lines += _selection_table(study, task) + ['', f'Test ({name}):', '']
        hue = {arm: f'{np.mean(r["hue_error_deg"]):.1f}' for arm, r in result['test'].items()}
        lines += comparison_table(result, summary[task], {'hue error (deg)': hue.get})
        lines.append('')
    return '\n'.join(lines)


_REQUIRED = dict(model=lambda v: isinstance(v, str), img_size=lambda v: v is None or isinstance(v, int),
                 epochs=lambda v: isinstance(v, int), lrs=lambda v: isinstance(v, list) and bool(v),
                 selection_seeds=lambda v: isinstance(v, list))


def write_report(output: Path) -> Dict[str, Any]:
    """Rewrite ``table.md``, ``paired_differences.png`` and ``curves.png`` from ``OUTPUT/study.json`` alone."""
    from .plots import plot_paired_differences, plot_study_curves

    output = Path(output)
    study = load_study(output, _REQUIRED)
    s = study['settings']
    summary = summarize_family(study['tasks'], s['margin'])  # once, for the table and the plot
    write_text(output / 'table.md', markdown_report(study, summary))
    names = {task: Path(task).name for task in study['tasks']}
    plot_paired_differences({names[t]: v for t, v in summary.items()}, output / 'paired_differences.png',
                            margin=s['margin'], title=f'{s["model"]} from scratch, {s["img_size"]} px, {s["epochs"]} '
                                                      f'epochs; {len(s["seeds"])} seeds')
    task, result = next(iter(study['tasks'].items()))
    configs = {arm: dict(curves=r['eval_top1_per_epoch'], hue_weight=r['param'], mean=float(np.mean(r['top1'])))
               for arm, r in result['test'].items() if 'eval_top1_per_epoch' in r}
    plot_study_curves({'configs': configs}, output / 'curves.png',
                      f'{s["model"]} on {names[task]}, {s["epochs"]} epochs, {len(s["seeds"])} test seeds (test split)')
    return study
