"""timm_u1.studies.paired: Holm's correction, the paired bootstrap and the verdicts they give."""
import numpy as np
import pytest

from timm_u1.studies.paired import bootstrap_diff, correct_string, holm, summarize_task, too_small_caution


def test_holm_and_the_paired_bootstrap():
    p = [0.01, 0.04, 0.03, 0.5]
    adj = holm(p)
    assert all(a >= b for a, b in zip(adj, p)) and max(adj) <= 1
    assert adj[0] == pytest.approx(4 * 0.01) and holm([0.2]) == [0.2]
    rng = np.random.default_rng(0)
    a = rng.random((20, 300)) < 0.8
    boot = bootstrap_diff(a, a, 100)
    assert np.all(boot == 0)
    better = bootstrap_diff(np.ones_like(a), a, 200)
    assert better.min() > 0 and abs(better.mean() - 100 * (1 - a.mean())) < 1


def _arm(correct_rows, param=0.0, lr=1e-3):
    rows = [np.asarray(r, dtype=bool) for r in correct_rows]
    return dict(param=param, lr=lr, top1=[100 * r.mean() for r in rows], correct=[correct_string(r) for r in rows])


def test_verdicts_follow_the_data():
    rng = np.random.default_rng(0)
    ce = rng.random((20, 400)) < 0.8
    flip = rng.random((20, 400)) < 0.1  # a tenth of the images change
    better = ce | flip  # about +2 points
    worse = ce & ~flip  # about -8 points
    same = ce.copy()
    summary = summarize_task({'test': {'ce': _arm(ce), 'better': _arm(better), 'worse': _arm(worse),
                                       'same': _arm(same)}}, n_boot=500, margin=0.5)
    assert summary['better']['verdict'] == 'better' and summary['better']['lo'] > 0
    assert summary['worse']['verdict'] == 'worse' and summary['worse']['hi'] < 0
    assert summary['same']['verdict'] == 'equivalent' and summary['same']['diff'] == 0
    # too few seeds and images for a 0.5-point margin: neither better nor equivalent
    small = {'test': {'ce': _arm(ce[:2, :30]), 'noisy': _arm(rng.random((2, 30)) < 0.8)}}
    assert summarize_task(small, n_boot=500, margin=0.5)['noisy']['verdict'] == 'inconclusive'


def test_reports_of_designs_too_small_for_their_verdicts_carry_a_caution():
    assert too_small_caution(20, 4000, 5) == ''  # the studies of docs/results.md
    assert too_small_caution(20, 4000, 1) == ''
    assert 'seeds' in too_small_caution(2, 4000, 1)
    # 100 resamples, 5 arms: the smallest Holm p is 5/101 < 0.05, so a "better" can come from the floor
    assert 'resamples' in too_small_caution(20, 100, 5)
