"""Benchmark: the probe's statistics pass against plain ``forward_features`` over the same images.

    python scripts/bench_probe.py [--model tf_efficientnet_lite0.offline_in1k] [--images 128]

Both passes run under ``torch.inference_mode`` on the same preprocessed digits (loaded once, so
data loading is not timed). The statistics pass is what ``timm-u1 analyze`` does per batch:
``ActivationProbe`` on the bottleneck plus ``SombreroStatistics.update`` with labels and 999 label
permutations. The two are timed back to back on every batch for ``--rounds`` rounds, so that load
from other processes hits both alike. Target: ratio <= 1.10.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from timm_u1.cli.options import Parser, integer, non_empty  # noqa: E402
from timm_u1.data import load_image_dataset, make_loader  # noqa: E402
from timm_u1.io.factory import DEFAULT_MODEL, create_model_from_spec  # noqa: E402
from timm_u1.analysis.probe import ActivationProbe  # noqa: E402
from timm_u1.analysis.sombrero import SombreroStatistics  # noqa: E402


def main(argv=None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', type=non_empty, default=DEFAULT_MODEL)
    parser.add_argument('--layer', type=non_empty, default=None)
    parser.add_argument('--images', type=integer(1, 450), default=128)
    parser.add_argument('--batch-size', type=integer(1, 4096), default=32)
    parser.add_argument('--permutations', type=integer(0, 99999), default=999)
    parser.add_argument('--rounds', type=integer(1, 100), default=3)
    args = parser.parse_args(argv)

    model = create_model_from_spec(args.model).eval()
    ds = load_image_dataset('digits', split='test').select(range(args.images))
    batches = list(make_loader(ds, model, batch_size=args.batch_size))
    num_classes = 10

    stats = SombreroStatistics(num_classes, permutations=args.permutations)
    times = {'forward_features': [], 'statistics': [], 'update': []}
    with torch.inference_mode(), ActivationProbe(model, args.layer) as probe:
        model.forward_features(batches[0][0])  # warm-up
        for _ in range(args.rounds):
            for x, y in batches:
                # back to back on the same batch, so that load from other processes hits both alike
                t0 = time.perf_counter()
                model.forward_features(x)
                t1 = time.perf_counter()
                fmap = probe(x)
                t2 = time.perf_counter()
                stats.update(fmap, y)
                t3 = time.perf_counter()
                times['forward_features'].append(t1 - t0)
                times['statistics'].append(t3 - t1)
                times['update'].append(t3 - t2)  # the statistics alone, without the forward pass
        t0 = time.perf_counter()
        stats.result()
        result_time = time.perf_counter() - t0

    shape = tuple(batches[0][0].shape[1:])
    print(f'model {args.model}, layer {args.layer or "bottleneck"}, {args.images} images {shape}, '
          f'batch {args.batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds')
    totals = {name: sum(t) for name, t in times.items()}
    for name in ('forward_features', 'statistics'):
        seconds = totals[name]
        n = args.images * args.rounds
        print(f'  {name:17s} {seconds:7.3f} s  ({n / seconds:6.1f} img/s)')
    ratios = sorted(s / f for s, f in zip(times['statistics'], times['forward_features']))
    share = 100 * totals['update'] / totals['forward_features']
    print(f'  of which update   {totals["update"]:7.3f} s  ({share:.1f} % '
          f'of forward_features: the overhead without timing noise)')
    print(f'  result() once     {result_time:7.3f} s')
    print(f'  ratio statistics / forward_features = {totals["statistics"] / totals["forward_features"]:.3f} '
          f'(median per batch {ratios[len(ratios) // 2]:.3f}; target <= 1.10)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
