"""The training loop, after Accelerate's ``examples/complete_cv_example.py``: set up, resume, train an
epoch, evaluate, report, checkpoint, and at the end write the summary, the export and the figure.

:func:`train` runs it for a :class:`~timm_u1.training.config.TrainConfig`; under ``accelerate launch``
every process runs it and the main process alone writes the run folder. :func:`train_step` is one
update, usable by any loop that has an ``accelerate.Accelerator`` (one process included).
"""
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..core.loss import U1Loss, U1LossParts
from ..runs import RunFolder
from .checkpoint import Progress, check_output, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig
from .evaluate import evaluate
from .export import export_model, export_pretrained_cfg, parameters_fingerprint
from .inputs import RunData, load_run_data, make_run_loaders, with_eval_split
from .launch import create_accelerator, what_runs
from .metrics import METRICS_NAME, MetricsLog, scalars, tracker_config
from .model import ForwardU1, create_ema, create_train_model

__all__ = ['train', 'train_step']

_logger = logging.getLogger(__name__)

SUMMARY_NAME = 'summary.json'
BEST_NAME = 'best'  # the Hub-layout model of the best eval top-1
EXPORT_NAME = 'export'
CURVES_NAME = 'learning_curves.png'  # in the export, beside its card


@dataclass
class Run:
    """What a run trains with, once prepared by Accelerate."""
    args: TrainConfig
    accelerator: Any
    data: RunData
    model: nn.Module  # the bare twin (what is exported)
    net: nn.Module  # what is trained: the model, or its ForwardU1, as prepared (DDP, compiled)
    ema: Optional[nn.Module]  # timm's ModelEmaV3, or None
    optimizer: Any
    scheduler: Any
    loss_fn: U1Loss
    mixup_fn: Optional[Callable]
    train_loader: Any
    eval_loader: Any
    identity: Dict[str, Any]
    progress: Progress
    metrics_log: MetricsLog
    final_correct: Optional[List[bool]] = None  # per eval image, of the exported model's last evaluation

    @property
    def out(self) -> Path:
        return Path(self.args.output)

    @property
    def exported(self) -> nn.Module:
        """The model the run produces: the EMA of the weights with --model-ema (as timm's recipes use it)."""
        return self.ema.module if self.ema is not None else self.model

    def exported_forward(self) -> nn.Module:
        """What evaluates the exported model: the prepared net, or the EMA (through ForwardU1 if spatial)."""
        if self.ema is None:
            return self.net
        return ForwardU1(self.ema.module) if self.args.spatial else self.ema.module


def train(args: TrainConfig) -> Dict[str, Any]:
    """Run the training that ``args`` describes; returns the run's summary (also ``OUTPUT/summary.json``).

    Under ``accelerate launch`` every process runs this; the main process alone writes the run folder.
    """
    args.check()
    out = Path(args.output)
    run_folder = RunFolder(out, '--output')  # checked before any data is read
    check_output(out, args.resume)
    accelerator = create_accelerator(args)
    accelerator.wait_for_everyone()  # every process has checked the folder before the main one writes to it
    if accelerator.is_main_process:
        run_folder.acquire()  # one run per folder; only the main process writes to it
    try:
        run = set_up(args, accelerator)
        record = None
        for epoch in range(run.progress.epoch, args.epochs):
            train_one_epoch(run, epoch)
            record = end_epoch(run, epoch)
        return finish(run, record)
    finally:
        run_folder.release()


