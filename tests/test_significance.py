"""The report's statistics (significance.py): each number against a hand computation or an
independent implementation, the verdict rules, and calibration on the committed sweeps.

    python -m pytest -q tests/test_significance.py
"""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

import report
import significance
from helpers import ROOT
from significance import Comparison

COMMITTED = [ROOT / "results4comparison" / name for name in ("ML-100K", "ML-100K-relabel")]


def test_welch_by_hand():
    # x: mean 2, var 1; y: mean 4, var 4; n = 3 each. se^2 = 1/3 + 4/3 = 5/3.
    # Welch-Satterthwaite df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17.
    p, ci = significance.welch([1, 2, 3], [2, 4, 6])
    se, df = math.sqrt(5 / 3), 50 / 17
    assert p == pytest.approx(2 * stats.t.sf(2 / se, df), rel=1e-12)
    half = stats.t.ppf(0.975, df) * se
    assert ci == pytest.approx([-2 - half, -2 + half], rel=1e-12)
    assert significance.welch([1], [2, 3]) == (None, None)  # one run: no spread to test against
    assert significance.welch([1, 1], [2, 2]) == (None, None)


def test_paired_t_by_hand():
    # Differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), df 2; t = 2 sqrt(3).
    p, ci = significance.paired_t([2, 4, 6], [1, 2, 3])
    assert p == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2), rel=1e-12)
    half = 4.302652729911275 / math.sqrt(3)  # Student t table: 97.5% quantile, 2 degrees of freedom
    assert ci == pytest.approx([2 - half, 2 + half], rel=1e-9)


def test_tost_by_hand():
    # x - y: diff 0.01, se^2 = var/3 + var/3 with var = 1e-4 each: se = sqrt(2/3) * 0.01; df = 4.
    x, y = [0.41, 0.42, 0.43], [0.40, 0.41, 0.42]
    se, df, margin = math.sqrt(2 / 3) * 0.01, 4, 0.02
    lower = stats.t.sf((0.01 + margin) / se, df)   # H0: diff <= -margin
    upper = stats.t.cdf((0.01 - margin) / se, df)  # H0: diff >= +margin
    assert significance.tost(x, y, margin) == pytest.approx(max(lower, upper), rel=1e-9)
    assert significance.tost(x, y, 0) is None


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06.
    assert significance.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])
    assert significance.holm([None]) == [None]


def _power(effect, n1, n2):
    """Power of the two-sided pooled t-test at alpha 0.05, from the noncentral t (scipy)."""
    df = n1 + n2 - 2
    noncentrality = effect * math.sqrt(n1 * n2 / (n1 + n2))
    critical = stats.t.ppf(0.975, df)
    return stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality)


def test_minimum_detectable_and_seeds_needed_against_the_noncentral_t():
    x, y = [0.41, 0.42, 0.43, 0.425, 0.415], [0.40, 0.41, 0.42, 0.405, 0.395]
    sd = significance.pooled_sd(x, y)
    assert sd == pytest.approx(math.sqrt((np.var(x, ddof=1) * 4 + np.var(y, ddof=1) * 4) / 8))
    mde = significance.minimum_detectable(x, y)
    assert _power(mde / sd, 5, 5) == pytest.approx(0.8, abs=1e-6)
    n = significance.seeds_needed(x, y, 0.004)
    assert _power(0.004 / sd, n, n) >= 0.8 > _power(0.004 / sd, n - 1, n - 1)


def test_prediction_interval_by_hand():
    # mean 2, sd 1, n 3: 2 +- t(0.975, 2) * sqrt(1 + 1/3).
    half = 4.302652729911275 * math.sqrt(4 / 3)
    assert significance.prediction_interval([1, 2, 3]) == pytest.approx([2 - half, 2 + half], rel=1e-9)
    assert significance.prediction_interval([1]) is None


def test_hierarchical_bootstrap_without_user_or_seed_spread_is_exact():
    a, b = np.full((3, 4), 0.6), np.full((2, 4), 0.5)
    assert significance.hierarchical_bootstrap(a, b) == pytest.approx([0.2, 0.2])


