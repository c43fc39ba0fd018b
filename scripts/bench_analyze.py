"""Benchmark: the cost of ``analyze`` with each control level, as a ratio to a plain forward pass.

    python scripts/bench_analyze.py [--images 450] [--controls none fast]

The plain pass is ``forward_features`` of the model over the same preprocessed digits (the test
split, in analyze's order, data loading included as in analyze); each ``analyze`` run is timed end
to end without plots and without an output folder. Prints seconds and the ratio per level.
"""
import argparse
import time

import torch

from timm_u1.analysis.analyzer import analyze
from timm_u1.data import load_image_dataset, make_loader
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--images', type=int, default=450)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--controls', nargs='+', default=['none', 'fast'], choices=['none', 'fast', 'full'])
    args = parser.parse_args()

    model = create_model_from_spec(args.model).eval()
    ds = load_image_dataset('digits', split='test')
    ds = ds.select(range(min(args.images, len(ds))))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, _ in make_loader(ds, model, batch_size=args.batch_size):
            model.forward_features(x)
    plain = time.perf_counter() - t0
    print(f'model {args.model}, {len(ds)} digits, batch {args.batch_size}, {torch.get_num_threads()} threads')
    print(f'  plain forward_features   {plain:8.1f} s  ratio 1.00')
    for level in args.controls:
        t0 = time.perf_counter()
        analyze(model, ds, batch_size=args.batch_size, progress=False, plots=False, controls=level)
        seconds = time.perf_counter() - t0
        print(f'  analyze --controls {level:5s} {seconds:8.1f} s  ratio {seconds / plain:.2f}')


if __name__ == '__main__':
    main()
