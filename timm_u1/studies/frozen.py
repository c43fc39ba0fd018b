""" CE vs CE + U(1) on a pretrained backbone, frozen up to its head or its last block: a study that
could detect a real effect.

The backbone (by default the offline ImageNet EfficientNet-Lite0) is frozen and run ONCE per
dataset; what it computes is cached in a safetensors file in the study folder. Two things can be
trained on that cache (``FinetuneConfig.train``):

* ``'head'``: the cache is the ``forward_features`` map (for timm's EfficientNet the output of
  ``conv_head`` + ``bn2`` + activation, 1280 channels, 3x3 at 96 px) and every run trains only a
  new linear classifier on it. A run costs milliseconds instead of a backbone pass.
* ``'last-block'``: the cache is the INPUT of the backbone's last block (:func:`last_block`:
  ``blocks[-1][-1]`` of timm's EfficientNet, ``layer4[-1]`` of its ResNet). Every run trains a copy
  of that block and of what ``forward_features`` does after it (EfficientNet: ``conv_head`` +
  ``bn2``; ResNet: nothing) at ``lr * block_lr_scale``, plus the new classifier at ``lr``, with the
  BatchNorm running statistics frozen. Copy and cache together reproduce ``forward_features``
  exactly, so the features can move while the rest of the backbone is never run again.

Either way the head sees a map: pooled logits ``classifier(mean_xy(map))`` and, for the spatial hue
variant, the same classifier at every location (``classifier(map[:, :, y, x])``, as
:meth:`~timm_u1.core.u1.U1ModelMixin._spatial_logits` does). The two studies share one code path; they
differ only in what the training loop's ``get_maps`` returns and which modules train.

Arms (all trained with the same seeds, data and budget as CE, so differences are paired):

* ``ce``: cross-entropy.
* ``ls``: label-smoothed cross-entropy (the obvious competitor).
* ``u1_logits``, ``u1_spatial``, ``u1_probs``: CE + lambda x U(1) with the hue of the logits, of the
  per-location logits (energy-weighted) and of the softmax.
* ``u1_perm``: ``u1_logits`` with the class-to-angle assignment a random permutation (drawn per
  seed): if it does as well as ``u1_logits``, the order of classes on the circle does not matter and
  the effect, if any, is regularisation, not U(1). The permutation is applied by permuting logit
  columns and relabelling the target, which leaves the CE term unchanged.

Protocol per task (a dataset, and for low-shot tasks a number of training images per class):
a stratified validation split is carved from the training data; the learning rate and the arm's
own parameter (lambda, or the smoothing) are chosen on validation only, over small grids, with
selection seeds distinct from the test seeds; the chosen configuration is then trained with every
test seed and evaluated on the test split once. Differences to CE are paired (same seed), with a
bootstrap over seeds and test images, and each arm gets a verdict from pre-registered tests at
margin +-``MARGIN`` points, Holm-corrected over the arms: "better" (superiority), "worse",
"equivalent" (TOST) or "inconclusive".

:func:`run_finetune_study` runs it, :func:`write_report` rewrites ``table.md`` and the plot from
``study.json`` alone; ``timm-u1 finetune`` is the command line.
"""
import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..files import atomic_path, read_json, write_json, write_text
from ..core.hue import activation_hue
from ..data import stratified_split
from ..runs.identity import check_same_run
from ..core.loss import U1Loss
from .paired import MARGIN, correct_string, summarize_task, too_small_caution
from ..core.u1 import U1Output

__all__ = [
    'ARMS', 'MARGIN', 'TRAIN_PARTS', 'FinetuneConfig', 'Task', 'parse_task', 'preprocess', 'LastBlock',
    'last_block', 'trainable_last_block', 'extract_feature_maps', 'extract_block_inputs', 'cached_features',
    'head_outputs', 'make_loss', 'fit_head', 'evaluate_head', 'run_finetune_study', 'summarize_study',
    'markdown_report',
    'write_report',
]

