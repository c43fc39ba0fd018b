""" Train or fine-tune a timm / u1_ model with cross-entropy or CE + U(1) hue loss, with Accelerate.

    accelerate launch scripts/train.py --data digits --model resnet10t --epochs 10 --output runs/digits
    python scripts/train.py --data path/to/imagefolder --model u1_resnet18.a1_in1k --pretrained --loss ce

One process or many: multi-GPU and multi-node come from ``accelerate config`` / ``accelerate launch``.
Each epoch ends with an evaluation (top-1, top-5, loss parts, mean hue error) appended to
``OUTPUT/metrics.jsonl`` and an atomic ``OUTPUT/checkpoint.pt``; ``--resume`` continues from it
exactly (same model, data order, augmentation and RNG streams). The final model is exported in the
Hub layout to ``OUTPUT/export`` (loadable with ``timm.create_model("local-dir:OUTPUT/export")``).
"""
import argparse
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

import timm
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from timm.data import Mixup, create_transform, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

import timm_u1
from timm_u1 import U1Loss, U1Output
from timm_u1._files import atomic_path, write_json
from timm_u1.data import TransformDataset, class_names, load_image_dataset, make_loader
from timm_u1.lite0 import create_model_from_spec
from timm_u1.training import (
    CHECKPOINT_NAME, METRICS_NAME, MetricsLog, check_labels, dataset_fingerprint, evaluate,
    load_checkpoint, save_checkpoint,
)
from timm_u1.u1 import U1_PREFIX, is_u1_model


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    data = p.add_argument_group('data')
    data.add_argument('--data', default='digits',
                      help='"digits", a Hub dataset name, an image folder or a save_to_disk folder')
    data.add_argument('--train-split', default='train')
    data.add_argument('--eval-split', default='test')
    data.add_argument('--img-size', type=int, default=None, help="input size (default: the model's)")
    data.add_argument('--crop-pct', type=float, default=None, help="eval center-crop fraction (default: the model's)")
    data.add_argument('--batch-size', type=int, default=64, help='per process')
    data.add_argument('--workers', type=int, default=0)
    aug = p.add_argument_group("augmentation (timm's create_transform)")
    aug.add_argument('--no-aug', action='store_true', help='train with the eval transform')
    aug.add_argument('--scale', type=float, nargs=2, default=(0.08, 1.0), help='random-resized-crop area range')
    aug.add_argument('--hflip', type=float, default=0.5, help='horizontal flip probability')
    aug.add_argument('--color-jitter', type=float, default=0.4)

    model = p.add_argument_group('model')
    model.add_argument('--model', default='resnet10t', help='timm or u1_ name, hf-hub:, local-dir: or a folder')
    model.add_argument('--pretrained', action='store_true', help='start from pretrained weights (fine-tuning)')
    model.add_argument('--drop-rate', type=float, default=0.0)

    loss = p.add_argument_group('loss')
    loss.add_argument('--loss', choices=('u1', 'ce'), default='u1', help='ce = plain cross-entropy (hue weight 0)')
    loss.add_argument('--hue-weight', type=float, default=1.0, help='lambda of the hue term')
    loss.add_argument('--hue-input', choices=('logits', 'probs'), default='logits')
    loss.add_argument('--spatial', action='store_true', help='spatial (CAM-style, energy-weighted) hue loss')
    loss.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')
    loss.add_argument('--mixup', type=float, default=0.0, help='mixup alpha (0 = off)')
    loss.add_argument('--cutmix', type=float, default=0.0, help='cutmix alpha (0 = off)')

    opt = p.add_argument_group('optimisation')
    opt.add_argument('--epochs', type=int, default=10)
    opt.add_argument('--opt', default='adamw')
    opt.add_argument('--lr', type=float, default=1e-3)
    opt.add_argument('--weight-decay', type=float, default=0.05)
    opt.add_argument('--sched', default='cosine')
    opt.add_argument('--warmup-epochs', type=int, default=0)
    opt.add_argument('--clip-grad', type=float, default=None, help='max gradient norm')
    opt.add_argument('--grad-accum', type=int, default=1, help='gradient accumulation steps')
    opt.add_argument('--mixed-precision', choices=('auto', 'no', 'fp16', 'bf16'), default='auto',
                     help='auto: bf16 or fp16 on a GPU that has it, full precision on CPU')

    run = p.add_argument_group('run')
    run.add_argument('--output', type=Path, required=True, help='run folder (checkpoint, metrics, export)')
    run.add_argument('--seed', type=int, default=0)
    run.add_argument('--resume', action='store_true', help=f'continue from OUTPUT/{CHECKPOINT_NAME}')
    run.add_argument('--no-export', action='store_true', help='skip the Hub-layout export at the end')
    run.add_argument('--no-progress', action='store_true', help='no progress bars')
    args = p.parse_args(argv)
    if args.loss == 'ce':
        args.hue_weight = 0.0
    if args.spatial and not args.hue_weight:
        p.error('--spatial is a form of the hue loss; it needs --loss u1 and --hue-weight > 0.')
    if (args.mixup or args.cutmix) and args.batch_size % 2:
        p.error(f'mixup/cutmix pair images within a batch; --batch-size must be even, got {args.batch_size}.')
    return args


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