def set_up(args: TrainConfig, accelerator: Any) -> Run:
    """Data, model, loss, optimizer and schedule, prepared; the state of the checkpoint when resuming."""
    from accelerate.utils import set_seed
    from timm.data import Mixup, resolve_data_config
    from timm.optim import create_optimizer_v2

    set_seed(args.seed)  # the same seed on every process up to the model's initialisation: the same model
    args = with_eval_split(args)
    data = load_run_data(args)
    model = create_train_model(args, data.num_classes)
    data_config = resolve_data_config(
        dict(input_size=(3, args.img_size, args.img_size) if args.img_size else None, crop_pct=args.crop_pct),
        model=model)
    export_pretrained_cfg(model, data_config, data.num_classes)
    train_loader, eval_loader = make_run_loaders(args, data, data_config)
    loss_fn = U1Loss(smoothing=args.smoothing, **args.u1_config().to_dict())
    mixup_fn = None
    if args.mixup or args.cutmix:
        mixup_fn = Mixup(mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, label_smoothing=args.smoothing,
                         num_classes=data.num_classes)
    optimizer = create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay)
    identity = dict(
        args.run_settings(), architecture=model.pretrained_cfg['architecture'], num_classes=data.num_classes,
        classes=data.classes, train_data=data.train_fingerprint, eval_data=data.eval_fingerprint,
        input_size=list(data_config['input_size']), **what_runs(accelerator))
    identity.pop('gradient_accumulation_steps')  # grad_accum, checked equal, is among the settings
    if args.streaming:  # workers read a stream's shards in their own order and augment with their own seeds
        identity['workers'] = args.workers

    net = ForwardU1(model) if args.spatial else model
    net, optimizer, train_loader, eval_loader = accelerator.prepare(net, optimizer, train_loader, eval_loader)
    ema = create_ema(args, model, accelerator)
    run = Run(args, accelerator, data, model, net, ema, optimizer, _scheduler(args, optimizer, train_loader),
              loss_fn, mixup_fn, train_loader, eval_loader, identity, Progress(),
              MetricsLog(args.output / METRICS_NAME))
    resume(run)  # last: the RNG streams continue from the checkpoint
    _start_trackers(run)
    return run


