"""Benchmark: the probe's statistics pass against plain ``forward_features`` over the same images.

    python scripts/bench_probe.py [--model tf_efficientnet_lite0.offline_in1k] [--images 128]

Both passes run under ``torch.inference_mode`` on the same preprocessed digits (loaded once, so
data loading is not timed). The statistics pass is what ``timm-u1 analyze`` does per batch:
``ActivationProbe`` on the bottleneck plus ``SombreroStatistics.update`` with labels and 999 label
permutations. The passes alternate for ``--rounds`` rounds and the best time of each is kept, so
that load from other processes hits both alike. Target: ratio <= 1.10.
"""
import argparse
import time

import torch

from timm_u1.data import load_image_dataset, make_loader
from timm_u1.lite0 import DEFAULT_MODEL, create_model_from_spec
from timm_u1.probe import ActivationProbe
from timm_u1.stats import SombreroStatistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', default=DEFAULT_MODEL)
    parser.add_argument('--layer', default=None)
    parser.add_argument('--images', type=int, default=128)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--permutations', type=int, default=999)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()

    model = create_model_from_spec(args.model).eval()
    ds = load_image_dataset('digits', split='test').select(range(args.images))
    batches = list(make_loader(ds, model, batch_size=args.batch_size))
    num_classes = 10

    def forward_features() -> None:
        for x, _ in batches:
            model.forward_features(x)

    def statistics_pass() -> None:
        stats = SombreroStatistics(num_classes, permutations=args.permutations)
        with ActivationProbe(model, args.layer) as probe:
            for x, y in batches:
                stats.update(probe(x), y)
        stats.result()

    best = {'forward_features': float('inf'), 'statistics': float('inf')}
    with torch.inference_mode():
        forward_features()  # warm-up
        for _ in range(args.rounds):
            for name, fn in (('forward_features', forward_features), ('statistics', statistics_pass)):
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)

    shape = tuple(batches[0][0].shape[1:])
    print(f'model {args.model}, layer {args.layer or "bottleneck"}, {args.images} images {shape}, '
          f'batch {args.batch_size}, {torch.get_num_threads()} threads, best of {args.rounds}')
    for name, seconds in best.items():
        print(f'  {name:17s} {seconds:7.3f} s  ({args.images / seconds:6.1f} img/s)')
    print(f'  ratio statistics / forward_features = {best["statistics"] / best["forward_features"]:.3f} '
          f'(target <= 1.10)')


if __name__ == '__main__':
    main()
