#!/usr/bin/env python3
"""Training-step cost of the U(1) loss: ``u1_resnet18`` + ``U1Loss`` against ``resnet18`` + plain
cross-entropy, on the same batch, measured in one run.

Both models start from the same weights; the two steps are interleaved so that machine load hits
both alike. A second copy of the base model with cross-entropy runs as a control: its ratio to the
first is the noise floor of the measurement. Load only ever adds time, so the ratio of the fastest steps is the headline figure
(target <= 1.02); the ratio of medians is printed beside it.

    python scripts/bench_loss.py --batch-size 32 --img-size 96 --steps 30
"""
import argparse
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import timm_u1


def make_step(model, loss_fn, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return time.perf_counter() - start
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', default='resnet18')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--img-size', type=int, default=96)
    parser.add_argument('--num-classes', type=int, default=100)
    parser.add_argument('--steps', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--hue-weight', type=float, default=1.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    base = timm.create_model(args.model, num_classes=args.num_classes).train()
    twin = timm.create_model('u1_' + args.model, num_classes=args.num_classes).train()
    twin.load_state_dict(base.state_dict())
    control = timm.create_model(args.model, num_classes=args.num_classes).train()
    control.load_state_dict(base.state_dict())
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    y = torch.randint(0, args.num_classes, (args.batch_size,))

    steps = {
        'ce': make_step(base, F.cross_entropy, x, y),
        'u1': make_step(twin, timm_u1.U1Loss(hue_weight=args.hue_weight), x, y),
        'control': make_step(control, F.cross_entropy, x, y),
    }
    times = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        order = list(steps)[i % len(steps):] + list(steps)[:i % len(steps)]  # rotate who goes first
        for name in order:
            t = steps[name]()
            if i >= args.warmup:
                times[name].append(t)

    print(f'torch {torch.__version__}, timm {timm.__version__}, threads {torch.get_num_threads()}')
    print(f'{args.model} batch {args.batch_size} x {args.img_size}px, {args.num_classes} classes, {args.steps} steps')
    labels = {'ce': f'{args.model} + cross-entropy', 'u1': f'u1_{args.model} + U1Loss',
              'control': f'{args.model} + CE (control)'}
    for name, label in labels.items():
        print(f'{label:28s} fastest step {min(times[name]) * 1000:8.1f} ms, '
              f'median {statistics.median(times[name]) * 1000:8.1f} ms')
    print(f"ratio u1 / ce: fastest {min(times['u1']) / min(times['ce']):.3f} (target <= 1.02), "
          f"median {statistics.median(times['u1']) / statistics.median(times['ce']):.3f}")
    print(f"noise floor, control / ce: fastest {min(times['control']) / min(times['ce']):.3f}, "
          f"median {statistics.median(times['control']) / statistics.median(times['ce']):.3f}")


if __name__ == '__main__':
    main()
