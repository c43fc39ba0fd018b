""" Train or fine-tune a timm / u1_ model with cross-entropy or CE + U(1) hue loss, with Accelerate.

``timm-u1 train``, ``accelerate launch -m timm_u1.cli.train`` and ``scripts/train.py`` all run
:func:`train` with a :class:`TrainConfig`::

    from timm_u1.training import TrainConfig, train
    summary = train(TrainConfig(data='digits', model='resnet10t', epochs=10, output='runs/digits'))

One process or many: multi-GPU and multi-node come from ``accelerate config`` / ``accelerate launch``.
Each epoch ends with an evaluation (:func:`evaluate`: top-1, top-5, loss parts, mean hue error)
appended to ``OUTPUT/metrics.jsonl`` (:class:`MetricsLog`) and an atomic ``OUTPUT/checkpoint.pt``
(:func:`save_checkpoint`); ``resume`` continues from it exactly (same model, data order,
augmentation and RNG streams), and refuses a checkpoint of another run. The final model is
exported in the Hub layout to ``OUTPUT/export`` (``timm.create_model("local-dir:OUTPUT/export")``).
"""
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

import timm

from ._files import atomic_path, write_json, write_text
from .errors import ResumeMismatchError
from .hue import hue_angle, label_hue
from .identity import RunFolder, check_same_run
from .loss import U1Loss
from .u1 import U1_PREFIX, U1Output, is_u1_model

__all__ = [
    'CHECKPOINT_NAME', 'METRICS_NAME', 'TrainConfig', 'train', 'ResumeMismatchError', 'dataset_fingerprint',
    'check_labels', 'rng_state', 'set_rng_state', 'save_checkpoint', 'load_checkpoint', 'MetricsLog', 'evaluate',
]

CHECKPOINT_NAME = 'checkpoint.pt'
METRICS_NAME = 'metrics.jsonl'

PathLike = Union[str, os.PathLike]


@dataclass
class TrainConfig:
    """Everything a training run depends on; the fields are ``timm-u1 train``'s options."""
    output: Union[str, os.PathLike]  # run folder: checkpoint, metrics, export
    # data
    data: str = 'digits'  # "digits", a Hub dataset name, an image folder or a save_to_disk folder
    train_split: str = 'train'
    eval_split: str = 'test'
    img_size: Optional[int] = None  # default: the model's
    crop_pct: Optional[float] = None  # eval center-crop fraction (default: the model's)
    batch_size: int = 64  # per process
    workers: int = 0
    # augmentation (timm's create_transform)
    no_aug: bool = False
    scale: Tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    color_jitter: float = 0.4
    # model
    model: str = 'resnet10t'
    pretrained: bool = False
    drop_rate: float = 0.0
    # loss
    loss: str = 'u1'  # 'ce' = plain cross-entropy (hue weight 0)
    hue_weight: float = 1.0
    hue_input: str = 'logits'
    spatial: bool = False
    smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    # optimisation
    epochs: int = 10
    opt: str = 'adamw'
    lr: float = 1e-3
    weight_decay: float = 0.05
    sched: str = 'cosine'
    warmup_epochs: int = 0
    clip_grad: Optional[float] = None
    grad_accum: int = 1
    mixed_precision: str = 'auto'  # auto: bf16 or fp16 on a GPU that has it, full precision on CPU
    # run
    seed: int = 0
    resume: bool = False
    no_export: bool = False
    no_progress: bool = False

    def __post_init__(self):
        self.output = Path(self.output)
        self.scale = tuple(self.scale)
        if self.loss == 'ce':
            self.hue_weight = 0.0

    def check(self) -> None:
        """Refuse settings that cannot work, naming the fix."""
        if self.loss not in ('u1', 'ce'):
            raise ValueError(f"loss must be 'u1' or 'ce', got {self.loss!r}.")
        if self.spatial and not self.hue_weight:
            raise ValueError('--spatial is a form of the hue loss; it needs --loss u1 and --hue-weight > 0.')
        if (self.mixup or self.cutmix) and self.batch_size % 2:
            raise ValueError(
                f'mixup/cutmix pair images within a batch; --batch-size must be even, got {self.batch_size}.')