ARMS = ('ce', 'ls', 'u1_logits', 'u1_spatial', 'u1_probs', 'u1_perm')
TRAIN_PARTS = ('head', 'last-block')
# what the feature cache holds for each TRAIN_PARTS value (in its file name and metadata)
_CACHED = {'head': 'forward_features', 'last-block': 'last_block_input'}
# learning-rate grid and steps when not given. 'last-block': a run costs ~15x a head run (the block's
# forward and backward at every step), so the budget is 50 steps and the grid drops 3e-2, at which
# AdamW would move the pretrained block at 3e-3 per step, above the usual fine-tuning range; both
# fixed before any test-split number of the last-block study existed (docs/results.md).
_DEFAULT_LRS = {'head': (3e-3, 1e-2, 3e-2), 'last-block': (3e-3, 1e-2)}
_DEFAULT_STEPS = {'head': 150, 'last-block': 50}


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
    bootstrap: int = 4000
    margin: float = MARGIN
    extract_batch: int = 64
    pretrained: Optional[bool] = None  # None: the model spec's default (True for the offline Lite0)

    def __post_init__(self):
        self.output = Path(self.output)
        if self.train not in TRAIN_PARTS:
            raise ValueError(f'train={self.train!r}: choose from {list(TRAIN_PARTS)}.')
        if not self.block_lr_scale > 0:
            raise ValueError(f'block_lr_scale must be > 0, got {self.block_lr_scale}.')
        self.lrs = tuple(self.lrs) if self.lrs is not None else _DEFAULT_LRS[self.train]
        self.steps = self.steps if self.steps is not None else _DEFAULT_STEPS[self.train]
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f'Unknown arms {unknown}; choose from {list(ARMS)}.')
        if 'ce' not in self.arms:
            raise ValueError('The arms must include "ce": every other arm is compared to it.')
        if len(set(self.seeds)) != len(self.seeds) or set(self.seeds) & set(self.selection_seeds):
            raise ValueError('Test seeds must be distinct, and distinct from the selection seeds.')
        if len(self.seeds) < 2:
            raise ValueError(f'Paired statistics need >= 2 seeds, got {list(self.seeds)}.')
        for t in self.tasks:
            parse_task(t)


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
# Features: one frozen backbone pass per dataset, cached