def create_model(args: argparse.Namespace, num_classes: int, accelerator: Accelerator) -> nn.Module:
    """The model to train, as a u1_ twin (same weights as the timm model) with a head of ``num_classes``."""
    spec = args.model
    if not spec.startswith(U1_PREFIX) and timm.is_model(spec):
        spec = U1_PREFIX + spec  # the twin is the same network, plus forward_u1 and its U(1) settings
    kwargs = dict(drop_rate=args.drop_rate) if args.drop_rate else {}
    if not args.pretrained:
        kwargs['num_classes'] = num_classes
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


def training_description(args: argparse.Namespace, num_train: int) -> str:
    """One paragraph for the model card."""
    loss = ('cross-entropy' if not args.hue_weight else
            f'cross-entropy + {args.hue_weight} x U(1) hue loss on the {args.hue_input}'
            + (' (spatial, energy-weighted)' if args.spatial else ''))
    return (
        f'Trained with scripts/train.py for {args.epochs} epochs on {num_train} images of {args.data} '
        f'from {"pretrained weights" if args.pretrained else "scratch"} ({args.model}), {loss}, '
        f'label smoothing {args.smoothing}, mixup {args.mixup}, cutmix {args.cutmix}, {args.opt} '
        f'lr {args.lr} weight decay {args.weight_decay} with a {args.sched} schedule, batch size '
        f'{args.batch_size} x {args.grad_accum} accumulation steps, seed {args.seed}.')


def plot_learning_curves(records: List[Dict[str, Any]], path: Path) -> None:
    """Eval top-1 and the train/eval loss per epoch, as a PNG for the model card."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    epochs = [r['epoch'] + 1 for r in records]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(8, 3), dpi=110)
    acc.plot(epochs, [r['eval_top1'] for r in records], marker='o', label='top-1')
    acc.plot(epochs, [r['eval_top5'] for r in records], marker='o', label='top-5')
    acc.set(xlabel='epoch', ylabel='eval accuracy (%)')
    loss.plot(epochs, [r['train_loss'] for r in records], marker='o', label='train')
    loss.plot(epochs, [r['eval_loss'] for r in records], marker='o', label='eval')
    loss.set(xlabel='epoch', ylabel='loss (CE + lambda x hue)')
    for ax in (acc, loss):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png')
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.grad_accum,
        # a sampler seeded by (seed, epoch) gives every process, and a resumed run, the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    out = args.output
    checkpoint_path = out / CHECKPOINT_NAME
    if not args.resume and checkpoint_path.exists():
        raise SystemExit(f'{checkpoint_path} exists: pass --resume to continue that run, or choose a new --output.')

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
    model = create_model(args, num_classes, accelerator)
    data_config = resolve_data_config(
        dict(input_size=(3, args.img_size, args.img_size) if args.img_size else None, crop_pct=args.crop_pct),
        model=model)
    model.pretrained_cfg.update(input_size=data_config['input_size'], crop_pct=data_config['crop_pct'],
                                mean=data_config['mean'], std=data_config['std'],
                                interpolation=data_config['interpolation'], num_classes=num_classes)
    model.pretrained_cfg.pop('test_input_size', None)  # the trained size is the one to test at
    train_transform = create_transform(
        **{k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct')},
        is_training=True, no_aug=args.no_aug, scale=tuple(args.scale), hflip=args.hflip,
        color_jitter=args.color_jitter)
    train_loader = DataLoader(TransformDataset(train_ds, train_transform), batch_size=args.batch_size,
                              shuffle=True, num_workers=args.workers,
                              drop_last=bool(args.mixup or args.cutmix))  # mixup pairs need even batches
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
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch + 1, step, identity, vars(args))
        accelerator.print(
            f'epoch {epoch + 1}: train loss {train_loss:.4f} | eval top-1 {metrics["top1"]:.2f}% '
            f'top-5 {metrics["top5"]:.2f}% loss {metrics["loss"]:.4f} (ce {metrics["ce"]:.4f}, hue '
            f'{metrics["hue"]:.4f}) hue error {metrics["hue_error_deg"]:.1f} deg')

    if not record:  # resumed a finished run: report its last evaluation
        history = metrics_log.read()
        record = history[-1] if history else {}
    summary = dict(args=json.loads(json.dumps(vars(args), default=str)), num_classes=num_classes,
                   classes=names, final=record)
    if accelerator.is_main_process:
        write_json(out / 'summary.json', summary)
        if not args.no_export and record:
            final = {k[len('eval_'):]: round(v, 4) for k, v in record.items()
                     if k.startswith('eval_') and k != 'eval_num_samples'}
            plot_learning_curves(metrics_log.read(), out / 'export' / 'learning_curves.png')
            timm_u1.save_pretrained(
                model, out / 'export', label_names=names, metrics=final, dataset=str(args.data),
                training=training_description(args, len(train_ds)), plots=['learning_curves.png'])
            accelerator.print(f'Exported to {out / "export"}')
    accelerator.end_training()
    return summary


if __name__ == '__main__':
    main()