def dataset_fingerprint(labels: Sequence[int], class_names: Optional[Sequence[str]] = None) -> str:
    """A short hash of a labelled dataset: its size, class names and every label in order.

    Cheap (no image is decoded) and enough to tell two datasets, or two splits, apart.
    """
    h = hashlib.sha256()
    h.update(json.dumps({'n': len(labels), 'classes': list(class_names or [])}).encode())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def check_labels(labels: Sequence[int], class_names: Optional[Sequence[str]], what: str = 'dataset') -> int:
    """The number of classes of a labelled dataset, or a clear error if the hue loss cannot use it."""
    if labels is not None and len(labels) == 0:
        raise ValueError(f'The {what} is empty.')
    # an image folder without class sub-folders comes with a "label" column of None
    if labels is None or all(label is None for label in labels):
        raise ValueError(
            f'The {what} has no "label" column; training needs labelled images (an image folder with '
            f'one sub-folder per class, or a dataset with a ClassLabel "label" column).')
    unlabelled = sum(label is None or label < 0 for label in labels)
    if unlabelled:
        raise ValueError(f'The {what} has {unlabelled} unlabelled rows (label None or < 0); drop them or label them.')
    labels = np.asarray(labels)
    num_classes = len(class_names) if class_names else int(labels.max()) + 1
    if labels.max() >= num_classes:
        raise ValueError(f'The {what} has label {int(labels.max())} but only {num_classes} class names.')
    if num_classes < 3:
        raise ValueError(
            f'The {what} has {num_classes} classes; the U(1) hue of C classes needs C >= 3 (class c sits '
            f'at angle 2 pi c / C, and two classes only span a line). Use a dataset with >= 3 classes.')
    return num_classes


