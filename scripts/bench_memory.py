""" Query throughput of the instance memory's exact search against sklearn and faiss.

The instance memory (``AnglePrototypeMemory(mode='instance')``) keeps every unit vector in a
``timm_u1.core.knn.ExactIndex`` and lets each query location vote with its k nearest stored vectors; the
search is where its time goes. For each memory size this script measures, on the same random
unit vectors and queries:

* ``timm_u1``        ExactIndex, blocked torch matmul + top-k (the memory's search without faiss)
* ``timm_u1 fp16``   the same with float16 storage (half the memory)
* ``timm_u1 faiss``  ExactIndex with ``faiss_threshold=0``: the memory's faiss path (on by default from 10^5)
* ``timm_u1 fp16 faiss``  the same over float16 storage
* ``sklearn``        ``NearestNeighbors(algorithm="brute")`` (euclidean on unit vectors: same ranking)
* ``faiss``          ``faiss.IndexFlatIP`` (when faiss-cpu is installed)

and prints queries per second and the ratio against sklearn and faiss measured in the same run
(with ``--rounds N``, the medians over N rounds of the ratios taken within each round).
Every (size, method) runs in its own process, so that its peak resident memory (``ru_maxrss``
above what the process held after importing the libraries: vectors, index and search) is its own;
vectors are made in chunks of 10^5 and added chunk by chunk wherever the method allows it (sklearn
needs one array). Not a test: timings depend on the machine.

    python scripts/bench_memory.py --plot bench_memory.png   # 10^4, 10^5, 10^6 vectors, dim 256
    python scripts/bench_memory.py --sizes 10000 --dim 128
    python scripts/bench_memory.py --rounds 3 --methods 'timm_u1 faiss' faiss   # the faiss path, medians
    python scripts/bench_memory.py --sizes 500 --dim 8 --queries 10 --repeats 1 --in-process   # the suite's smallest run
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator

import torch

METHODS = ('timm_u1', 'timm_u1 fp16', 'timm_u1 faiss', 'timm_u1 fp16 faiss', 'sklearn', 'faiss')
CHUNK = 100_000


def unit_vector_chunks(n: int, dim: int, seed: int) -> Iterator[torch.Tensor]:
    """The same n random unit vectors for every method, made CHUNK at a time."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(0, n, CHUNK):
        block = torch.randn(min(CHUNK, n - i), dim, generator=gen)
        yield block / block.norm(dim=1, keepdim=True)


def run_one(method: str, size: int, dim: int, num_queries: int, k: int, repeats: int) -> dict:
    """Time ``repeats`` searches of ``num_queries`` queries (best of them) in this process."""
    # every worker imports the same libraries first, so that their peak memories compare
    import sklearn.neighbors  # noqa: F401
    import timm_u1.core.knn
    if timm_u1.core.knn.faiss_available():
        import faiss  # noqa: F401
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    chunks = unit_vector_chunks(size, dim, seed=0)
    queries = torch.cat(list(unit_vector_chunks(num_queries, dim, seed=1)))
    if method.startswith('timm_u1'):
        from timm_u1.core.knn import ExactIndex
        dtype = torch.float16 if 'fp16' in method else torch.float32
        index = ExactIndex(dim, dtype, faiss_threshold=0 if method.endswith('faiss') else None)
        for chunk in chunks:
            index.add(chunk)
        search = lambda: index.search(queries, k)[1].numpy()  # noqa: E731
    elif method == 'sklearn':
        from sklearn.neighbors import NearestNeighbors
        index = NearestNeighbors(n_neighbors=k, algorithm='brute').fit(torch.cat(list(chunks)).numpy())
        search = lambda: index.kneighbors(queries.numpy(), return_distance=False)  # noqa: E731
    elif method == 'faiss':
        import faiss
        index = faiss.IndexFlatIP(dim)
        for chunk in chunks:
            index.add(chunk.numpy())
        search = lambda: index.search(queries.numpy(), k)[1]  # noqa: E731
    else:
        raise ValueError(method)
    search()  # warm-up: joining small chunks, BLAS / OpenMP thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        neighbours = search()
        times.append(time.perf_counter() - start)
    return {
        'qps': num_queries / min(times),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - rss_before,
        'first_neighbours': neighbours[:, 0].tolist(),
    }


