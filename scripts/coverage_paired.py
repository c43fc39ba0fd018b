""" How often the studies' 95% interval covers the true difference, in simulated studies.

    python scripts/coverage_paired.py --studies 2000 --seeds 20 --images 450

Each simulated study has two exchangeable arms (true mean difference 0) with per-image
correctness as the studies record it: images differ in ease and each favours one arm by a random
amount, seeds differ a little in ability, and every (seed, image) outcome is a coin flip on top, so
the seed x image interaction dominates. The script prints the coverage of three intervals: the
studies' (``timm_u1.studies.paired.compare_arms``: unbiased crossed variance, t with
Satterthwaite's degrees of freedom), the crossed bootstrap of seeds and images the studies used
before, and a t interval over seeds only.
"""
import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def simulated_study(rng: np.random.Generator, seeds: int, images: int) -> np.ndarray:
    """Correctness (2, seeds, images) of two exchangeable arms: the true mean difference is 0."""
    ease = rng.normal(1.5, 1.0, images)
    favour = rng.choice([-1.0, 1.0], images) * rng.exponential(0.5, images)
    ability = rng.normal(0, 0.1, (2, seeds, 1))
    logit = ease + ability + np.stack([-favour, favour])[:, None, :] / 2
    return rng.random((2, seeds, images)) < 1 / (1 + np.exp(-logit))


def main(argv=None) -> int:
    from scipy import stats

    from timm_u1.studies.paired import bootstrap_diff, compare_arms

    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--studies', type=int, default=2000)
    p.add_argument('--seeds', type=int, default=20)
    p.add_argument('--images', type=int, default=450)
    p.add_argument('--resamples', type=int, default=1000, help='of the crossed bootstrap')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    covered = {'crossed variance (the studies)': 0, 'crossed bootstrap (before)': 0, 'seeds only': 0}
    widths = []
    for k in range(args.studies):
        a, b = simulated_study(rng, args.seeds, args.images)
        o = compare_arms(a, b, margin=0.5)
        covered['crossed variance (the studies)'] += o['lo'] <= 0 <= o['hi']
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', DeprecationWarning)
            lo, hi = np.percentile(bootstrap_diff(a, b, args.resamples, seed=k), [2.5, 97.5])
        covered['crossed bootstrap (before)'] += lo <= 0 <= hi
        widths.append((hi - lo) / (o['hi'] - o['lo']))
        per_seed = 100 * (a.mean(1) - b.mean(1))
        half = stats.t.ppf(0.975, args.seeds - 1) * per_seed.std(ddof=1) / np.sqrt(args.seeds)
        covered['seeds only'] += abs(per_seed.mean()) <= half
    print(f'{args.studies} simulated studies of {args.seeds} seeds x {args.images} images, true difference 0')
    for name, n in covered.items():
        print(f'{name:32s} 95% interval covers {100 * n / args.studies:5.1f}%')
    print(f'crossed bootstrap / crossed variance interval width: median {np.median(widths):.2f}x')
    return 0


if __name__ == '__main__':
    sys.exit(main())