def rng_state() -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's global generators, as tensors and plain values.

    NumPy's state is stored as a tensor so that the checkpoint loads with ``weights_only=True``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        'python': random.getstate(),
        'numpy': (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        'torch': torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(
        path: PathLike,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        epoch: int,
        step: int,
        identity: Dict[str, Any],
        args: Optional[Dict[str, Any]] = None,
) -> Path:
    """Write the full training state to ``path`` atomically: a failed write keeps the previous file.

    Args:
        epoch: number of finished epochs (the resumed run starts at this epoch index).
        step: number of optimizer updates so far.
        identity: what the checkpoint may be resumed into (see :func:`load_checkpoint`).
        args: the run's settings, kept for the record.
    """
    state = {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict() if scheduler is not None else None,
        'rng': rng_state(),
        'epoch': epoch,
        'step': step,
        'identity': dict(identity),
        'args': json.loads(json.dumps(args or {}, default=str)),  # plain values only
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(
        path: PathLike,
        model: nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        scheduler: Any = None,
        identity: Optional[Dict[str, Any]] = None,
        restore_rng: bool = True,
) -> Dict[str, Any]:
    """Load a :func:`save_checkpoint` file into the given objects; returns the checkpoint dict.

    Raises :class:`ResumeMismatchError` before touching anything if ``identity`` differs from the
    identity stored in the checkpoint (another model, head size or dataset).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'No checkpoint at {path}; start without --resume, or point --resume at a checkpoint.pt.')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f'{path} is not a readable training checkpoint ({type(e).__name__}: {e}).') from e
    if identity is not None:
        check_same_run(state.get('identity'), identity, path, 'train into a new --output folder')
    model.load_state_dict(state['model'])
    if optimizer is not None:
        optimizer.load_state_dict(state['optimizer'])
    if scheduler is not None and state.get('scheduler') is not None:
        scheduler.load_state_dict(state['scheduler'])
    if restore_rng:
        set_rng_state(state['rng'])
    return state


class MetricsLog:
    """Metrics as JSON lines, one record per evaluation, each flushed to disk when written."""

    def __init__(self, path: PathLike):
        self.path = Path(path)

    def read(self) -> List[Dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding='utf-8').splitlines()
        records = []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # a crash during append can tear the last line only; anything else is corruption
                if n != len(lines):
                    raise ValueError(f'{self.path}:{n} is not valid JSON; the metrics log is corrupt.')
        return records

    def append(self, record: Dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def truncate(self, num_epochs: int) -> None:
        """Keep only the records of the first ``num_epochs`` epochs (those a checkpoint covers)."""
        kept = [r for r in self.read() if r.get('epoch', 0) < num_epochs]
        write_text(self.path, ''.join(json.dumps(r) + '\n' for r in kept))


def _angle_error(angle: torch.Tensor, target_angle: torch.Tensor) -> torch.Tensor:
    """|angle - target| wrapped to [0, pi]."""
    d = torch.remainder(angle - target_angle + math.pi, 2 * math.pi) - math.pi
    return d.abs()


@torch.no_grad()
def evaluate(
        forward: Callable[[torch.Tensor], Union[torch.Tensor, U1Output]],
        loader: Iterable,
        loss_fn: U1Loss,
        gather: Optional[Callable[[Any], Any]] = None,
        progress: bool = False,
) -> Dict[str, float]:
    """Top-1 and top-5 accuracy (%), the loss and its parts, and the mean hue error (degrees).

    Args:
        forward: the model call, returning logits or a :class:`~timm_u1.u1.U1Output` (the spatial
            loss needs the latter).
        loader: batches of (images, class indices); the model is expected in eval mode.
        loss_fn: the training loss, evaluated on hard labels.
        gather: collects per-sample tensors from every process (``accelerator.gather_for_metrics``);
            None on one process.

    The hue error of an image is the angle between the hue of its logits and its label hue
    2 pi c / C; images whose logits have zero chroma (no hue) are left out of its mean.
    """
    from tqdm.auto import tqdm

    columns: Dict[str, List[torch.Tensor]] = {k: [] for k in ('top1', 'top5', 'loss', 'ce', 'hue', 'hue_error')}
    for images, target in tqdm(loader, desc='eval', leave=False, disable=not progress):
        out = forward(images)
        logits = (out.logits if isinstance(out, U1Output) else out).float()
        parts = loss_fn.parts(out, target)
        num_classes = logits.shape[1]
        top = logits.topk(min(5, num_classes), dim=1).indices
        hit = top == target[:, None]
        err = _angle_error(hue_angle(logits, dim=1), label_hue(num_classes).to(logits.device)[target])
        # the loss comes as a batch mean: repeating it per sample makes the gathered mean the
        # sample-weighted mean, with gather_for_metrics dropping the padding of the last batch
        per_batch = {k: getattr(parts, k).detach().float().expand(len(target)) for k in ('ce', 'hue')}
        per_batch['loss'] = parts.total.detach().float().expand(len(target))
        row = {'top1': hit[:, 0].float(), 'top5': hit.any(dim=1).float(), 'hue_error': err, **per_batch}
        if gather is not None:
            row = gather(row)
        for k, v in row.items():
            columns[k].append(v.cpu())
    if not columns['top1']:
        raise ValueError('The evaluation loader yielded no batches; the evaluation split is empty.')
    cat = {k: torch.cat(v) for k, v in columns.items()}
    return {
        'top1': 100.0 * cat['top1'].mean().item(),
        'top5': 100.0 * cat['top5'].mean().item(),
        'loss': cat['loss'].mean().item(),
        'ce': cat['ce'].mean().item(),
        'hue': cat['hue'].mean().item(),
        'hue_error_deg': math.degrees(cat['hue_error'].nanmean().item()),
        'num_samples': len(cat['top1']),
    }


# --- the trainer ---------------------------------------------------------------------------------

def resolve_mixed_precision(choice: str) -> str:
    if choice != 'auto':
        return choice
    if torch.cuda.is_available():
        return 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
    return 'no'  # CPU autocast is bf16 only, and slower than fp32 on most CPUs


class ForwardU1(nn.Module):
    """Makes ``model.forward_u1(x, spatial=True)`` the module's forward.

    The spatial hue loss needs the per-location logits and the bottleneck map, not just the logits.
    Calling ``accelerator.unwrap_model(model).forward_u1`` would work on one process (the same
    parameters, the same autograd graph), but under DistributedDataParallel it would bypass DDP's
    forward, which readies the gradient all-reduce for the backward pass. So the wrapper, not the
    bare model, is what Accelerate prepares: DDP's forward runs and returns the whole U1Output.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> U1Output:
        return self.model.forward_u1(x, spatial=True)


def create_train_model(args: 'TrainConfig', num_classes: int, accelerator) -> nn.Module:
    """The model to train, as a u1_ twin (same weights as the timm model) with a head of ``num_classes``."""
    spec = args.model
    if not spec.startswith(U1_PREFIX) and timm.is_model(spec):
        spec = U1_PREFIX + spec  # the twin is the same network, plus forward_u1 and its U(1) settings
    kwargs = dict(drop_rate=args.drop_rate) if args.drop_rate else {}
    if not args.pretrained:
        kwargs['num_classes'] = num_classes
    from .lite0 import create_model_from_spec

    model = create_model_from_spec(spec, pretrained=args.pretrained, **kwargs)
    if not is_u1_model(model):
        arch = model.pretrained_cfg.get('architecture') or type(model).__name__
        raise ValueError(
            f'{args.model} loads as a plain {arch} model; pass its u1_ name or a folder saved by '
            f'timm_u1.save_pretrained, or load it with timm_u1.from_pretrained(..., as_u1=True).')
    if model.num_classes != num_classes:
        accelerator.print(
            f'The head of {args.model} has {model.num_classes} classes and the dataset {num_classes}: '
            f'replacing it with a new {num_classes}-class head (fine-tuning).')
        model.reset_classifier(num_classes)
    model.pretrained_cfg['u1'] = dict(
        model.pretrained_cfg.get('u1') or {}, hue_weight=args.hue_weight, hue_input=args.hue_input,
        spatial=args.spatial)
    return model


def training_description(args: 'TrainConfig', num_train: int) -> str:
    """One paragraph for the model card."""
    loss = ('cross-entropy' if not args.hue_weight else
            f'cross-entropy + {args.hue_weight} x U(1) hue loss on the {args.hue_input}'
            + (' (spatial, energy-weighted)' if args.spatial else ''))
    return (
        f'Trained with timm-u1 train for {args.epochs} epochs on {num_train} images of {args.data} '
        f'from {"pretrained weights" if args.pretrained else "scratch"} ({args.model}), {loss}, '
        f'label smoothing {args.smoothing}, mixup {args.mixup}, cutmix {args.cutmix}, {args.opt} '
        f'lr {args.lr} weight decay {args.weight_decay} with a {args.sched} schedule, batch size '
        f'{args.batch_size} x {args.grad_accum} accumulation steps, seed {args.seed}.')


def train(args: TrainConfig) -> Dict[str, Any]:
    """Run the training that ``args`` describes; returns the run's summary (also ``OUTPUT/summary.json``)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import set_seed

    args.check()
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.grad_accum,
        # a sampler seeded by (seed, epoch) gives every process, and a resumed run, the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    out = Path(args.output)
    run_folder = RunFolder(out, '--output')  # checked before any data is read
    checkpoint_path = out / CHECKPOINT_NAME
    if not args.resume and checkpoint_path.exists():
        raise ResumeMismatchError(
            f'{checkpoint_path} exists: pass --resume to continue that run, or choose a new --output.')
    if accelerator.is_main_process:
        run_folder.acquire()  # one run per folder; only the main process writes to it
    try:
        return _train(args, accelerator, out, checkpoint_path)
    finally:
        run_folder.release()


def _train(args: TrainConfig, accelerator, out: Path, checkpoint_path: Path) -> Dict[str, Any]:
    from timm.data import Mixup, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from tqdm.auto import tqdm

    from .data import DATA_CONFIG_KEYS, class_names, load_image_dataset, make_loader
    from .hub import save_pretrained
    from .plots import plot_learning_curves

    # data: Hugging Face datasets with an "image" and a "label" column
    train_ds = load_image_dataset(args.data, split=args.train_split)
    names = class_names(train_ds)
    train_labels = list(train_ds['label']) if 'label' in train_ds.column_names else None
    num_classes = check_labels(train_labels, names, f'training split {args.data}:{args.train_split}')
    names = list(names) if names else [str(c) for c in range(num_classes)]
    eval_ds = load_image_dataset(args.data, split=args.eval_split)
    eval_labels = list(eval_ds['label']) if 'label' in eval_ds.column_names else None
    check_labels(eval_labels, names, f'evaluation split {args.data}:{args.eval_split}')

    # model, and the data config (input size, normalisation) its transforms follow
    model = create_train_model(args, num_classes, accelerator)
    data_config = resolve_data_config(
        dict(input_size=(3, args.img_size, args.img_size) if args.img_size else None, crop_pct=args.crop_pct),
        model=model)
    model.pretrained_cfg.update(input_size=data_config['input_size'], crop_pct=data_config['crop_pct'],
                                mean=data_config['mean'], std=data_config['std'],
                                interpolation=data_config['interpolation'], num_classes=num_classes)
    model.pretrained_cfg.pop('test_input_size', None)  # the trained size is the one to test at
    train_data_config = {k: data_config[k] for k in DATA_CONFIG_KEYS if k in data_config}
    train_loader = make_loader(
        train_ds, train_data_config, batch_size=args.batch_size, num_workers=args.workers, train=True,
        drop_last=bool(args.mixup or args.cutmix),  # mixup pairs need even batches
        no_aug=args.no_aug, scale=tuple(args.scale), hflip=args.hflip, color_jitter=args.color_jitter)
    eval_loader = make_loader(eval_ds, data_config, batch_size=args.batch_size, num_workers=args.workers)

    loss_fn = U1Loss(hue_weight=args.hue_weight, smoothing=args.smoothing, hue_input=args.hue_input,
                     spatial=args.spatial)
    mixup_fn = None
    if args.mixup or args.cutmix:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                         num_classes=num_classes)

    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay)
    updates_per_epoch = (len(train_loader) + args.grad_accum - 1) // args.grad_accum
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs, updates_per_epoch=updates_per_epoch)

    identity = dict(
        model=model.pretrained_cfg['architecture'], num_classes=num_classes, classes=names,
        train_data=dataset_fingerprint(train_labels, names), eval_data=dataset_fingerprint(eval_labels, names),
        input_size=list(data_config['input_size']))
    metrics_log = MetricsLog(out / METRICS_NAME)
    start_epoch, step = 0, 0
    if args.resume and checkpoint_path.exists():
        # last in setup: the RNG streams continue from the end of the checkpointed epoch
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, identity=identity)
        start_epoch, step = state['epoch'], state['step']
        if accelerator.is_main_process:
            metrics_log.truncate(start_epoch)  # drop records of an epoch that did not reach its checkpoint
        accelerator.print(f'Resumed from {checkpoint_path} after epoch {start_epoch} ({step} updates).')
    else:
        if args.resume:
            accelerator.print(f'--resume: no {checkpoint_path} yet, starting from epoch 0.')
        if accelerator.is_main_process:
            metrics_log.truncate(0)

    net = ForwardU1(model) if args.spatial else model
    net, optimizer, train_loader, eval_loader = accelerator.prepare(net, optimizer, train_loader, eval_loader)
    show = accelerator.is_local_main_process and not args.no_progress

    record: Dict[str, Any] = {}
    for epoch in range(start_epoch, args.epochs):
        net.train()
        train_loader.set_epoch(epoch)
        started = time.perf_counter()
        # sums over this process's images of loss, ce and hue, and the count; kept on the device
        # so that logging does not synchronise every step
        running = torch.zeros(4, device=accelerator.device)
        for images, target in tqdm(train_loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not show):
            if mixup_fn is not None:
                images, target = mixup_fn(images, target)
            with accelerator.accumulate(net):
                parts = loss_fn.parts(net(images), target)
                accelerator.backward(parts.total)
                if accelerator.sync_gradients and args.clip_grad:
                    accelerator.clip_grad_norm_(net.parameters(), args.clip_grad)
                optimizer.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                step += 1
                scheduler.step_update(num_updates=step)
            n = len(images)
            running += torch.stack([parts.total.detach() * n, parts.ce.detach() * n, parts.hue.detach() * n,
                                    running.new_tensor(n)])
        scheduler.step(epoch + 1)
        train_time = time.perf_counter() - started

        net.eval()
        metrics = evaluate(net, eval_loader, loss_fn, gather=accelerator.gather_for_metrics, progress=show)
        running = accelerator.reduce(running, reduction='sum').cpu()
        seen = int(running[3])
        train_loss, train_ce, train_hue = (running[:3] / max(seen, 1)).tolist()
        record = dict(epoch=epoch, step=step, lr=optimizer.param_groups[0]['lr'],
                      train_loss=train_loss, train_ce=train_ce, train_hue=train_hue,
                      train_images_per_s=seen / train_time,
                      **{f'eval_{k}': v for k, v in metrics.items()})
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            metrics_log.append(record)
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch + 1, step, identity, asdict(args))
        accelerator.print(
            f'epoch {epoch + 1}: train loss {train_loss:.4f} | eval top-1 {metrics["top1"]:.2f}% '
            f'top-5 {metrics["top5"]:.2f}% loss {metrics["loss"]:.4f} (ce {metrics["ce"]:.4f}, hue '
            f'{metrics["hue"]:.4f}) hue error {metrics["hue_error_deg"]:.1f} deg')

    if not record:  # resumed a finished run: report its last evaluation
        history = metrics_log.read()
        record = history[-1] if history else {}
    summary = dict(args=json.loads(json.dumps(asdict(args), default=str)), num_classes=num_classes,
                   classes=names, final=record)
    if accelerator.is_main_process:
        write_json(out / 'summary.json', summary)
        if not args.no_export and record:
            final = {k[len('eval_'):]: round(v, 4) for k, v in record.items()
                     if k.startswith('eval_') and k != 'eval_num_samples'}
            plot_learning_curves(metrics_log.read(), out / 'export' / 'learning_curves.png')
            save_pretrained(
                model, out / 'export', label_names=names, metrics=final, dataset=str(args.data),
                eval_split=args.eval_split,
                training=training_description(args, len(train_ds)), plots=['learning_curves.png'])
            accelerator.print(f'Exported to {out / "export"}')
    accelerator.end_training()
    return summary


