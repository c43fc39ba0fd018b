""" CE vs CE + U(1) on a pretrained backbone, frozen up to its head or its last block, from cached features.

The back-end of :mod:`timm_u1.studies.protocol` whose runs train on what the frozen backbone
computed once per dataset (:mod:`timm_u1.studies.features`), so a run costs a fraction of a second
(head) or ~2 s (last block) instead of backbone passes. ``FinetuneConfig.train``:

* ``'head'``: a new linear classifier on the cached ``forward_features`` map.
* ``'last-block'``: a copy of the backbone's last block and what follows it, trained at
  ``lr * block_lr_scale`` from its cached input (BatchNorm statistics frozen), with the classifier.

Either way the head sees a map: pooled logits ``classifier(mean_xy(map))`` and, for the spatial hue
variant, the same classifier at every location (as :meth:`~timm_u1.core.u1.U1ModelMixin._spatial_logits`).

Arms (same seeds, data and budget as CE, so differences are paired): ``ce``; ``ls`` (label
smoothing); ``u1_logits``, ``u1_spatial``, ``u1_probs`` (CE + lambda x U(1) with the hue of the
logits, of the per-location logits, of the softmax); ``u1_perm``, ``u1_logits`` with the
class-to-angle assignment a random permutation per seed, at ``u1_logits``' chosen lambda and lr. It
permutes logit columns and relabels the target, which leaves the CE term unchanged.

Tasks: a dataset, and for low-shot tasks a number of training images per class (``digits:5``). The
validation split is carved from the training data (:func:`timm_u1.data.stratified_split`), the
same for every seed; a seed draws the low-shot images, the head's initialisation and the batch order.

Why its runs do not go through :func:`timm_u1.training.train`: :func:`fit_head` trains a linear
layer (and optionally one block) on in-memory tensors for 50-150 steps, 0.35 s a run; the trainer
builds an Accelerator, data loaders and transforms, and checkpoints and evaluates every epoch,
seconds of setup per run, for 1000 runs per study.
"""
import copy
import logging
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from ..core.hue import activation_hue
from ..core.loss import U1Loss
from ..core.u1 import U1Output
from ..data import stratified_split
from ..files import write_text
from ..runs.identity import backbone_fingerprint
from . import features
from .arms import LABELS as _LABELS, class_order
from .features import (LastBlock, extract_block_inputs, extract_feature_maps, last_block, preprocess,
                       trainable_last_block)
from .ledger import Run
from .paired import MARGIN, summarize_family, too_small_caution
from .protocol import Backend, Design, run_protocol
from .report import comparison_table, design_lines, load_study, verdict_line

__all__ = [
    'ARMS', 'MARGIN', 'TRAIN_PARTS', 'FinetuneConfig', 'FrozenBackend', 'Task', 'parse_task', 'preprocess',
    'LastBlock', 'last_block', 'trainable_last_block', 'extract_feature_maps', 'extract_block_inputs',
    'cached_features', 'head_outputs', 'make_loss', 'fit_head', 'evaluate_head', 'class_order', 'run_finetune_study',
    'summarize_study', 'markdown_report', 'write_report',
]

_logger = logging.getLogger(__name__)

ARMS = ('ce', 'ls', 'u1_logits', 'u1_spatial', 'u1_probs', 'u1_perm')
TRAIN_PARTS = ('head', 'last-block')
# learning-rate grid and steps when not given. 'last-block': a run costs ~15x a head run (the block's
# forward and backward at every step), so the budget is 50 steps and the grid drops 3e-2, at which
# AdamW would move the pretrained block at 3e-3 per step, above the usual fine-tuning range; both
# fixed before any test-split number of the last-block study existed (docs/results.md).
_DEFAULT_LRS = {'head': (3e-3, 1e-2, 3e-2), 'last-block': (3e-3, 1e-2)}
_DEFAULT_STEPS = {'head': 150, 'last-block': 50}


def _positive(name: str, values: Any) -> None:
    if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in values):
        raise ValueError(f'{name} must be finite numbers > 0, got {list(values)}.')


