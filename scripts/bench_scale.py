"""Benchmark: images/s of ``analyze`` and of a memory build against a plain timm inference loop.

    python scripts/bench_scale.py [--model tf_efficientnet_lite0.offline_in1k] [--sizes 64 128 256]

For each size N, the first N digits of the train split are streamed three ways, each timed end to
end with data loading (decode, resize, normalise, batch) included, on one process:

* plain: ``model.forward_features`` over ``timm_u1.data.make_loader`` batches (what any timm
  inference loop does; the reference, ratio 1.00);
* analyze: :func:`timm_u1.analysis.analyzer.analyze` with its default statistics (999 label permutations),
  no controls, no plots, no output folder;
* memory: :meth:`timm_u1.memory.AnglePrototypeMemory.build` (prototype mode, 8 angle bins).

Prints images/s and the ratio to plain per size (target >= 0.9x), so the growth of the run time
with N can be read off (linear: constant images/s). Multi-process runs are not timed here: on a
machine with P free cores, N processes of ``accelerate launch`` each stream N-th of the images.
"""
import argparse
import time

import torch

from timm_u1.analysis.analyzer import analyze
from timm_u1.data import class_names, load_image_dataset, make_loader
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec
from timm_u1.memory import AnglePrototypeMemory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--sizes', type=int, nargs='+', default=[64, 128, 256])
    parser.add_argument('--batch-size', type=int, default=32)
    args = parser.parse_args()

    model = create_model_from_spec(args.model).eval()
    full = load_image_dataset('digits', split='train')
    names = class_names(full)
    print(f'model {args.model}, digits train, batch {args.batch_size}, {torch.get_num_threads()} threads, '
          f'one process')
    print("| images | plain img/s | analyze img/s (ratio) | memory build img/s (ratio) |\n|---|---|---|---|")
    for n in args.sizes:
        ds = full.select(range(min(n, len(full))))
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _ in make_loader(ds, model, batch_size=args.batch_size):
                model.forward_features(x)
        plain = len(ds) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        analyze(model, ds, batch_size=args.batch_size, progress=False, plots=False, controls='none')
        analysed = len(ds) / (time.perf_counter() - t0)

        t0 = time.perf_counter()
        memory = AnglePrototypeMemory.for_model(model, names, backbone=args.model)
        memory.build(model, ds, batch_size=args.batch_size, progress=False)
        built = len(ds) / (time.perf_counter() - t0)
        print(f'| {len(ds)} | {plain:.1f} | {analysed:.1f} ({analysed / plain:.2f}x) | '
              f'{built:.1f} ({built / plain:.2f}x) |', flush=True)


if __name__ == '__main__':
    main()
