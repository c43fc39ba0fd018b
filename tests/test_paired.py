"""timm_u1.studies.paired: the crossed variance, its coverage, Holm over the family, and the verdicts they give."""
import re
import warnings

import numpy as np
import pytest

from timm_u1.studies.paired import correct_string, crossed_mean, holm, summarize_task, too_small_caution


def test_holm_adjusts_step_down_and_monotone():
    p = [0.01, 0.04, 0.03, 0.5]
    adj = holm(p)
    assert all(a >= b for a, b in zip(adj, p)) and max(adj) <= 1
    assert adj == pytest.approx([0.04, 0.09, 0.09, 0.5]) and holm([0.2]) == [0.2]


def test_the_crossed_variance_reduces_to_the_one_factor_cases():
    rng = np.random.default_rng(0)
    seeds_only = np.repeat(rng.normal(0, 1, (8, 1)), 50, axis=1)  # every image of a seed alike
    est = crossed_mean(seeds_only)
    assert est.variance == pytest.approx(seeds_only[:, 0].var(ddof=1) / 8) and est.df == pytest.approx(7)
    images_only = np.repeat(rng.normal(0, 1, (1, 50)), 8, axis=0)
    est = crossed_mean(images_only)
    assert est.variance == pytest.approx(images_only[0].var(ddof=1) / 50) and est.df == pytest.approx(49)
    assert crossed_mean(np.zeros((3, 4))).variance == 0
    with pytest.raises(ValueError, match='>= 2 seeds'):
        crossed_mean(np.zeros((1, 4)))


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
                                       'same': _arm(same)}}, margin=0.5)
    assert summary['better']['verdict'] == 'better' and summary['better']['lo'] > 0
    assert summary['worse']['verdict'] == 'worse' and summary['worse']['hi'] < 0
    assert summary['same']['verdict'] == 'equivalent' and summary['same']['diff'] == 0
    # too few seeds and images for a 0.5-point margin: neither better nor equivalent
    small = {'test': {'ce': _arm(ce[:2, :30]), 'noisy': _arm(rng.random((2, 30)) < 0.8)}}
    assert summarize_task(small, margin=0.5)['noisy']['verdict'] == 'inconclusive'


def test_reports_of_designs_too_small_for_their_verdicts_carry_a_caution():
    assert too_small_caution(20) == '' and too_small_caution(5) == ''
    assert 'seeds' in too_small_caution(2)


def _coverage_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / 'scripts' / 'coverage_paired.py'
    spec = importlib.util.spec_from_file_location('coverage_paired', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_95_percent_interval_covers_the_true_difference_95_percent_of_the_time():
    """400 simulated studies of 10 seeds x 200 images: the interval's coverage is nominal (the crossed
    bootstrap of seeds and images, which counts the seed x image interaction three times, covered 98.75%)."""
    simulated_study = _coverage_script().simulated_study  # exchangeable arms: the true difference is 0
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(400):
        ce, u1 = simulated_study(rng, 10, 200)
        with warnings.catch_warnings():  # n_boot: the bootstrap's resamples, unused by an analytic interval
            warnings.simplefilter('ignore', DeprecationWarning)
            o = summarize_task({'test': {'ce': _arm(ce), 'u1': _arm(u1)}}, 1000, 0.5)['u1']
        covered.append(o['lo'] <= 0 <= o['hi'])
    assert 0.925 <= np.mean(covered) <= 0.975


def test_holm_runs_over_every_comparison_of_the_study_not_per_task():
    """The family is the study: all its comparisons, across tasks, as its report says."""
    from timm_u1.studies.frozen import summarize_study

    rng = np.random.default_rng(1)
    tasks = {}
    for t in range(2):
        ce = rng.random((8, 300)) < 0.8
        tasks[f'task{t}'] = {'test': {'ce': _arm(ce), 'a': _arm(ce | (rng.random((8, 300)) < 0.02)),
                                      'b': _arm(ce & (rng.random((8, 300)) > 0.01))}}
    summary = summarize_study({'settings': {'bootstrap': 1000, 'margin': 0.5}, 'tasks': tasks})
    raw = [(t, a, summary[t][a]['p_better']) for t in tasks for a in ('a', 'b')]
    for (t, a, _), adjusted in zip(raw, holm([p for *_, p in raw])):
        assert summary[t][a]['p_better_holm'] == pytest.approx(adjusted)


def test_the_minimum_detectable_effect_is_the_one_sided_power_formula_at_holms_strictest_level():
    from scipy import stats

    from timm_u1.studies.paired import compare_arms

    rng = np.random.default_rng(2)
    a, b = rng.random((40, 500)) < 0.8, rng.random((40, 500)) < 0.8
    one, twenty = compare_arms(a, b, 0.5), compare_arms(a, b, 0.5, family_size=20)
    assert one['mde'] / one['se'] == pytest.approx(stats.t.ppf(0.95, one['df']) + stats.t.ppf(0.8, one['df']))
    assert twenty['mde'] / twenty['se'] == pytest.approx(stats.t.ppf(1 - 0.05 / 20, one['df']) + stats.t.ppf(0.8, one['df']))
    assert one['mde'] / one['se'] == pytest.approx(1.645 + 0.842, abs=0.05)  # large df: the normal quantiles
    assert one['hi'] - one['lo'] == pytest.approx(2 * stats.t.ppf(0.975, one['df']) * one['se'])


def test_the_coverage_script_prints_the_coverage_of_each_interval(capsys):
    assert _coverage_script().main(['--studies', '20', '--seeds', '4', '--images', '30', '--resamples', '50']) == 0
    out = capsys.readouterr().out
    for name in ('crossed variance (the studies)', 'crossed bootstrap (before)', 'seeds only'):
        assert re.search(re.escape(name) + r' +95% interval covers +\d+\.\d%', out)
