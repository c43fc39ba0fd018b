""" Query throughput of the instance memory's exact search against sklearn and faiss.

The instance memory (``AnglePrototypeMemory(mode='instance')``) keeps every unit vector in a
``timm_u1.knn.ExactIndex`` and lets each query location vote with its k nearest stored vectors; the
search is where its time goes. For each memory size this script measures, on the same random
unit vectors and queries:

* ``timm_u1``       ExactIndex, blocked torch matmul + top-k (faiss disabled)
* ``timm_u1 fp16``  the same with float16 storage (half the memory)
* ``timm_u1 auto``  ExactIndex as the memory uses it: faiss above its size threshold when installed
* ``sklearn``       ``NearestNeighbors(algorithm="brute")`` (euclidean on unit vectors: same ranking)
* ``faiss``         ``faiss.IndexFlatIP`` (when faiss-cpu is installed)

and prints queries per second and the ratio against sklearn and faiss measured in the same run.
Every (size, method) runs in its own process, so that its peak resident memory (``ru_maxrss``,
which includes the vectors themselves) is its own. Not a test: timings depend on the machine.

    python scripts/bench_memory.py                      # 10^4, 10^5, 10^6 vectors, dim 256
    python scripts/bench_memory.py --sizes 10000 --dim 128
"""
import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ('timm_u1', 'timm_u1 fp16', 'timm_u1 auto', 'sklearn', 'faiss')


def unit_vectors(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, dim)
    for i in range(0, n, 100_000):  # in chunks, so that making them needs no second full copy
        block = torch.randn(min(100_000, n - i), dim, generator=gen)
        out[i:i + block.shape[0]] = block / block.norm(dim=1, keepdim=True)
    return out


def run_one(method: str, size: int, dim: int, num_queries: int, k: int, repeats: int) -> dict:
    """Time ``repeats`` searches of ``num_queries`` queries (best of them) in this process."""
    vectors = unit_vectors(size, dim, seed=0)
    queries = unit_vectors(num_queries, dim, seed=1)
    if method.startswith('timm_u1'):
        from timm_u1.knn import DEFAULT_FAISS_THRESHOLD, ExactIndex
        dtype = torch.float16 if method.endswith('fp16') else torch.float32
        index = ExactIndex(dim, dtype, faiss_threshold=DEFAULT_FAISS_THRESHOLD if method.endswith('auto') else None)
        index.add(vectors)
        del vectors
        search = lambda: index.search(queries, k)[1].numpy()  # noqa: E731
    elif method == 'sklearn':
        from sklearn.neighbors import NearestNeighbors
        index = NearestNeighbors(n_neighbors=k, algorithm='brute').fit(vectors.numpy())
        search = lambda: index.kneighbors(queries.numpy(), return_distance=False)  # noqa: E731
    elif method == 'faiss':
        import faiss
        index = faiss.IndexFlatIP(dim)
        index.add(vectors.numpy())
        del vectors
        search = lambda: index.search(queries.numpy(), k)[1]  # noqa: E731
    else:
        raise ValueError(method)
    search()  # warm-up: faiss index creation in 'auto', BLAS thread start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        neighbours = search()
        times.append(time.perf_counter() - start)
    return {
        'qps': num_queries / min(times),
        'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        'first_neighbours': neighbours[:, 0].tolist(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--dim', type=int, default=256)
    parser.add_argument('--queries', type=int, default=1000)
    parser.add_argument('--k', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--worker', nargs=2, metavar=('METHOD', 'SIZE'), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        method, size = args.worker
        print(json.dumps(run_one(method, int(size), args.dim, args.queries, args.k, args.repeats)))
        return 0

    from timm_u1.knn import faiss_available
    methods = [m for m in METHODS if m != 'faiss' or faiss_available()]
    print(f'dim {args.dim}, {args.queries} queries, k={args.k}, best of {args.repeats}, '
          f'torch {torch.__version__} with {torch.get_num_threads()} threads')
    print(f"| {'vectors':>9} | {'method':<12} | {'queries/s':>10} | {'vs sklearn':>10} | {'vs faiss':>8} "
          f"| {'peak RSS MB':>11} | same top-1 as sklearn |")
    print('|' + '|'.join('-' * w for w in (11, 14, 12, 12, 10, 13, 23)) + '|')
    for size in args.sizes:
        results = {}
        for method in methods:
            cmd = [sys.executable, __file__, '--worker', method, str(size), '--dim', str(args.dim),
                   '--queries', str(args.queries), '--k', str(args.k), '--repeats', str(args.repeats)]
            results[method] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        reference = results['sklearn']
        for method in methods:
            r = results[method]
            vs_faiss = f"{r['qps'] / results['faiss']['qps']:.2f}x" if 'faiss' in results else 'n/a'
            agree = sum(a == b for a, b in zip(r['first_neighbours'], reference['first_neighbours']))
            print(f"| {size:>9} | {method:<12} | {r['qps']:>10.0f} | {r['qps'] / reference['qps']:>9.2f}x "
                  f"| {vs_faiss:>8} | {r['peak_rss_mb']:>11.0f} | {agree}/{len(reference['first_neighbours'])} |",
                  flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
