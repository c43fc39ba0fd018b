""" Train or fine-tune a timm / u1_ model with cross-entropy or CE + U(1) hue loss, with Accelerate.

``timm-u1 train``, ``accelerate launch -m timm_u1.cli.train`` and ``scripts/train.py`` all run
:func:`train` with a :class:`TrainConfig`::

    from timm_u1.training import TrainConfig, train
    summary = train(TrainConfig(data='digits', model='resnet10t', epochs=10, output='runs/digits'))

One process or many: multi-GPU and multi-node come from ``accelerate config`` / ``accelerate launch``.
Each epoch ends with an evaluation (:func:`evaluate`: top-1, top-5, loss parts, mean hue error)
appended to ``OUTPUT/metrics.jsonl`` (:class:`MetricsLog`) and an atomic ``OUTPUT/checkpoint.pt``
(:func:`save_checkpoint`); ``resume`` continues from it exactly (same model, data order,
augmentation and every process's RNG streams), on the schedule of the resuming run's ``epochs``
(so a larger ``epochs`` extends a run), and refuses a checkpoint whose run-changing settings differ
(:data:`RESUMABLE_SETTINGS` are the ones that may change). The final model is exported in the Hub
layout to ``OUTPUT/export`` (``timm.create_model("local-dir:OUTPUT/export")``), its
``pretrained_cfg`` describing the trained run. docs/training.md has the recipes.
"""
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

import timm

from ..files import atomic_path, write_json, write_text
from ..errors import ResumeMismatchError
from ..core.hue import hue_angle, label_hue
from ..runs import RunFolder, check_same_run
from ..core.loss import U1Loss
from ..core.u1 import U1_PREFIX, U1Output, is_u1_model

