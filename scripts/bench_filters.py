"""Speed of the first-layer filter fits (timm_u1.early.fits) in filters per second, on a 64-filter 7x7 bank.

Two banks: planted noisy Gabors (SNR 10) and Gaussian random filters (what the controls look like). For
each, the Gabor fit with ``--starts`` starts, the LoG fit, the DoG fit and the whole per-filter analysis
(``fit_bank``: luminance, orientation index, Gabor, LoG, DoG, radial symmetry, class). The baseline,
measured in the same run on the same filters and starts, is the plain multi-start fit: scipy's
``least_squares`` with its finite-difference Jacobian, every start run to convergence at scipy's default
tolerances. The ratio (ours / baseline, > 1 = faster) comes with both median Gabor errors, so a speed-up
cannot hide worse fits. The two alternate filter by filter, so a change of load hits both alike, and
times are this process's CPU seconds (``time.process_time``; every fit is single-threaded), which other
jobs on the cores inflate far less than wall time.

    python scripts/bench_filters.py                          # 64 filters, 8 starts, 3 rounds
    python scripts/bench_filters.py --filters 1 --rounds 1   # smallest setting (the test suite runs it)
"""
import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault('OMP_NUM_THREADS', '1')

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from timm_u1.early import fits  # noqa: E402
from timm_u1.early.bank import fit_bank  # noqa: E402


def planted_gabors(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    x, y = fits.pixel_grid((k, k))
    out = []
    for _ in range(n):
        f = fits.gabor_model([1, rng.uniform(0, math.pi), rng.uniform(0.15, 0.3), rng.uniform(1.4, 2.2),
                              rng.uniform(1.2, 2.2), rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5),
                              rng.uniform(-math.pi, math.pi), 0], x, y)
        out.append(f + rng.normal(0, f.std() / 10, f.shape))
    return np.stack(out)


def baseline_gabor(f: np.ndarray, starts: int) -> float:
    """The plain multi-start fit: same model, bounds and starts; 2-point Jacobian, every start to convergence."""
    from scipy.optimize import least_squares

    k = min(f.shape)
    x, y = fits.pixel_grid(f.shape)
    g, _, _ = fits._normalised(f)
    inf = np.inf
    lo = np.array([-inf, -inf, 0.0, 0.5, 0.5, -k / 2, -k / 2, -inf, -inf])
    hi = np.array([inf, inf, 0.5, float(k), float(k), k / 2, k / 2, inf, inf])
    best = None
    for p0 in fits._gabor_starts(g, x, y, starts):
        res = least_squares(lambda p: fits.gabor_model(p, x, y).ravel() - g.ravel(), np.clip(p0, lo + 1e-9, hi - 1e-9),
                            bounds=(lo, hi), method='trf', x_scale='jac', max_nfev=2000)
        if best is None or res.cost < best.cost:
            best = res
    return fits.relative_error(g, fits.gabor_model(best.x, x, y))


def cpu_rate(fn, bank: np.ndarray, rounds: int):
    """(median over rounds of filters per CPU second, the last round's results)."""
    rates, results = [], None
    for _ in range(rounds):
        start = time.process_time()
        results = fn(bank)
        rates.append(len(bank) / max(time.process_time() - start, 1e-9))
    return statistics.median(rates), results


def interleaved(bank: np.ndarray, starts: int, rounds: int):
    """Baseline and ours on each filter in turn: (baseline filters/s, ours filters/s, their errors)."""
    spent = {'baseline': 0.0, 'ours': 0.0}
    errors = {'baseline': [], 'ours': []}
    for _ in range(rounds):
        errors = {'baseline': [], 'ours': []}
        for f in bank:
            start = time.process_time()
            errors['baseline'].append(baseline_gabor(f, starts))
            middle = time.process_time()
            errors['ours'].append(fits.fit_gabor(f, starts=starts).error)
            spent['baseline'] += middle - start
            spent['ours'] += time.process_time() - middle
    n = len(bank) * rounds
    return n / spent['baseline'], n / spent['ours'], errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--filters', type=int, default=64)
    parser.add_argument('--kernel', type=int, default=7)
    parser.add_argument('--starts', type=int, default=fits.GABOR_STARTS)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    if args.filters < 1 or args.rounds < 1 or args.starts < 1 or args.kernel < fits.MIN_GABOR_KERNEL:
        parser.error(f'--filters, --rounds and --starts must be >= 1 and --kernel >= {fits.MIN_GABOR_KERNEL}')
    rng = np.random.default_rng(args.seed)
    banks = {'planted Gabor': planted_gabors(args.filters, args.kernel, rng),
             'random': rng.normal(size=(args.filters, args.kernel, args.kernel))}
    print(f'{args.filters} filters of {args.kernel}x{args.kernel}, Gabor starts {args.starts}, {args.rounds} rounds, '
          f'filters per CPU second of this process, OMP_NUM_THREADS={os.environ["OMP_NUM_THREADS"]}')
    print(f'{"bank":<14} {"what":<34} {"filters/s":>10} {"bank CPU s":>11} {"median e_G":>11}')

    def row(bank_name: str, what: str, rate: float, n: int, error: str = '') -> None:
        print(f'{bank_name:<14} {what:<34} {rate:>10.1f} {n / rate:>11.2f} {error:>11}')

    wall = time.perf_counter()
    for name, bank in banks.items():
        base_rate, rate, errors = interleaved(bank, args.starts, args.rounds)
        row(name, 'baseline Gabor (plain multi-start)', base_rate, len(bank), f'{statistics.median(errors["baseline"]):.4f}')
        row(name, 'Gabor fit', rate, len(bank), f'{statistics.median(errors["ours"]):.4f}')
        for label, fn in (('LoG fit', fits.fit_log), ('DoG fit', fits.fit_dog)):
            row(name, label, cpu_rate(lambda b: [fn(f) for f in b], bank, args.rounds)[0], len(bank))
        whole, _ = cpu_rate(lambda b: fit_bank(b, starts=args.starts, progress=False), bank, args.rounds)
        row(name, 'fit_bank (every fit and index)', whole, len(bank))
        print(f'{name:<14} ratio Gabor fit / baseline: {rate / base_rate:.2f}x filters/s')
    print(f'wall time {time.perf_counter() - wall:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