@dataclass
class FinetuneConfig:
    """Everything a finetune study shares; ``output`` is the study folder."""
    output: Path
    model: str = 'tf_efficientnet_lite0.offline_in1k'
    img_size: int = 96
    train: str = 'head'  # 'head': a linear classifier on the cached map; 'last-block': also the last block
    block_lr_scale: float = 0.1  # 'last-block': the block (and what follows it) trains at lr * this
    tasks: Tuple[str, ...] = ('digits:5', 'digits:10', 'digits:20', 'photo-patches:all')
    arms: Tuple[str, ...] = ARMS
    seeds: Tuple[int, ...] = tuple(range(20))
    selection_seeds: Tuple[int, ...] = (1000, 1001, 1002)
    lrs: Optional[Tuple[float, ...]] = None  # None: _DEFAULT_LRS[train]
    hue_weights: Tuple[float, ...] = (0.1, 0.3, 1.0)
    smoothings: Tuple[float, ...] = (0.05, 0.1, 0.2)
    steps: Optional[int] = None  # None: _DEFAULT_STEPS[train]
    batch_size: int = 32
    weight_decay: float = 1e-4
    val_fraction: float = 0.2
    bootstrap: Optional[int] = None  # ignored (the interval is analytic); 0.3 removes it
    margin: float = MARGIN
    extract_batch: int = 64
    pretrained: Optional[bool] = None  # None: the model spec's default (True for the offline Lite0)

    def __post_init__(self):
        self.output = Path(self.output)
        if self.train not in TRAIN_PARTS:
            raise ValueError(f'train={self.train!r}: choose from {list(TRAIN_PARTS)}.')
        if self.bootstrap is not None:
            warnings.warn('FinetuneConfig(bootstrap=) is ignored: the interval is analytic; it goes in 0.3.',
                          DeprecationWarning, stacklevel=3)
        self.lrs = tuple(self.lrs) if self.lrs is not None else _DEFAULT_LRS[self.train]
        self.steps = self.steps if self.steps is not None else _DEFAULT_STEPS[self.train]
        self.tasks, self.arms = tuple(self.tasks), tuple(self.arms)
        self.seeds, self.selection_seeds = tuple(self.seeds), tuple(self.selection_seeds)
        self.hue_weights, self.smoothings = tuple(self.hue_weights), tuple(self.smoothings)
        _positive('block_lr_scale', [self.block_lr_scale])
        _positive('lrs', self.lrs)
        _positive('hue_weights', self.hue_weights)
        if not self.lrs or not self.hue_weights or not self.smoothings or not self.tasks:
            raise ValueError('tasks, lrs, hue_weights and smoothings need at least one value each.')
        if any(not (isinstance(v, (int, float)) and 0 < v < 1) for v in self.smoothings):
            raise ValueError(f'smoothings must be in (0, 1), got {list(self.smoothings)}.')
        for name in ('steps', 'batch_size', 'img_size', 'extract_batch'):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{name} must be an integer >= 1, got {value!r}.')
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0) or not 0 < self.val_fraction < 1:
            raise ValueError(f'weight_decay must be >= 0 and 0 < val_fraction < 1, got {self.weight_decay} and '
                             f'{self.val_fraction}.')
        self.design()  # arms, seeds and margin
        for t in self.tasks:
            parse_task(t)

    def design(self) -> Design:
        return Design(self.arms, self.seeds, self.selection_seeds, self.margin, known_arms=ARMS)

    def settings(self) -> Dict[str, Any]:
        """What study.json records: every field but ``output`` (and the ignored ``bootstrap``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()
                if k not in ('output', 'bootstrap')}


@dataclass(frozen=True)
class Task:
    source: str  # 'digits', 'photo-patches', or anything load_image_dataset opens (with a test split)
    shots: Optional[int]  # training images per class; None: every non-validation training image

    @property
    def name(self) -> str:
        return f'{self.source}:{self.shots or "all"}'


def parse_task(spec: str) -> Task:
    """``'digits:5'`` (5 training images per class) or ``'photo-patches:all'``."""
    source, sep, shots = spec.rpartition(':')
    if not sep or not source:
        raise ValueError(f'Task {spec!r} must be SOURCE:SHOTS, e.g. digits:5 or photo-patches:all.')
    if shots == 'all':
        return Task(source, None)
    if not shots.isdigit() or int(shots) < 1:
        raise ValueError(f'Task {spec!r}: SHOTS must be a positive integer or "all".')
    return Task(source, int(shots))



# ---------------------------------------------------------------------------------------------
# One run: a linear head (and the last block) on the cached maps

def head_outputs(classifier: nn.Linear, maps: torch.Tensor, spatial: bool = False) -> U1Output:
    """Pooled logits of the head on (B, D, H, W) maps and, if ``spatial``, its logits at every location.

    The pooled logits are ``classifier(mean over H, W)``, timm's ``forward_head`` with average pooling
    (dropout off); the spatial ones are the classifier on each location, (B, C, H, W).
    """
    logits = classifier(maps.mean(dim=(2, 3)))
    spatial_logits = classifier(maps.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if spatial else None
    return U1Output(logits, activation_hue(logits.detach(), dim=-1), maps, spatial_logits)


def make_loss(arm: str, param: float) -> U1Loss:
    """The loss of an arm; ``param`` is lambda for U(1) arms, the smoothing for ``ls``, unused for ``ce``."""
    if arm == 'ce':
        return U1Loss(hue_weight=0.0)
    if arm == 'ls':
        return U1Loss(hue_weight=0.0, smoothing=param)
    if arm in ('u1_logits', 'u1_perm'):
        return U1Loss(hue_weight=param)
    if arm == 'u1_spatial':
        return U1Loss(hue_weight=param, spatial=True)
    if arm == 'u1_probs':
        return U1Loss(hue_weight=param, hue_input='probs')
    raise ValueError(f'Unknown arm {arm!r}; choose from {list(ARMS)}.')


def _permuted(out: U1Output, target: torch.Tensor, order: torch.Tensor) -> Tuple[U1Output, torch.Tensor]:
    """Logit columns in ``order`` (class ``order[j]`` gets angle 2 pi j / C), targets relabelled to match.

    CE is invariant under this (same probabilities of the same classes); only the hue term changes.
    """
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order))
    spatial = out.spatial_logits[:, order] if out.spatial_logits is not None else None
    return U1Output(out.logits[:, order], out.hue, out.features, spatial), inverse[target]


def fit_head(
        classifier: nn.Linear,
        get_maps: Callable[[torch.Tensor], torch.Tensor],
        labels: torch.Tensor,
        loss_fn: U1Loss,
        lr: float,
        steps: int,
        seed: int,
        batch_size: int = 32,
        weight_decay: float = 1e-4,
        order: Optional[torch.Tensor] = None,
        body: Optional[nn.Module] = None,
        body_lr_scale: float = 0.1,
) -> nn.Linear:
    """Train ``classifier`` in place: AdamW, cosine learning rate, ``steps`` minibatches in seeded order.

    ``get_maps(index)`` returns the maps of the training images ``index``: rows of the cache, or a
    pass through the frozen backbone (the two agree; tests/test_finetune.py checks it). If
    ``get_maps`` runs a trainable part of the backbone (the ``'last-block'`` study), pass it as
    ``body``: its parameters that require grad train too, at ``lr * body_lr_scale`` (same schedule),
    and it is kept in eval mode.

    A loop of its own, not :func:`timm_u1.training.train_step`: that step needs a model and optimizer
    prepared by an ``Accelerator``, and under ``accelerate launch`` each process's head runs are
    independent runs (its share of the study), not one data-parallel run, so preparing them would
    wrap them in DDP across processes; here ~50-150 steps of a head run on tensors already in memory.
    """
    n = len(labels)
    g = torch.Generator().manual_seed(seed)
    groups = [{'params': list(classifier.parameters()), 'lr': lr}]
    if body is not None:
        groups.append({'params': [p for p in body.parameters() if p.requires_grad], 'lr': lr * body_lr_scale})
        # eval mode while training: BatchNorm keeps its ImageNet running statistics (batch statistics
        # of tiny low-shot batches, 3x3 maps, would be noisy and would overwrite them), and drop-path /
        # dropout are off, as in the frozen backbone whose forward the cached path reproduces.
        body.eval()
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    bs = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=g), 0
    classifier.train()
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        index = perm[pos:pos + bs]
        pos += bs
        out = head_outputs(classifier, get_maps(index), spatial=loss_fn.spatial)
        target = labels[index]
        if order is not None:
            out, target = _permuted(out, target, order)
        loss = loss_fn(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    classifier.eval()
    return classifier


@torch.no_grad()
def evaluate_head(classifier: nn.Linear, maps: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Per-image correctness (bool array) of the head's pooled logits."""
    return (head_outputs(classifier, maps).logits.argmax(-1) == labels).numpy()