def _scheduler(args: TrainConfig, optimizer: Any, train_loader: Any) -> Any:
    from timm.scheduler import create_scheduler_v2

    # a stream has no length: its schedule steps per epoch (timm's default), which needs none
    updates_per_epoch = 0 if args.streaming else -(-len(train_loader) // args.grad_accum)
    # the schedule of this run's --epochs: a resumed run with a larger --epochs continues on the longer one
    scheduler, _ = create_scheduler_v2(optimizer, sched=args.sched, num_epochs=args.epochs,
                                       warmup_epochs=args.warmup_epochs, updates_per_epoch=updates_per_epoch)
    return scheduler


def resume(run: Run) -> None:
    """Continue from the newest checkpoint under --resume; else start with every process's own augmentation."""
    from accelerate.utils import set_seed

    args, accelerator = run.args, run.accelerator
    folder = latest_checkpoint(run.out) if args.resume else None
    if folder is None:
        if args.resume:
            _logger.info('--resume: no checkpoint in %s yet, starting from epoch 0.', run.out)
        # every process its own augmentation stream, derived from the run seed (process 0 keeps the
        # stream of a one-process run, so a run's results do not depend on being launched)
        if accelerator.process_index:
            set_seed(args.seed + accelerator.process_index)
        if accelerator.is_main_process and run.metrics_log.path.exists():
            run.metrics_log.truncate(0)  # records of a run stopped before its first checkpoint
        return
    p = run.progress = load_checkpoint(accelerator, folder, run.identity)
    if p.epoch > args.epochs or (p.epoch == args.epochs and p.batch):
        from ..errors import ResumeMismatchError

        raise ResumeMismatchError(
            f'{folder} is in epoch {p.epoch + 1 if p.batch else p.epoch} of the run; --epochs {args.epochs} would '
            f'end it before its checkpoint. Pass --epochs {p.epoch + (p.batch > 0)} to finish it as it is, or a '
            f'larger --epochs to extend it.')
    run.scheduler.step(p.epoch)  # the lr this point of the run has, as timm's train.py resumes
    run.scheduler.step_update(num_updates=p.step)
    if accelerator.is_main_process:
        run.metrics_log.truncate(p.epoch)  # drop records of an epoch that did not reach its checkpoint
        _logger.info('Resumed from %s: epoch %d, batch %d, %d updates.', folder, p.epoch + 1, p.batch, p.step)


def _start_trackers(run: Run) -> None:
    if not run.args.log_with:
        return
    # a resumed run's TensorBoard drops what the stopped run logged after its checkpoint
    init_kwargs = {'tensorboard': {'purge_step': run.progress.step}} if run.progress.step else {}
    run.accelerator.init_trackers(run.out.resolve().name, config=tracker_config(run.identity), init_kwargs=init_kwargs)


def train_step(
        net: nn.Module, images: torch.Tensor, target: torch.Tensor, loss_fn: U1Loss, optimizer: Any,
        accelerator: Any, clip_grad: Optional[float] = None,
) -> U1LossParts:
    """One forward and backward pass, and an optimizer update once gradient accumulation is complete.

    ``net`` and ``optimizer`` are prepared by ``accelerator``; ``target`` holds class indices or soft
    targets (mixup). Returns the loss parts (total, ce, hue) of the batch.
    """
    with accelerator.accumulate(net):
        parts = loss_fn.parts(net(images), target)
        accelerator.backward(parts.total)
        if accelerator.sync_gradients and clip_grad:
            accelerator.clip_grad_norm_(net.parameters(), clip_grad)
        optimizer.step()
        optimizer.zero_grad()
    return parts


def train_one_epoch(run: Run, epoch: int) -> None:
    """Train ``epoch`` from the batch the run's progress is at, with step checkpoints and tracker records."""
    from tqdm.auto import tqdm

    args, accelerator, p = run.args, run.accelerator, run.progress
    if not p.batch:
        p.start_epoch(epoch)
    run.net.train()
    run.train_loader.set_epoch(epoch)  # the sampler's order
    if hasattr(run.train_loader.dataset, 'set_epoch'):  # the augmentation seeds (Accelerate may not pass it on)
        run.train_loader.dataset.set_epoch(epoch)
    # resumed mid-epoch: the sampler skips the batches the checkpoint covers, without loading them
    loader = accelerator.skip_first_batches(run.train_loader, p.batch) if p.batch else run.train_loader
    total = None if args.streaming else len(run.train_loader)
    # this process's loss, ce and hue sums and image count, on the device: logging does not sync every step
    running = torch.zeros(4, device=accelerator.device)
    started = time.perf_counter()
    show = accelerator.is_local_main_process and not args.no_progress
    for images, target in tqdm(loader, desc=f'epoch {epoch + 1}/{args.epochs}', initial=p.batch, total=total,
                               disable=not show):
        if run.mixup_fn is not None:
            images, target = run.mixup_fn(images, target)
        parts = train_step(run.net, images, target, run.loss_fn, run.optimizer, accelerator, args.clip_grad)
        running += torch.stack([parts.total.detach() * len(images), parts.ce.detach() * len(images),
                                parts.hue.detach() * len(images), running.new_tensor(len(images))])
        p.batch += 1
        if not accelerator.sync_gradients:
            continue
        p.lr_sum += run.optimizer.param_groups[0]['lr']  # the lr this update used
        p.updates += 1
        p.step += 1
        run.scheduler.step_update(num_updates=p.step)
        if run.ema is not None:
            run.ema.update(run.model, step=p.step)
        if args.log_with and p.step % args.log_interval == 0:
            accelerator.log({'step/loss': parts.total.item(), 'step/ce': parts.ce.item(), 'step/hue': parts.hue.item(),
                             'step/lr': run.optimizer.param_groups[0]['lr']}, step=p.step)
        if args.checkpoint_every_steps and p.step % args.checkpoint_every_steps == 0 and p.batch != total:
            started = _fold(run, running, started)
            save_checkpoint(accelerator, run.out, p, run.identity, args.keep_checkpoints)
    _fold(run, running, started)


def _fold(run: Run, running: torch.Tensor, started: float) -> float:
    """Add every process's running sums and the time since ``started`` to the progress; zero ``running``."""
    total = run.accelerator.reduce(running.clone(), reduction='sum').cpu()
    run.progress.sums = [a + b for a, b in zip(run.progress.sums, total.tolist())]
    run.progress.seconds += time.perf_counter() - started
    running.zero_()
    return time.perf_counter()


def end_epoch(run: Run, epoch: int) -> Dict[str, Any]:
    """Evaluate, record, report, keep the best model and checkpoint the epoch; returns its record."""
    args, accelerator, p = run.args, run.accelerator, run.progress
    run.scheduler.step(epoch + 1)
    record = _evaluate_epoch(run, epoch)
    top1 = record['eval_ema_top1' if run.ema is not None else 'eval_top1']
    improved = p.best_top1 is None or top1 > p.best_top1
    if improved:
        p.best_top1, p.best_epoch = top1, epoch
    p.start_epoch(epoch + 1)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        run.metrics_log.append(record)
        if improved and not args.no_export:  # before the checkpoint: a resumed run never misses a best
            export_model(run.exported, run.out / BEST_NAME, args, run.data.classes, _exported_record(run, record),
                         getattr(run.data.train, 'num_rows', None))
    accelerator.log(scalars(record), step=p.step)
    save_checkpoint(accelerator, run.out, p, run.identity, args.keep_checkpoints)
    if accelerator.is_main_process:
        _logger.info('epoch %d: train loss %.4f | eval top-1 %.2f%% top-5 %.2f%% loss %.4f (ce %.4f, hue %.4f) '
                     'hue error %.1f deg', epoch + 1, record['train_loss'], record['eval_top1'], record['eval_top5'],
                     record['eval_loss'], record['eval_ce'], record['eval_hue'], record['eval_hue_error_deg'])
    return record


def _evaluate_epoch(run: Run, epoch: int) -> Dict[str, Any]:
    p = run.progress
    images = max(p.sums[3], 1.0)
    record: Dict[str, Any] = dict(
        epoch=epoch, step=p.step, lr=p.lr_sum / p.updates if p.updates else run.optimizer.param_groups[0]['lr'],
        train_loss=p.sums[0] / images, train_ce=p.sums[1] / images, train_hue=p.sums[2] / images,
        train_images_per_s=p.sums[3] / max(p.seconds, 1e-9))
    metrics = _evaluate(run, run.net)
    run.final_correct = metrics.pop('correct')
    record.update({f'eval_{k}': v for k, v in metrics.items()})
    if run.ema is not None:
        ema_metrics = _evaluate(run, run.exported_forward())
        run.final_correct = ema_metrics.pop('correct')  # of the model the run exports
        record.update({f'eval_ema_{k}': v for k, v in ema_metrics.items()})
    return record


def _evaluate(run: Run, forward: nn.Module) -> Dict[str, Any]:
    forward.eval()
    show = run.accelerator.is_local_main_process and not run.args.no_progress
    return evaluate(forward, run.eval_loader, run.loss_fn, gather=run.accelerator.gather_for_metrics,
                    progress=show, per_sample=True)


def _exported_record(run: Run, record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` with the exported model's metrics as ``eval_*`` (the EMA's with --model-ema)."""
    if run.ema is None:
        return {k: v for k, v in record.items()}
    return {'eval_' + k[len('eval_ema_'):]: v for k, v in record.items() if k.startswith('eval_ema_')}


def finish(run: Run, record: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The summary, then the export, then the figure: a figure that fails costs no result."""
    from accelerate.utils import gather_object

    args, accelerator = run.args, run.accelerator
    # DDP keeps the processes' parameters equal; a difference would make the export one process's guess
    fingerprints = gather_object([parameters_fingerprint(run.model)])
    if len(set(fingerprints)) > 1:
        raise RuntimeError(f'The processes ended with different parameters ({fingerprints}); not exporting.')
    if record is None:  # resumed a finished run: report its last evaluation
        history = run.metrics_log.read()
        record = history[-1] if history else None
        if record is not None:  # its per-image correctness: the checkpoint's weights evaluated again
            run.final_correct = _evaluate(run, run.exported_forward())['correct']
    summary = dict(args=json.loads(json.dumps(asdict(args), default=str)), num_classes=run.data.num_classes,
                   classes=run.data.classes, **what_runs(accelerator), parameters_sha256=fingerprints,
                   exported='ema' if run.ema is not None else 'model', trackers=list(args.log_with),
                   best=dict(top1=run.progress.best_top1, epoch=run.progress.best_epoch), final=record or {})
    if record is not None:
        # '1' where the exported model's top-1 is right, one character per eval image in the eval split's order
        summary['final_correct'] = ''.join('1' if c else '0' for c in run.final_correct)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        from ..files import write_json

        write_json(run.out / SUMMARY_NAME, summary)
        if not args.no_export and record is not None:
            import importlib.util

            from .plots import plot_learning_curves

            # the figure comes after the export, so it never costs a result; the card names it when
            # matplotlib is there to draw it
            curves = [CURVES_NAME] if importlib.util.find_spec('matplotlib') else []
            export = run.out / EXPORT_NAME
            export_model(run.exported, export, args, run.data.classes, _exported_record(run, record),
                         getattr(run.data.train, 'num_rows', None), plots=curves)
            _logger.info('Exported to %s', export)
            plot_learning_curves(run.metrics_log.read(), export / CURVES_NAME)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