__all__ = [
    'CHECKPOINT_NAME', 'METRICS_NAME', 'RESUMABLE_SETTINGS', 'TrainConfig', 'train', 'ResumeMismatchError',
    'dataset_fingerprint', 'check_labels', 'check_num_classes', 'check_output', 'export_pretrained_cfg',
    'rng_state', 'set_rng_state', 'save_checkpoint', 'load_checkpoint', 'MetricsLog', 'evaluate',
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
    eval_split: Optional[str] = None  # None: test if labelled, else validation (data.choose_eval_split)
    eval_data: Optional[str] = None  # where the eval split comes from (default: data)
    image_column: Optional[str] = None  # default: found by type and name (data.load_image_dataset)
    label_column: Optional[str] = None  # e.g. 'coarse_label'; default: found by type and name
    streaming: bool = False  # read both splits as datasets.IterableDataset (larger than memory)
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
    # None: Accelerate decides (accelerate launch --mixed_precision, `accelerate config`, its env);
    # 'auto': bf16 or fp16 on a GPU that has it, full precision on CPU
    mixed_precision: Optional[str] = None
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
        if self.mixed_precision not in (None, 'auto', 'no', 'fp16', 'bf16'):
            raise ValueError(f"mixed_precision must be None, 'auto', 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}.")

    def run_settings(self) -> Dict[str, Any]:
        """The settings a resumed run must share with its checkpoint: all but :data:`RESUMABLE_SETTINGS`."""
        return {k: v for k, v in asdict(self).items() if k not in RESUMABLE_SETTINGS}


# settings that do not change what a run computes, so a resumed run may change them: where it writes,
# how long it runs (a larger --epochs extends the run, on the schedule of the new length), progress
# bars, loader workers (the sampler, not the workers, orders the data) and the export at the end.
# mixed_precision is compared as resolved (the precision the run computes in), in the identity.
RESUMABLE_SETTINGS = ('output', 'epochs', 'resume', 'no_export', 'no_progress', 'workers', 'mixed_precision')



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
    return check_num_classes(num_classes, what)


def check_num_classes(num_classes: int, what: str = 'dataset') -> int:
    """``num_classes``, or a clear error if the hue loss cannot use that many."""
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
        rng_per_process: Optional[List[Dict[str, Any]]] = None,
) -> Path:
    """Write the full training state to ``path`` atomically: a failed write keeps the previous file.

    Args:
        epoch: number of finished epochs (the resumed run starts at this epoch index).
        step: number of optimizer updates so far.
        identity: what the checkpoint may be resumed into (see :func:`load_checkpoint`).
        args: the run's settings, kept for the record.
        rng_per_process: every process's :func:`rng_state`, in process order (each process has its
            own augmentation stream); default: this process's only.
    """
    rngs = list(rng_per_process) if rng_per_process is not None else [rng_state()]
    state = {
        'model': model.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict() if scheduler is not None else None,
        'rng': rngs[0],
        'rng_per_process': rngs,
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
        process_index: int = 0,
) -> Dict[str, Any]:
    """Load a :func:`save_checkpoint` file into the given objects; returns the checkpoint dict.

    Raises :class:`ResumeMismatchError` before touching anything if ``identity`` differs from the
    identity stored in the checkpoint (another model, head size, dataset or setting).
    ``scheduler`` is restored only when given: the trainer does not pass it, but rebuilds its
    schedule for the run's (possibly extended) length and steps it to the checkpoint's epoch, as
    timm's train.py does. ``process_index`` picks this process's RNG streams.
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
        rngs = state.get('rng_per_process') or [state['rng']]
        set_rng_state(rngs[process_index] if process_index < len(rngs) else rngs[0])
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
        per_sample: bool = False,
) -> Dict[str, Any]:
    """Top-1 and top-5 accuracy (%), the loss and its parts, and the mean hue error (degrees).

    Args:
        forward: the model call, returning logits or a :class:`~timm_u1.core.u1.U1Output` (the spatial
            loss needs the latter).
        loader: batches of (images, class indices); the model is expected in eval mode.
        loss_fn: the training loss, evaluated on hard labels.
        gather: collects per-sample tensors from every process (``accelerator.gather_for_metrics``);
            None on one process.
        per_sample: also return ``'correct'``, a bool list: whether each image's top-1 is right, in
            the order the (gathered) loader yields the images. That is the dataset's order for an
            unshuffled loader, including Accelerate's, which deals whole batches to the processes
            in turn and gathers them back in turn (the paired bootstrap of :mod:`timm_u1.studies.scratch`).

    The hue error of an image is the angle between the hue of its logits and its label hue
    2 pi c / C; images whose logits have zero chroma (no hue) are left out of its mean.
    """
    from timm.utils import accuracy
    from tqdm.auto import tqdm

    columns: Dict[str, List[torch.Tensor]] = {k: [] for k in ('top1', 'top5', 'loss', 'ce', 'hue', 'hue_error')}
    correct: List[torch.Tensor] = []
    for images, target in tqdm(loader, desc='eval', leave=False, disable=not progress):
        out = forward(images)
        logits = (out.logits if isinstance(out, U1Output) else out).float()
        parts = loss_fn.parts(out, target)
        num_classes = logits.shape[1]
        err = _angle_error(hue_angle(logits, dim=1), label_hue(num_classes).to(logits.device)[target])
        # the loss comes as a batch mean: repeating it per sample makes the gathered mean the
        # sample-weighted mean, with gather_for_metrics dropping the padding of the last batch
        per_batch = {k: getattr(parts, k).detach().float().expand(len(target)) for k in ('ce', 'hue')}
        per_batch['loss'] = parts.total.detach().float().expand(len(target))
        row = {'logits': logits, 'target': target, 'hue_error': err, **per_batch}
        if gather is not None:
            row = gather(row)
        # timm's top-k on the gathered batch (padding already dropped), as sums of hits
        top1, top5 = accuracy(row['logits'], row['target'], topk=(1, min(5, num_classes)))
        n = len(row['target'])
        if per_sample:  # the top-1 of timm's accuracy (topk), so the hits add up to its count
            correct.append((row['logits'].topk(1, 1, True, True).indices[:, 0] == row['target']).cpu())
        columns['top1'].append(torch.round(top1 * n / 100.0).reshape(1).cpu())  # exact hit counts
        columns['top5'].append(torch.round(top5 * n / 100.0).reshape(1).cpu())
        for k in ('loss', 'ce', 'hue', 'hue_error'):
            columns[k].append(row[k].cpu())
    if not columns['top1']:
        raise ValueError('The evaluation loader yielded no batches; the evaluation split is empty.')
    cat = {k: torch.cat(v) for k, v in columns.items()}
    num_samples = len(cat['loss'])
    result: Dict[str, Any] = {
        'top1': 100.0 * cat['top1'].sum().item() / num_samples,
        'top5': 100.0 * cat['top5'].sum().item() / num_samples,
        'loss': cat['loss'].mean().item(),
        'ce': cat['ce'].mean().item(),
        'hue': cat['hue'].mean().item(),
        'hue_error_deg': math.degrees(cat['hue_error'].nanmean().item()),
        'num_samples': num_samples,
    }
    if per_sample:
        result['correct'] = torch.cat(correct).tolist()
    return result


# --- the trainer ---------------------------------------------------------------------------------

def resolve_mixed_precision(choice: Optional[str]) -> Optional[str]:
    """What to pass to ``Accelerator(mixed_precision=...)``: None lets Accelerate decide (the launcher's
    ``--mixed_precision``, ``accelerate config``, ``ACCELERATE_MIXED_PRECISION``)."""
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
    from ..io.factory import create_model_from_spec

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


def export_pretrained_cfg(model: nn.Module, data_config: Dict[str, Any], num_classes: int) -> None:
    """Make ``model.pretrained_cfg`` describe the run that trains it, so that timm's own data config of
    the export (``resolve_data_config(model=..., use_test_size=True)``, as validate.py resolves it)
    preprocesses as the run's evaluation did.

    The base model's test-time recommendations (``test_input_size``, ``test_crop_pct``) and the
    source of its weights (``tag``, ``hf_hub_id``, ``url``, ...) describe weights the export no longer
    has; ``pool_size`` is measured on the trained input size.
    """
    from ..data import DATA_CONFIG_KEYS

    cfg = model.pretrained_cfg
    for key in ('test_input_size', 'test_crop_pct', 'test_pool_size', 'tag', 'hf_hub_id', 'hf_hub_filename',
                'hf_hub_revision', 'url', 'file', 'source', 'state_dict'):
        cfg.pop(key, None)
    cfg.update({k: data_config[k] for k in DATA_CONFIG_KEYS if k in data_config}, num_classes=num_classes)
    was_training = model.training
    model.eval()  # no BatchNorm statistics move, no RNG is drawn
    try:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, *data_config['input_size']))
    finally:
        model.train(was_training)
    if features.ndim == 4 and 'pool_size' in cfg:
        cfg['pool_size'] = tuple(features.shape[-2:])


def check_world_size(accelerator) -> None:
    """Refuse a launch whose processes do not form one run (each would train alone and write the output)."""
    launched = os.environ.get('WORLD_SIZE')
    if launched and launched.isdigit() and int(launched) != accelerator.num_processes:
        raise RuntimeError(
            f'Launched as {launched} processes (WORLD_SIZE={launched}) but Accelerate sees '
            f'{accelerator.num_processes}: each process would train alone and all would write the same '
            f'--output. Without GPUs, run the processes on the CPU: ACCELERATE_USE_CPU=1 accelerate launch '
            f'--multi_gpu --num_processes {launched} -m timm_u1.cli.train ... (gloo); with GPUs, check that '
            f'every process sees one (CUDA_VISIBLE_DEVICES, `accelerate config`).')


def training_description(args: 'TrainConfig', num_train: Optional[int]) -> str:
    """One paragraph for the model card."""
    loss = ('cross-entropy' if not args.hue_weight else
            f'cross-entropy + {args.hue_weight} x U(1) hue loss on the {args.hue_input}'
            + (' (spatial, energy-weighted)' if args.spatial else ''))
    return (
        f'Trained with timm-u1 train for {args.epochs} epochs on {num_train or "a stream of"} images of {args.data} '
        f'from {"pretrained weights" if args.pretrained else "scratch"} ({args.model}), {loss}, '
        f'label smoothing {args.smoothing}, mixup {args.mixup}, cutmix {args.cutmix}, {args.opt} '
        f'lr {args.lr} weight decay {args.weight_decay} with a {args.sched} schedule, batch size '
        f'{args.batch_size} x {args.grad_accum} accumulation steps, seed {args.seed}.')


def parameters_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameters (not its buffers: BatchNorm statistics are per process under DDP)."""
    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        digest.update(name.encode())
        digest.update(p.detach().to('cpu', torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def stream_fingerprint(ds: Any, source: str, split: str) -> str:
    """What identifies a streamed split without reading it: source, split, classes and declared size."""
    from ..data import class_names

    splits = getattr(getattr(ds, 'info', None), 'splits', None) or {}
    size = splits[split].num_examples if split in splits else None
    key = json.dumps({'source': source, 'split': split, 'classes': class_names(ds), 'n': size}, sort_keys=True)
    return 'stream:' + hashlib.sha256(key.encode()).hexdigest()[:16]


RUN_RESULTS = (METRICS_NAME, 'summary.json', 'export')


def check_output(out: Path, resume: bool) -> None:
    """Refuse to write over another run: a checkpoint without --resume, or the results of a run that
    can no longer be resumed (its checkpoint is gone)."""
    checkpoint_path = out / CHECKPOINT_NAME
    if checkpoint_path.exists():
        if not resume:
            raise ResumeMismatchError(
                f'{checkpoint_path} exists: pass --resume to continue that run, or choose a new --output.')
        return
    present = [name for name in RUN_RESULTS if (out / name).exists()
               and (name != METRICS_NAME or MetricsLog(out / name).read())]  # an empty log holds no result
    # a metrics log alone, under --resume, is a run stopped before its first checkpoint: it restarts
    if any(name != METRICS_NAME for name in present) or (present and not resume):
        raise ResumeMismatchError(
            f'{out} holds {", ".join(present)} of an earlier run but no {CHECKPOINT_NAME}, so that run cannot '
            f'be resumed, and training here would replace them. Choose a new --output, or delete them first.')


def train(args: TrainConfig) -> Dict[str, Any]:
    """Run the training that ``args`` describes; returns the run's summary (also ``OUTPUT/summary.json``).

    Under ``accelerate launch`` every process runs this; the main process alone writes the run folder.
    """
    from accelerate import Accelerator, DataLoaderConfiguration

    args.check()
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.grad_accum,
        # a sampler seeded by (seed, epoch) gives every process, and a resumed run, the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    check_world_size(accelerator)
    out = Path(args.output)
    run_folder = RunFolder(out, '--output')  # checked before any data is read
    check_output(out, args.resume)
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one writes to it
    if accelerator.is_main_process:
        run_folder.acquire()  # one run per folder; only the main process writes to it
    try:
        return _train(args, accelerator, out, out / CHECKPOINT_NAME)
    finally:
        run_folder.release()


def _train(args: TrainConfig, accelerator, out: Path, checkpoint_path: Path) -> Dict[str, Any]:
    from accelerate.utils import gather_object, set_seed
    from timm.data import Mixup, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from tqdm.auto import tqdm

    from ..data import DATA_CONFIG_KEYS, choose_eval_split, class_names, load_image_dataset, make_loader
    from ..io.save import save_pretrained
    from .plots import plot_learning_curves

    # the same seed on every process up to the model's initialisation: every process builds the same model
    set_seed(args.seed)
    multi = accelerator.num_processes > 1

    # data: Hugging Face datasets with an "image" and a "label" column; one class list for the run
    columns = dict(image_column=args.image_column, label_column=args.label_column)
    eval_source = args.eval_data or args.data
    if args.eval_split is None:  # the run records the split it chose
        args = replace(args, eval_split=choose_eval_split(eval_source, split_option='--eval-split', **columns))
    where = f'training split {args.data}:{args.train_split}'
    train_ds = load_image_dataset(args.data, split=args.train_split, streaming=args.streaming,
                                  split_option='--train-split', **columns)
    names = class_names(train_ds)
    if args.streaming:  # never read a whole column of a stream: its ClassLabel names are the classes
        if names is None:
            check_labels(None, None, where)
        num_classes = check_num_classes(len(names), where)
        train_fingerprint = stream_fingerprint(train_ds, args.data, args.train_split)
    else:
        train_labels = list(train_ds['label']) if 'label' in train_ds.column_names else None
        num_classes = check_labels(train_labels, names, where)
        train_fingerprint = dataset_fingerprint(train_labels, names)
    names = list(names) if names else [str(c) for c in range(num_classes)]
    where = f'evaluation split {eval_source}:{args.eval_split}'
    eval_ds = load_image_dataset(eval_source, split=args.eval_split, class_names=names, streaming=args.streaming,
                                 split_option='--eval-split', **columns)
    if args.streaming:
        if class_names(eval_ds) is None:
            check_labels(None, None, where)
        eval_fingerprint = stream_fingerprint(eval_ds, eval_source, args.eval_split)
    else:
        eval_labels = list(eval_ds['label']) if 'label' in eval_ds.column_names else None
        check_labels(eval_labels, names, where)
        eval_fingerprint = dataset_fingerprint(eval_labels, names)

    # model, and the data config (input size, normalisation) its transforms follow
    model = create_train_model(args, num_classes, accelerator)
    data_config = resolve_data_config(
        dict(input_size=(3, args.img_size, args.img_size) if args.img_size else None, crop_pct=args.crop_pct),
        model=model)
    export_pretrained_cfg(model, data_config, num_classes)
    train_data_config = {k: data_config[k] for k in DATA_CONFIG_KEYS if k in data_config}
    train_loader = make_loader(
        train_ds, train_data_config, batch_size=args.batch_size, num_workers=args.workers, train=True,
        drop_last=bool(args.mixup or args.cutmix),  # mixup pairs need even batches
        seed=args.seed, no_aug=args.no_aug, scale=tuple(args.scale), hflip=args.hflip,
        color_jitter=args.color_jitter)
    eval_loader = make_loader(eval_ds, data_config, batch_size=args.batch_size, num_workers=args.workers)

    loss_fn = U1Loss(hue_weight=args.hue_weight, smoothing=args.smoothing, hue_input=args.hue_input,
                     spatial=args.spatial)
    mixup_fn = None
    if args.mixup or args.cutmix:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                         num_classes=num_classes)

    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay)
    # a stream has no length: its schedule steps per epoch (timm's default), which needs none
    updates_per_epoch = 0 if args.streaming else (len(train_loader) + args.grad_accum - 1) // args.grad_accum
    # the schedule of this run's --epochs: a resumed run with a larger --epochs continues on the longer one
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs, updates_per_epoch=updates_per_epoch)

    identity = dict(
        model=model.pretrained_cfg['architecture'], num_classes=num_classes, classes=names,
        train_data=train_fingerprint, eval_data=eval_fingerprint, input_size=list(data_config['input_size']),
        mixed_precision=accelerator.mixed_precision, num_processes=accelerator.num_processes,
        settings=args.run_settings())
    metrics_log = MetricsLog(out / METRICS_NAME)
    start_epoch, step = 0, 0
    if args.resume and checkpoint_path.exists():
        # last in setup: the RNG streams continue from the end of the checkpointed epoch
        state = load_checkpoint(checkpoint_path, model, optimizer, identity=identity,
                                process_index=accelerator.process_index)
        start_epoch, step = state['epoch'], state['step']
        if start_epoch > args.epochs:
            raise ResumeMismatchError(
                f'{checkpoint_path} has {start_epoch} finished epochs; --epochs {args.epochs} would end the run '
                f'before its checkpoint. Pass --epochs {start_epoch} to finish it as it is, or a larger --epochs '
                f'to extend it.')
        if start_epoch:
            scheduler.step(start_epoch)  # the lr of the next epoch, as timm's train.py resumes
        if accelerator.is_main_process:
            metrics_log.truncate(start_epoch)  # drop records of an epoch that did not reach its checkpoint
        accelerator.print(f'Resumed from {checkpoint_path} after epoch {start_epoch} ({step} updates).')
    else:
        if args.resume:
            accelerator.print(f'--resume: no {checkpoint_path} yet, starting from epoch 0.')
        # every process its own augmentation stream, derived from the run seed (process 0 keeps the
        # stream of a one-process run, so a run's results do not depend on being launched)
        if accelerator.process_index:
            set_seed(args.seed + accelerator.process_index)
        if accelerator.is_main_process and metrics_log.path.exists():
            metrics_log.truncate(0)  # records of a run stopped before its first checkpoint

    net = ForwardU1(model) if args.spatial else model
    net, optimizer, train_loader, eval_loader = accelerator.prepare(net, optimizer, train_loader, eval_loader)
    show = accelerator.is_local_main_process and not args.no_progress

    record: Dict[str, Any] = {}
    correct: Optional[List[bool]] = None  # per eval image, of the last evaluation
    for epoch in range(start_epoch, args.epochs):
        net.train()
        train_loader.set_epoch(epoch)
        started = time.perf_counter()
        # sums over this process's images of loss, ce and hue, and the count; kept on the device
        # so that logging does not synchronise every step
        running = torch.zeros(4, device=accelerator.device)
        lr_sum, updates = 0.0, 0
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
                lr_sum += optimizer.param_groups[0]['lr']  # the lr this update used
                updates += 1
                step += 1
                scheduler.step_update(num_updates=step)
            n = len(images)
            running += torch.stack([parts.total.detach() * n, parts.ce.detach() * n, parts.hue.detach() * n,
                                    running.new_tensor(n)])
        lr_used = lr_sum / updates if updates else optimizer.param_groups[0]['lr']
        scheduler.step(epoch + 1)
        train_time = time.perf_counter() - started

        net.eval()
        metrics = evaluate(net, eval_loader, loss_fn, gather=accelerator.gather_for_metrics, progress=show,
                           per_sample=True)
        correct = metrics.pop('correct')
        running = accelerator.reduce(running, reduction='sum').cpu()
        seen = int(running[3])
        train_loss, train_ce, train_hue = (running[:3] / max(seen, 1)).tolist()
        record = dict(epoch=epoch, step=step, lr=lr_used,
                      train_loss=train_loss, train_ce=train_ce, train_hue=train_hue,
                      train_images_per_s=seen / train_time,
                      **{f'eval_{k}': v for k, v in metrics.items()})
        rngs = gather_object([rng_state()]) if multi else [rng_state()]  # each process's own streams
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            metrics_log.append(record)
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch + 1, step, identity, asdict(args),
                            rng_per_process=rngs)
        accelerator.print(
            f'epoch {epoch + 1}: train loss {train_loss:.4f} | eval top-1 {metrics["top1"]:.2f}% '
            f'top-5 {metrics["top5"]:.2f}% loss {metrics["loss"]:.4f} (ce {metrics["ce"]:.4f}, hue '
            f'{metrics["hue"]:.4f}) hue error {metrics["hue_error_deg"]:.1f} deg')

    # DDP keeps the processes' parameters equal; a difference would make the export one process's guess
    fingerprints = gather_object([parameters_fingerprint(model)]) if multi else [parameters_fingerprint(model)]
    if len(set(fingerprints)) > 1:
        raise RuntimeError(f'The processes ended with different parameters ({fingerprints}); not exporting.')
    if not record:  # resumed a finished run: report its last evaluation
        history = metrics_log.read()
        record = history[-1] if history else {}
        if record:  # its per-image correctness: the checkpoint's weights evaluated again (deterministic)
            net.eval()
            correct = evaluate(net, eval_loader, loss_fn, gather=accelerator.gather_for_metrics,
                               per_sample=True)['correct']
    summary = dict(args=json.loads(json.dumps(asdict(args), default=str)), num_classes=num_classes,
                   classes=names, mixed_precision=accelerator.mixed_precision,
                   num_processes=accelerator.num_processes, parameters_sha256=fingerprints, final=record)
    if correct is not None:
        # '1' where the final model's top-1 is right, one character per eval image in the eval split's order
        summary['final_correct'] = ''.join('1' if c else '0' for c in correct)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(out / 'summary.json', summary)
        if not args.no_export and record:
            final = {k[len('eval_'):]: round(v, 4) for k, v in record.items()
                     if k.startswith('eval_') and k != 'eval_num_samples'}
            curves = plot_learning_curves(metrics_log.read(), out / 'export' / 'learning_curves.png')
            save_pretrained(
                model, out / 'export', label_names=names, metrics=final, dataset=str(args.data),
                eval_split=args.eval_split,
                training=training_description(args, getattr(train_ds, 'num_rows', None)),
                plots=[curves.name] if curves is not None else [])
            accelerator.print(f'Exported to {out / "export"}')
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