def _new_head(num_features: int, num_classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(num_features, num_classes)


# ---------------------------------------------------------------------------------------------
# The back-end


class FrozenBackend(Backend):
    """Runs that train on the frozen backbone's cached features; loads them once per process."""

    def __init__(self, cfg: FinetuneConfig, backbone: Optional[nn.Module] = None):
        self.cfg = cfg
        self._backbone = backbone
        self._fingerprint: Optional[str] = None
        self._features: Dict[str, Dict[str, torch.Tensor]] = {}
        self._body: Optional[nn.Module] = None

    def __getstate__(self) -> Dict[str, Any]:
        # a worker gets the settings, the fingerprint and the trainable block, and reads the caches
        # prepare() wrote; it never needs the backbone itself
        self.fingerprint(), self.body()
        return dict(self.__dict__, _backbone=None, _features={})

    def backbone(self) -> nn.Module:
        if self._backbone is None:
            self._backbone = _create_backbone(self.cfg)
        return self._backbone

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = backbone_fingerprint(self.backbone())
        return self._fingerprint

    def identity(self) -> Dict[str, Any]:
        c = self.cfg
        return dict(backend='frozen', model=c.model, pretrained=c.pretrained, backbone=self.fingerprint(),
                    img_size=c.img_size, train=c.train, block_lr_scale=c.block_lr_scale if c.train != 'head' else None,
                    steps=c.steps, batch_size=c.batch_size, weight_decay=c.weight_decay, val_fraction=c.val_fraction,
                    extract_batch=c.extract_batch)

    def tasks(self) -> List[str]:
        return [parse_task(t).name for t in self.cfg.tasks]

    def grid(self, arm: str) -> List[Tuple[float, float]]:
        params = {'ce': (0.0,), 'ls': self.cfg.smoothings}.get(arm, self.cfg.hue_weights)
        return [(float(p), float(lr)) for p in params for lr in self.cfg.lrs]

    def features(self, source: str) -> Dict[str, torch.Tensor]:
        if source not in self._features:
            c = self.cfg
            self._features[source] = (
                features.read_cached_features(c.output, source, c.train, c.img_size, self.fingerprint())
                or features.cached_features(c.output, source, c.train, c.img_size, self.backbone(),
                                            self.fingerprint(), c.extract_batch))
        return self._features[source]

    def prepare(self) -> Dict[str, Dict[str, int]]:
        sizes = {}
        for spec in self.cfg.tasks:
            task = parse_task(spec)
            labels = self.features(task.source)['train_labels'].numpy()
            tr, va = stratified_split(labels, self.cfg.val_fraction, task.shots, self.cfg.seeds[0])
            sizes[task.name] = dict(num_train=len(tr), num_val=len(va),
                                    num_test=len(self.features(task.source)['test_labels']))
        return sizes

    def body(self) -> Optional[nn.Module]:
        """The trainable end of the backbone (``'last-block'``), pretrained; None for the head study."""
        if self.cfg.train == 'last-block' and self._body is None:
            self._body = trainable_last_block(self.backbone())
        return self._body

    def run(self, run: Run) -> Dict[str, Any]:
        task = parse_task(run.task)
        feats = self.features(task.source)
        labels = feats['train_labels'].numpy()
        train_idx, val_idx = stratified_split(labels, self.cfg.val_fraction, task.shots, run.seed)
        if run.phase == 'selection':
            vi = torch.from_numpy(val_idx)
            eval_maps, eval_labels = feats['train_maps'][vi], feats['train_labels'][vi]
        else:
            eval_maps, eval_labels = feats['test_maps'], feats['test_labels']
        correct = _run(self.cfg, feats, run.arm, run.param, run.lr, run.seed, train_idx, eval_maps, eval_labels,
                       self.body())
        return dict(top1=float(100 * correct.mean()), correct=''.join('1' if c else '0' for c in correct))

    def write_report(self, output: Path) -> Dict[str, Any]:
        return write_report(output)


def _create_backbone(cfg: FinetuneConfig) -> nn.Module:
    return features.create_backbone(cfg.model, cfg.pretrained)


def cached_features(cfg: FinetuneConfig, source: str, backbone: Optional[nn.Module] = None) -> Dict[str, torch.Tensor]:
    """:func:`timm_u1.studies.features.cached_features` with a study's settings (its backbone if not given)."""
    backbone = backbone if backbone is not None else _create_backbone(cfg)
    return features.cached_features(cfg.output, source, cfg.train, cfg.img_size, backbone,
                                    extract_batch=cfg.extract_batch)


def run_finetune_study(cfg: FinetuneConfig, command: str = '', backbone: Optional[nn.Module] = None,
                       log: Any = None, jobs: int = 1) -> Dict[str, Any]:
    """Cache features, run every task's selection and test runs, write ``study.json``, ``table.md`` and the plot.

    Rerun with the same settings, a stopped study resumes after its last finished run; runs made
    with another backbone or budget are refused (:class:`~timm_u1.studies.ledger.Ledger`), naming
    what differs. ``jobs``: worker processes (one thread each). ``log`` is ignored (0.3 removes it).
    """
    if log is not None:
        warnings.warn('run_finetune_study(log=) is ignored: progress goes to logging; it goes in 0.3.',
                      DeprecationWarning, stacklevel=2)
    if cfg.output.exists() and not cfg.output.is_dir():
        raise ValueError(f'--output {cfg.output} is a file; the study needs a folder (a new or an earlier study\'s).')
    backend = FrozenBackend(cfg, backbone)
    return run_protocol(backend, cfg.design(), cfg.output, dict(cfg.settings(), command=command), jobs)


def _run(cfg: FinetuneConfig, feats: Dict[str, torch.Tensor], arm: str, param: float, lr: float, seed: int,
         train_idx: np.ndarray, eval_maps: torch.Tensor, eval_labels: torch.Tensor,
         body: Optional[nn.Module] = None) -> np.ndarray:
    """One training run on the cache, evaluated on ``eval_maps`` (cache rows, as the training ones).

    ``body`` (``'last-block'`` study): the backbone's trainable end (:func:`trainable_last_block`);
    the cache holds its inputs, each run trains a fresh copy of it. None: the cache holds the maps.
    """
    maps, labels = feats['train_maps'], feats['train_labels']
    num_classes = int(max(labels.max(), feats['test_labels'].max())) + 1
    index = torch.from_numpy(train_idx)
    train_maps, train_labels = maps[index], labels[index]
    loss_fn = make_loss(arm, param)
    if body is None:
        if not loss_fn.spatial:
            # only the pooled map matters: pool once, as a 1x1 map (whose mean is itself, exactly)
            train_maps = train_maps.mean(dim=(2, 3), keepdim=True)
        get_maps, num_features = (lambda i: train_maps[i]), maps.shape[1]
    else:
        body = copy.deepcopy(body)  # every run starts from the pretrained block
        get_maps = lambda i: body(train_maps[i])  # noqa: E731
        with torch.no_grad():
            num_features = body.eval()(maps[:1]).shape[1]
    head = _new_head(num_features, num_classes, seed)
    order = class_order(seed, num_classes) if arm == 'u1_perm' else None
    fit_head(head, get_maps, train_labels, loss_fn, lr, cfg.steps, seed,
             cfg.batch_size, cfg.weight_decay, order, body=body, body_lr_scale=cfg.block_lr_scale)
    if body is not None:
        with torch.no_grad():
            eval_maps = torch.cat([body(eval_maps[i:i + 256]) for i in range(0, len(eval_maps), 256)])
    return evaluate_head(head, eval_maps, eval_labels)


def summarize_study(study: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """:func:`~timm_u1.studies.paired.summarize_family` of ``study.json``: every comparison of every task."""
    return summarize_family(study['tasks'], study['settings']['margin'])


def _trained(settings: Dict[str, Any]) -> str:
    if settings.get('train', 'head') == 'head':
        return 'frozen, linear head on its cached feature map'
    return (f'frozen up to its last block; that block (+ tail) trained at {settings["block_lr_scale"]:g} x lr '
            f'from its cached input, BN statistics frozen, with a linear head')


def markdown_report(study: Dict[str, Any], summaries: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """``table.md``: one table per task, computed from ``study.json`` alone (``summaries``: its
    :func:`summarize_study`, if already computed)."""
    s = study['settings']
    summaries = summaries if summaries is not None else summarize_study(study)
    lines = [f'Model `{s["model"]}` at {s["img_size"]} px, {_trained(s)}; ' + design_lines(study, summaries)[0], '',
             verdict_line(summaries), '']
    caution = too_small_caution(len(s['seeds']))
    lines += [caution, ''] if caution else []
    for name, res in study['tasks'].items():
        lines += [f'### {name} ({res["num_train"]} train, {res["num_val"]} validation, {res["num_test"]} test images)',
                  '']
        lines += comparison_table(res, summaries[name]) + ['']
    return '\n'.join(lines)


_REQUIRED = dict(model=lambda v: isinstance(v, str), img_size=lambda v: isinstance(v, int),
                 train=lambda v: v in TRAIN_PARTS,
                 block_lr_scale=lambda v: isinstance(v, (int, float)) and math.isfinite(v))


def write_report(output: Path) -> Dict[str, Any]:
    """Rewrite ``table.md`` and ``paired_differences.png`` from ``OUTPUT/study.json`` alone."""
    from .plots import plot_paired_differences

    output = Path(output)
    study = load_study(output, _REQUIRED)
    s = study['settings']
    summaries = summarize_study(study)  # once, for the table and the plot
    write_text(output / 'table.md', markdown_report(study, summaries))
    trained = 'linear head' if s['train'] == 'head' else 'last block + head'
    plot_paired_differences(summaries, output / 'paired_differences.png', margin=s['margin'],
                            title=f'{s["model"]}, {trained} trained; {len(s["seeds"])} seeds')
    return study