def test_hierarchical_bootstrap_with_users_only_against_scipy():
    """No seed-to-seed spread: the nested bootstrap reduces to a paired bootstrap over users, which
    scipy.stats.bootstrap computes independently (percentile interval)."""
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.6, 300)
    new = base + rng.normal(0.02, 0.05, 300)
    a, b = np.tile(new, (3, 1)), np.tile(base, (3, 1))
    ours = significance.hierarchical_bootstrap(a, b, resamples=20000)
    theirs = stats.bootstrap((new, base), lambda n, m, axis=-1: n.mean(axis) / m.mean(axis) - 1, paired=True,
                             n_resamples=20000, method="percentile", random_state=1).confidence_interval
    assert ours == pytest.approx([theirs.low, theirs.high], abs=0.003)


def test_hierarchical_bootstrap_with_seeds_only_spans_the_seed_spread():
    # One user; the baseline fixed at 0.5, the config's seeds 0.5 and 0.6: each resample's mean is
    # 0.5, 0.55 or 0.6 (probabilities 1/4, 1/2, 1/4), so the 95% interval is [0, 0.2].
    a, b = np.array([[0.5], [0.6]]), np.array([[0.5], [0.5]])
    assert significance.hierarchical_bootstrap(a, b) == pytest.approx([0.0, 0.2])


def _comparison(**values):
    fields = dict(n=5, n_baseline=5, diff=0.0, rel_diff=0.0, ci95_diff=None, ci95_rel_diff=None,
                  ci95_rel_diff_hier=None, p=None, p_tost=None, mde_rel=None, seeds_for_margin=None)
    return Comparison(**{**fields, **values})


@pytest.mark.parametrize("values, expected", [
    (dict(p_holm=0.01, ci95_rel_diff=[0.01, 0.03], ci95_rel_diff_hier=[0.002, 0.04]), "better"),
    (dict(p_holm=0.01, ci95_rel_diff=[-0.03, -0.01], ci95_rel_diff_hier=[-0.04, -0.002]), "worse"),
    # The users' interval crosses 0: the difference may be a property of these test users only.
    (dict(p_holm=0.01, ci95_rel_diff=[0.01, 0.03], ci95_rel_diff_hier=[-0.01, 0.05]), "inconclusive"),
    (dict(p_holm=0.01, ci95_rel_diff=[0.01, 0.03], ci95_rel_diff_hier=None), "better"),
    (dict(p_holm=0.2, p_tost_holm=0.01, ci95_rel_diff=[-0.004, 0.005], ci95_rel_diff_hier=[-0.008, 0.009]),
     "equivalent"),
    (dict(p_holm=0.2, p_tost_holm=0.01, ci95_rel_diff=[-0.004, 0.005], ci95_rel_diff_hier=[-0.02, 0.009]),
     "inconclusive"),
    (dict(p_holm=0.2, p_tost_holm=0.3, ci95_rel_diff=[-0.004, 0.005]), "inconclusive"),
    (dict(p_holm=0.06, p_tost_holm=None, ci95_rel_diff=[0.001, 0.03]), "inconclusive"),  # raw p < 0.05, Holm not
])
def test_verdict_rules(values, expected):
    assert significance.verdict(_comparison(**values), margin=0.01) == expected


def test_adjust_corrects_over_the_whole_family():
    comparisons = [_comparison(p=p, p_tost=None, ci95_rel_diff=[0.01, 0.02]) for p in (0.01, 0.02, 0.03)]
    significance.adjust(comparisons)
    assert [c.p_holm for c in comparisons] == pytest.approx([0.03, 0.04, 0.04])
    assert [c.verdict for c in comparisons] == ["better", "better", "better"]
    comparisons = [_comparison(p=p, ci95_rel_diff=[0.01, 0.02]) for p in (0.01, 0.04, 0.03, 0.2)]
    significance.adjust(comparisons)
    assert [c.verdict for c in comparisons] == ["better", "inconclusive", "inconclusive", "inconclusive"]


# ----------------------------------------------------------------------------------------------
# Calibration on the committed sweeps: a config against itself.


def _committed_configs():
    configs = []
    for folder in COMMITTED:
        if (folder / "experiments.json").is_file():
            configs += [(f"{folder.name}/{name}", runs) for name, _, runs in report.collect(folder, 20).configs
                        if len(runs) >= 5]
    return configs