def main() -> int:
    from timm_u1.cli.options import Parser, integer

    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=integer(1), nargs='+', default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--dim', type=integer(1), default=256)
    parser.add_argument('--queries', type=integer(1), default=1000)
    parser.add_argument('--k', type=integer(1), default=10)
    parser.add_argument('--repeats', type=integer(1), default=3)
    parser.add_argument('--rounds', type=integer(1), default=1,
                        help='run every (size, method) process this many times; print medians, and the median '
                             'of the ratios taken within each round (the machine is shared: use 3 or more)')
    parser.add_argument('--methods', nargs='+', choices=METHODS, default=list(METHODS),
                        help='methods to run (the ratios need sklearn and faiss among them)')
    parser.add_argument('--plot', default=None, metavar='PNG', help='queries/s against memory size, per method')
    parser.add_argument('--in-process', action='store_true',
                        help='run every method in this process (quick; the peak-memory column is then not per method)')
    parser.add_argument('--worker', nargs=2, metavar=('METHOD', 'SIZE'), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        method, size = args.worker
        print(json.dumps(run_one(method, int(size), args.dim, args.queries, args.k, args.repeats)))
        return 0

    from timm_u1.core.knn import faiss_available
    methods = [m for m in METHODS if m in args.methods and ('faiss' not in m or faiss_available())]
    print(f'dim {args.dim}, {args.queries} queries, k={args.k}, best of {args.repeats} searches per process, '
          f'median of {args.rounds} rounds, torch {torch.__version__} with {torch.get_num_threads()} threads')
    print(f"| {'vectors':>9} | {'method':<13} | {'queries/s':>10} | {'vs sklearn':>10} | {'vs faiss':>8} "
          f"| {'peak +RSS MB':>12} | same top-1 as {'sklearn' if 'sklearn' in methods else methods[-1]} |")
    print('|' + '|'.join('-' * w for w in (11, 15, 12, 12, 10, 14, 23)) + '|')
    qps: Dict[str, Dict[int, float]] = {m: {} for m in methods}
    for size in args.sizes:
        rounds = []
        for i in range(args.rounds):
            results = {}
            # rotate the order every round, so that a change of machine load hits every method alike
            for method in methods[i % len(methods):] + methods[:i % len(methods)]:
                if args.in_process:
                    results[method] = run_one(method, size, args.dim, args.queries, args.k, args.repeats)
                    continue
                cmd = [sys.executable, __file__, '--worker', method, str(size), '--dim', str(args.dim),
                       '--queries', str(args.queries), '--k', str(args.k), '--repeats', str(args.repeats)]
                results[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            rounds.append(results)
        reference = rounds[0].get('sklearn', rounds[0][methods[-1]])  # the top-1 agreement's reference
        for method in methods:
            # ratios are taken within a round (same load), then the median over rounds
            med = lambda f: statistics.median(f(r) for r in rounds)  # noqa: E731
            r = {'qps': med(lambda r: r[method]['qps']), 'peak_rss_mb': med(lambda r: r[method]['peak_rss_mb'])}
            vs_sklearn = f"{med(lambda r: r[method]['qps'] / r['sklearn']['qps']):.2f}x" if 'sklearn' in methods else 'n/a'
            vs_faiss = f"{med(lambda r: r[method]['qps'] / r['faiss']['qps']):.2f}x" if 'faiss' in methods else 'n/a'
            agree = sum(a == b for a, b in zip(rounds[0][method]['first_neighbours'], reference['first_neighbours']))
            qps[method][size] = r['qps']
            print(f"| {size:>9} | {method:<13} | {r['qps']:>10.0f} |  {vs_sklearn:>9} "
                  f"| {vs_faiss:>8} | {r['peak_rss_mb']:>12.0f} | {agree}/{len(reference['first_neighbours'])} |",
                  flush=True)
    if args.plot:
        print(f'plot: {plot(qps, args, Path(args.plot))}')
    return 0


def plot(qps: Dict[str, Dict[int, float]], args: argparse.Namespace, path: Path) -> Path:
    from timm_u1.figures import new_figure, save_png

    fig = new_figure(figsize=(6, 4), layout='constrained')
    ax = fig.add_subplot()
    for method, points in qps.items():
        sizes = sorted(points)
        ax.plot(sizes, [points[n] for n in sizes], marker='o', label=method)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('stored vectors')
    ax.set_ylabel('queries / s (higher is better)')
    ax.set_title(f'exact top-{args.k} search, dim {args.dim}, {args.queries} queries, median of {args.rounds}, '
                 f'{torch.get_num_threads()} threads', fontsize=9)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)


if __name__ == '__main__':
    sys.exit(main())