def preprocess(images: Sequence[Any], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """PIL images -> normalised (B, 3, size, size) float32 (RGB, bicubic resize, no crop, no augmentation)."""
    from PIL import Image

    from ..data import to_rgb

    arrays = [np.asarray(to_rgb(im).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0 for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


@torch.no_grad()
def extract_feature_maps(backbone: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``forward_features`` of the frozen backbone (put in eval mode: BN running statistics), (N, D, H, W)."""
    backbone.eval()
    maps = [backbone.forward_features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    out = torch.cat(maps).float()
    if out.dim() != 4:
        raise ValueError(f'{type(backbone).__name__}.forward_features gives {tuple(out.shape)}; the finetune '
                         f'study needs a CNN feature map (B, C, H, W).')
    return out.contiguous()


_SUPPORTED = ("timm's EfficientNet family (.blocks, .conv_head, .bn2; e.g. tf_efficientnet_lite0, "
              "efficientnet_b0, test_efficientnet) and ResNet family (.layer4; e.g. resnet18, test_resnet)")


def last_block(backbone: nn.Module) -> Tuple[nn.Module, List[nn.Module]]:
    """The backbone's last block and the modules ``forward_features`` applies after it, in order.

    EfficientNet: ``blocks[-1][-1]`` (``blocks`` is a Sequential of stages, each a Sequential of
    blocks), then ``conv_head`` and ``bn2`` (BatchNorm + activation). ResNet: ``layer4[-1]``, then
    nothing. Only classes whose ``forward_features`` is timm's own are accepted, since the cached
    path must reproduce it exactly; anything else is refused.
    """
    from timm.models.efficientnet import EfficientNet
    from timm.models.resnet import ResNet

    cls = type(backbone)
    if isinstance(backbone, EfficientNet) and cls.forward_features is EfficientNet.forward_features:
        return backbone.blocks[-1][-1], [backbone.conv_head, backbone.bn2]
    if isinstance(backbone, ResNet) and cls.forward_features is ResNet.forward_features:
        return backbone.layer4[-1], []
    name = getattr(backbone, 'default_cfg', {}).get('architecture') or cls.__name__
    raise ValueError(f'train="last-block" does not know the last block of {name!r} ({cls.__name__}); it supports '
                     f'{_SUPPORTED}. Use train="head" (--train head) for other CNNs; both need a backbone whose '
                     f'forward_features is a (B, C, H, W) map, which rules out ViTs.')


class LastBlock(nn.Module):
    """The trainable end of a backbone: its last block, then what ``forward_features`` does after it."""

    def __init__(self, block: nn.Module, tail: Sequence[nn.Module]):
        super().__init__()
        self.block = block
        self.tail = nn.Sequential(*tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.block(x))


def trainable_last_block(backbone: nn.Module) -> LastBlock:
    """A deep copy of the backbone's last block and tail (:func:`last_block`), trainable, in eval mode.

    The backbone itself is left untouched (its parameters keep ``requires_grad`` as they are).
    """
    block, tail = last_block(backbone)
    return copy.deepcopy(LastBlock(block, tail)).eval().requires_grad_(True)


@torch.no_grad()
def extract_block_inputs(backbone: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """What the frozen backbone (eval mode) feeds its last block (:func:`last_block`), (N, C, H, W).

    Taken by a hook during ``forward_features`` itself, so the cache is by construction what the
    backbone's own forward gives the block.
    """
    block, _ = last_block(backbone)
    backbone.eval()
    inputs: List[torch.Tensor] = []
    hook = block.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    try:
        for i in range(0, len(x), batch_size):
            backbone.forward_features(x[i:i + batch_size])
    finally:
        hook.remove()
    return torch.cat(inputs).float().contiguous()


def _load_source(source: str, study_dir: Path):
    from ..data import PHOTO_PATCHES, build_photo_patches, class_names, load_image_dataset

    path = str(build_photo_patches(study_dir / 'photo_patches')) if source == PHOTO_PATCHES else source
    train = load_image_dataset(path, 'train')
    names = class_names(train)
    test = load_image_dataset(path, 'test', class_names=names)
    return train, test, names


def cached_features(
        cfg: FinetuneConfig, source: str, backbone: Optional[nn.Module] = None,
) -> Dict[str, torch.Tensor]:
    """The backbone's maps of ``source``'s train and test images, from ``OUTPUT/features`` or computed once.

    What is cached follows ``cfg.train``: the ``forward_features`` map for ``'head'``, the last
    block's input for ``'last-block'``. The file (safetensors, written atomically) names what it holds
    in its file name and metadata, with the model spec, ``pretrained`` and the input size; a file
    made with other settings is recomputed, not reused.
    """
    from safetensors.torch import load_file, safe_open, save

    tag = source.replace('/', '_').strip('_.')
    cached = _CACHED[cfg.train]
    path = cfg.output / 'features' / f'{tag}_{cfg.img_size}px_{cached}.safetensors'
    meta = {'model': cfg.model, 'pretrained': str(cfg.pretrained), 'img_size': str(cfg.img_size), 'source': source,
            'cached': cached}
    if path.is_file():
        with safe_open(str(path), 'pt') as f:
            if f.metadata() == meta:
                return load_file(str(path))
    if backbone is None:
        backbone = _create_backbone(cfg)
    extract = extract_feature_maps if cfg.train == 'head' else extract_block_inputs
    mean, std = backbone.pretrained_cfg.get('mean'), backbone.pretrained_cfg.get('std')
    train, test, names = _load_source(source, cfg.output)
    if not names or len(names) < 3:
        raise ValueError(f'{source!r} needs a label column with >= 3 classes for the U(1) loss, got {names}.')
    tensors = {}
    for split, ds in (('train', train), ('test', test)):
        x = preprocess(ds['image'], cfg.img_size, mean, std)
        tensors[f'{split}_maps'] = extract(backbone, x, cfg.extract_batch)
        tensors[f'{split}_labels'] = torch.tensor(ds['label'], dtype=torch.int64)
    with atomic_path(path) as tmp:
        tmp.write_bytes(save(tensors, metadata=meta))  # into the temp file atomic_path made (its permissions)
    return tensors


def _create_backbone(cfg: FinetuneConfig) -> nn.Module:
    from ..io.factory import create_model_from_spec

    model = create_model_from_spec(cfg.model, pretrained=cfg.pretrained)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# One run: a linear head on the (cached) maps

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


def class_order(seed: int, num_classes: int) -> torch.Tensor:
    """The random class-to-angle permutation of the ``u1_perm`` arm for one seed."""
    g = torch.Generator().manual_seed(10_000 + seed)
    return torch.randperm(num_classes, generator=g)


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
# Splits and the per-task protocol

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


def _grid(cfg: FinetuneConfig, arm: str) -> List[Tuple[float, float]]:
    params = {'ce': (0.0,), 'ls': cfg.smoothings}.get(arm, cfg.hue_weights)
    return [(p, lr) for p in params for lr in cfg.lrs]


def run_task(cfg: FinetuneConfig, task: Task, feats: Dict[str, torch.Tensor], log=print,
             body: Optional[nn.Module] = None) -> Dict[str, Any]:
    """Selection on validation, then every test seed once with the chosen configuration, per arm.

    ``body``: for the ``'last-block'`` study, the trainable end of the backbone whose inputs ``feats``
    holds (:func:`trainable_last_block`); None for the head study.
    """
    labels = feats['train_labels'].numpy()
    result: Dict[str, Any] = {'selection': {}, 'test': {}}
    t0 = time.perf_counter()
    for arm in cfg.arms:
        rows = []
        for param, lr in _grid(cfg, arm):
            accs = []
            for seed in cfg.selection_seeds:
                tr, va = stratified_split(labels, cfg.val_fraction, task.shots, seed)
                vi = torch.from_numpy(va)
                accs.append(100 * _run(cfg, feats, arm, param, lr, seed, tr, feats['train_maps'][vi],
                                       feats['train_labels'][vi], body).mean())
            rows.append(dict(param=param, lr=lr, val_top1=float(np.mean(accs))))
        best = max(rows, key=lambda r: r['val_top1'])  # first of equals: the smaller param / lr
        result['selection'][arm] = dict(grid=rows, chosen=best)
    result['selection_seconds'] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for arm in cfg.arms:
        chosen = result['selection'][arm]['chosen']
        top1, correct = [], []
        for seed in cfg.seeds:
            tr, _ = stratified_split(labels, cfg.val_fraction, task.shots, seed)
            c = _run(cfg, feats, arm, chosen['param'], chosen['lr'], seed, tr, feats['test_maps'], feats['test_labels'],
                     body)
            top1.append(float(100 * c.mean()))
            correct.append(correct_string(c))
        result['test'][arm] = dict(param=chosen['param'], lr=chosen['lr'], top1=top1, correct=correct)
        log(f'{task.name} {arm}: param {chosen["param"]:g}, lr {chosen["lr"]:g}, test top-1 {np.mean(top1):.2f}')
    result['test_seconds'] = time.perf_counter() - t0
    result['num_train'] = int(len(stratified_split(labels, cfg.val_fraction, task.shots, cfg.seeds[0])[0]))
    result['num_val'] = int(len(stratified_split(labels, cfg.val_fraction, task.shots, cfg.seeds[0])[1]))
    result['num_test'] = int(len(feats['test_labels']))
    return result


_LABELS = {
    'ce': 'CE', 'ls': 'CE, label smoothing', 'u1_logits': 'CE + λ U(1), logits', 'u1_spatial': 'CE + λ U(1), spatial',
    'u1_probs': 'CE + λ U(1), probs', 'u1_perm': 'CE + λ U(1), permuted angles',
}


def summarize_study(study: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """:func:`~timm_u1.studies.paired.summarize_task` of every task of ``study.json``."""
    s = study['settings']
    return {name: summarize_task(res, s['bootstrap'], s['margin']) for name, res in study['tasks'].items()}


def markdown_report(study: Dict[str, Any], summaries: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """``table.md``: one table per task, computed from ``study.json`` alone (``summaries``: its
    :func:`summarize_study`, if already computed)."""
    s = study['settings']
    summaries = summaries if summaries is not None else summarize_study(study)
    lines = [f'Model `{s["model"]}` at {s["img_size"]} px, {_trained(s)}; '
             f'{len(s["seeds"])} test seeds; margin ±{s["margin"]:g} points; Holm over {len(s["arms"]) - 1} arms; '
             f'{s["bootstrap"]} bootstrap resamples of seeds and test images.', '']
    caution = too_small_caution(len(s['seeds']), s['bootstrap'], len(s['arms']) - 1)
    lines += [caution, ''] if caution else []
    for name, res in study['tasks'].items():
        summary = summaries[name]
        lines += [f'### {name} ({res["num_train"]} train, {res["num_val"]} validation, {res["num_test"]} test images)', '',
                  '| arm | chosen param, lr | top-1 mean ± std (%) | minus CE [95% bootstrap CI] | wins/ties | '
                  'p better / worse / TOST (Holm) | verdict |',
                  '|---|---|---|---|---|---|---|']
        for arm, o in summary.items():
            head = f'| {_LABELS[arm]} | {o["param"]:g}, {o["lr"]:g} | {o["mean"]:.2f} ± {o["std"]:.2f} |'
            if arm == 'ce':
                lines.append(head + ' — | — | — | reference |')
            else:
                lines.append(head + f' {o["diff"]:+.2f} [{o["lo"]:+.2f}, {o["hi"]:+.2f}] | {o["wins"]}/{o["ties"]} | '
                             f'{o["p_better_holm"]:.3f} / {o["p_worse_holm"]:.3f} / {o["p_tost_holm"]:.3f} | '
                             f'**{o["verdict"]}** |')
        lines.append('')
    return '\n'.join(lines)


def _trained(settings: Dict[str, Any]) -> str:
    if settings.get('train', 'head') == 'head':  # study.json files older than the last-block study: head
        return 'frozen, linear head on its cached feature map'
    return (f'frozen up to its last block; that block (+ tail) trained at {settings["block_lr_scale"]:g} x lr '
            f'from its cached input, BN statistics frozen, with a linear head')


def write_report(output: Path) -> Dict[str, Any]:
    """Rewrite ``table.md`` and ``paired_differences.png`` from ``OUTPUT/study.json`` alone."""
    from .plots import plot_paired_differences

    output = Path(output)
    study = read_json(output / 'study.json')
    s = study['settings']
    summaries = summarize_study(study)  # the bootstrap once, for the table and the plot
    write_text(output / 'table.md', markdown_report(study, summaries))
    plot_paired_differences(summaries, output / 'paired_differences.png', margin=s['margin'],
                            title=f'{s["model"]}, {"linear head" if s.get("train", "head") == "head" else "last block + head"}'
                                  f' trained; arm minus CE, {len(s["seeds"])} seeds')
    return study


def run_finetune_study(cfg: FinetuneConfig, command: str = '', backbone: Optional[nn.Module] = None,
                       log=print) -> Dict[str, Any]:
    """Cache features, run every task, write ``study.json`` (after each task), ``table.md`` and the plot.

    Rerun with the same settings, a stopped study resumes after its last finished task; with other
    settings it is refused (:func:`~timm_u1.runs.identity.check_same_run`), naming what differs.
    """
    if cfg.output.exists() and not cfg.output.is_dir():
        raise ValueError(f'--output {cfg.output} is a file; the study needs a folder (a new or an earlier study\'s).')
    cfg.output.mkdir(parents=True, exist_ok=True)
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k != 'output'}
    study: Dict[str, Any] = {'settings': dict(settings, command=command), 'tasks': {}, 'seconds': {}}
    path = cfg.output / 'study.json'
    if path.is_file():
        # a study stopped part-way resumes after its last finished task (study.json is written after each)
        stored = read_json(path)
        check_same_run({k: v for k, v in stored.get('settings', {}).items() if k != 'command'}, settings, path,
                       'choose another --output (or delete study.json to start over)', state='a study')
        study['tasks'], study['seconds'] = stored['tasks'], stored.get('seconds', {})
    t_start = time.perf_counter() - study['seconds'].get('total', 0.0)
    body = None
    if cfg.train == 'last-block':
        # the block's pretrained weights come from the backbone (created, not run, when the cache exists)
        backbone = backbone if backbone is not None else _create_backbone(cfg)
        body = trainable_last_block(backbone)
    for spec in cfg.tasks:
        task = parse_task(spec)
        if task.name in study['tasks']:
            log(f'{task.name}: finished in {path}, kept')
            continue
        t0 = time.perf_counter()
        feats = cached_features(cfg, task.source, backbone)
        # the first task of a source pays for its features; later ones read the cache
        study['seconds'].setdefault(f'features {task.source}', time.perf_counter() - t0)
        study['tasks'][task.name] = run_task(cfg, task, feats, log, body)
        study['seconds']['total'] = time.perf_counter() - t_start
        write_json(cfg.output / 'study.json', study)
    write_report(cfg.output)
    return study