def _self_splits(configs):
    """Each config's first five seeds split 2 against 3 in all ten ways: pseudo-configs that differ
    only by their seeds."""
    for name, runs in configs:
        first = sorted(runs, key=lambda run: run.seed)[:5]
        for pick in itertools.combinations(range(5), 2):
            yield name, [first[i] for i in pick], [first[i] for i in range(5) if i not in pick]


def headline_p(runs, baseline_runs, metric):
    """The report's test of two groups of runs (significance.compare, as report.compare_runs calls it)."""
    return significance.compare([run.test[metric] for run in runs], [run.test[metric] for run in baseline_runs]).p


def seed_averaged_wilcoxon_p(runs, baseline_runs, metric):
    """The report's former headline test: each user's metric averaged over a config's seeds, then a
    Wilcoxon signed-rank test over users. It ignores seed-to-seed variance."""
    users = sorted(set.intersection(*(set(run.per_user[metric]) for run in runs + baseline_runs)))
    mine = np.mean([[run.per_user[metric][u] for u in users] for run in runs], axis=0)
    theirs = np.mean([[run.per_user[metric][u] for u in users] for run in baseline_runs], axis=0)
    return stats.wilcoxon(mine, theirs).pvalue


def rejection_rate(test, configs, metric):
    p_values = [test(a, b, metric) for _, a, b in _self_splits(configs)]
    return np.mean([p is not None and p < 0.05 for p in p_values]), len(p_values)


@pytest.fixture(scope="module")
def committed_configs():
    import gc

    configs = _committed_configs()
    if len(configs) < 10:
        pytest.fail("the committed sweeps in results4comparison/ hold fewer than 10 configs of 5 seeds")
    # statsmodels' multipletests runs gc.collect() on every call; the runs read here stay alive for the
    # module, so they are kept out of those collections (360 calls would otherwise take minutes).
    gc.freeze()
    yield configs
    gc.unfreeze()


@pytest.mark.parametrize("metric", ["recall", "ndcg"])
def test_a_config_against_itself_is_rejected_at_the_nominal_rate(committed_configs, metric):
    rate, count = rejection_rate(headline_p, committed_configs, metric)
    assert count >= 100
    assert rate <= 0.10, f"the headline test rejects {rate:.0%} of {count} self-comparisons at p < 0.05"


@pytest.mark.parametrize("metric", ["recall", "ndcg"])
def test_the_calibration_check_catches_the_seed_averaged_wilcoxon(committed_configs, metric):
    """The same check, with the former headline test put back, fails: it can tell a calibrated test
    from one that ignores seed variance."""
    rate, count = rejection_rate(seed_averaged_wilcoxon_p, committed_configs, metric)
    assert rate > 0.10, f"the seed-averaged Wilcoxon rejected only {rate:.0%} of {count}"


def test_a_config_against_itself_gets_no_better_or_worse_verdict(committed_configs):
    """Without the users' interval, which can only veto a better or worse: a bound on the report's rate."""
    verdicts = []
    for _, a, b in _self_splits(committed_configs):
        comparisons = []
        for metric in report.COMPARED:
            x, y = [run.test[metric] for run in a], [run.test[metric] for run in b]
            p, ci = significance.welch(x, y)
            base = np.mean(y)
            comparisons.append(_comparison(p=p, ci95_rel_diff=ci and [value / base for value in ci],
                                           p_tost=significance.tost(x, y, significance.DEFAULT_MARGIN * base)))
        significance.adjust(comparisons)
        verdicts += [c.verdict for c in comparisons]
    assert np.mean([v in ("better", "worse") for v in verdicts]) <= 0.05


def test_a_known_difference_is_still_detected():
    """LightGCN on the original ratings against the LLM's labels (about -3.5% Recall@20): worse."""
    folder = ROOT / "results4comparison" / "ML-100K-relabel"
    summary = report.summarize(folder, ["lightgcn-llm", "refine-llm"])
    original = next(entry for entry in summary["configs"] if entry["name"] == "lightgcn-original")
    recall = original["vs_baseline"]["by_metric"]["recall"]
    assert recall["verdict"] == "worse" and recall["p_holm"] < 0.05 and recall["ci95_rel_diff"][1] < 0
