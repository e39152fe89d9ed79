"""The statistics of comparing two configs over seeds: effect, interval, test, verdict.

    python experiments.py --report results4comparison/ML-100K-relabel --baseline lightgcn-llm refine-llm

(the command; this module is its statistics, pure functions of arrays; docs/experiments.md#statistics
says what each number is.) The unit of replication is the training run: every test here carries
the seed-to-seed variance. Configs trained on different files draw different batches and negatives
from the first batch on, so runs are not paired by seed (Welch's unpaired t-test, scipy); the
hierarchical bootstrap adds the test users' sampling on top. Many comparisons are corrected with
Holm, equivalence is tested with two one-sided tests (TOST), power with statsmodels.
"""
import functools
import math
import warnings
from dataclasses import dataclass

ALPHA = 0.05
POWER = 0.8
DEFAULT_MARGIN = 0.01          # relative: ±1% of the baseline's mean
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0             # the report is a deterministic function of the runs
TESTS = {False: "welch", True: "paired-t"}  # the headline test, as summary.json names it
VERDICTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass
class Comparison:
    """One config against its baseline on one metric (None where undefined, e.g. one seed)."""
    n: int
    n_baseline: int
    diff: float                  # mean(config) - mean(baseline)
    rel_diff: float | None       # diff / mean(baseline)
    ci95_diff: list | None       # Welch's 95% interval of diff
    ci95_rel_diff: list | None   # the same, divided by mean(baseline)
    ci95_rel_diff_hier: list | None  # hierarchical bootstrap (seeds, then users), relative
    p: float | None              # Welch's t-test, two-sided
    p_tost: float | None         # equivalence within ±margin (the larger of the two one-sided p)
    mde_rel: float | None        # smallest relative difference detectable at 80% power, alpha 0.05
    seeds_for_margin: int | None  # seeds per config to detect a difference of one margin at 80% power
    p_holm: float | None = None
    p_tost_holm: float | None = None
    verdict: str = "inconclusive"


def _floats(values):
    import numpy as np

    return np.asarray(values, dtype=float)


def welch(x, y):
    """(p, [lo, hi] of mean(x) - mean(y)) of Welch's t-test; (None, None) when it is undefined
    (fewer than two runs on a side, or no spread on either side)."""
    from scipy import stats

    x, y = _floats(x), _floats(y)
    if len(x) < 2 or len(y) < 2 or (x.var() == 0 and y.var() == 0):
        return None, None
    result = stats.ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(1 - ALPHA)
    return float(result.pvalue), [float(interval.low), float(interval.high)]


def paired_t(x, y):
    """(p, [lo, hi] of mean(x - y)) of the paired t-test over runs matched by seed; (None, None) if
    undefined. Only for configs whose runs share their random stream (the user says why)."""
    from scipy import stats

    d = _floats(x) - _floats(y)
    if len(d) < 2 or d.var() == 0:
        return None, None
    result = stats.ttest_rel(_floats(x), _floats(y))
    interval = result.confidence_interval(1 - ALPHA)
    return float(result.pvalue), [float(interval.low), float(interval.high)]


def tost(x, y, margin, paired=False):
    """p of the equivalence test |mean(x) - mean(y)| < margin (absolute): two one-sided Welch tests
    (statsmodels ttost_ind); None where undefined."""
    from statsmodels.stats.weightstats import ttost_ind, ttost_paired

    x, y = _floats(x), _floats(y)
    if len(x) < 2 or len(y) < 2 or not margin > 0:
        return None
    if paired:
        return None if (x - y).var() == 0 else float(ttost_paired(x, y, -margin, margin)[0])
    if x.var() == 0 and y.var() == 0:
        return None
    return float(ttost_ind(x, y, -margin, margin, usevar="unequal")[0])


def pooled_sd(x, y):
    x, y = _floats(x), _floats(y)
    return math.sqrt(((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2))


def _spread(x, y, paired):
    """The standard deviation the power analysis works with: of the seed-paired differences, or
    pooled over both configs; None if it is 0 or undefined."""
    x, y = _floats(x), _floats(y)
    if len(x) < 2 or len(y) < 2:
        return None
    sd = float((x - y).std(ddof=1)) if paired else pooled_sd(x, y)
    return sd if sd > 0 else None


def minimum_detectable(x, y, paired=False):
    """The smallest absolute difference of means a two-sided t-test at ALPHA detects with POWER,
    given these seed counts and their spread (statsmodels TTestIndPower, or TTestPower on the
    differences when paired); None if undefined."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = _spread(x, y, paired)
    if sd is None:
        return None
    if paired:
        effect = TTestPower().solve_power(effect_size=None, nobs=len(x), alpha=ALPHA, power=POWER)
    else:
        effect = TTestIndPower().solve_power(effect_size=None, nobs1=len(x), alpha=ALPHA, power=POWER,
                                             ratio=len(y) / len(x))
    return float(effect) * sd


def seeds_needed(x, y, difference, paired=False):
    """Seeds per config (equal counts) for a two-sided t-test at ALPHA to detect `difference` with
    POWER, at the observed spread; None if undefined."""
    from statsmodels.stats.power import TTestIndPower, TTestPower

    sd = _spread(x, y, paired)
    if sd is None or not difference > 0:
        return None
    analysis = TTestPower() if paired else TTestIndPower()
    effect = difference / sd
    if analysis.power(effect, 2, ALPHA) >= POWER:  # the solver finds no root below its bracket
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a failed search returns NaN, said as None below
        n = analysis.solve_power(effect_size=effect, nobs=None, alpha=ALPHA, power=POWER) if paired else \
            analysis.solve_power(effect_size=effect, nobs1=None, alpha=ALPHA, power=POWER, ratio=1.0)
    return max(2, math.ceil(n)) if math.isfinite(n) else None


@functools.lru_cache(maxsize=4)
def user_weights(users, resamples, seed):
    """(resamples, users): how often each resample drew each user, over `users`. One draw per report
    and user count (cached), so that every comparison of a report sees the same user resamples."""
    import numpy as np

    rng = np.random.default_rng([seed, 0])
    weights = rng.multinomial(users, np.full(users, 1 / users), size=resamples) / users
    weights.flags.writeable = False
    return weights


def hierarchical_bootstrap(runs, baseline_runs, resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED):
    """95% percentile interval of the relative difference of means, resampling the seeds of each
    config and, within them, the test users (one user draw shared by both configs: they are scored
    on the same users). `runs`, `baseline_runs`: (seeds, users) arrays of per-user metrics, the
    users in one order. None with fewer than two seeds on a side or no users.

    Written here with numpy because scipy.stats.bootstrap resamples one level only; the nesting is
    the point: the interval carries both the seed-to-seed and the user-to-user variance.
    """
    import numpy as np

    a, b = _floats(runs), _floats(baseline_runs)
    if a.ndim != 2 or b.ndim != 2 or len(a) < 2 or len(b) < 2 or a.shape[1] == 0 or a.shape[1] != b.shape[1]:
        return None
    rng = np.random.default_rng([seed, 1])
    weights = user_weights(a.shape[1], resamples, seed)  # (resamples, users)
    means_a, means_b = weights @ a.T, weights @ b.T  # (resamples, seeds): each run's mean over the drawn users
    pick_a = rng.integers(0, len(a), size=(resamples, len(a)))
    pick_b = rng.integers(0, len(b), size=(resamples, len(b)))
    rows = np.arange(resamples)[:, None]
    mean_a, mean_b = means_a[rows, pick_a].mean(axis=1), means_b[rows, pick_b].mean(axis=1)
    rel = (mean_a - mean_b) / mean_b
    low, high = np.percentile(rel, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return [float(low), float(high)]


def compare(x, y, per_user=None, per_user_baseline=None, margin=DEFAULT_MARGIN, paired=False) -> Comparison:
    """A config's per-seed metric `x` against its baseline's `y`; per_user arrays (seeds, users) for
    the hierarchical interval (None: no such interval). `margin` is relative to mean(y). `paired`:
    x and y are matched by seed (same length, same order) and tested as pairs."""
    x, y = _floats(x), _floats(y)
    base = float(y.mean())
    diff = float(x.mean()) - base
    relative = (lambda value: value / base) if base else None
    p, ci = paired_t(x, y) if paired else welch(x, y)
    mde = minimum_detectable(x, y, paired)
    return Comparison(
        n=len(x), n_baseline=len(y), diff=diff,
        rel_diff=relative(diff) if relative else None,
        ci95_diff=ci, ci95_rel_diff=[relative(v) for v in ci] if ci and relative else None,
        ci95_rel_diff_hier=(hierarchical_bootstrap(per_user, per_user_baseline)
                            if per_user is not None and relative else None),
        p=p, p_tost=tost(x, y, margin * abs(base), paired),
        mde_rel=mde / abs(base) if mde is not None and base else None,
        seeds_for_margin=seeds_needed(x, y, margin * abs(base), paired))


def holm(pvalues):
    """Holm-adjusted p-values (statsmodels multipletests), None kept where a p is None."""
    from statsmodels.stats.multitest import multipletests

    present = [p for p in pvalues if p is not None]
    if not present:
        return list(pvalues)
    adjusted = iter(multipletests(present, alpha=ALPHA, method="holm")[1])
    return [None if p is None else float(next(adjusted)) for p in pvalues]


def adjust(comparisons, margin=DEFAULT_MARGIN) -> None:
    """Holm over every comparison of one report, for the difference tests and for the equivalence
    tests separately; then each one's verdict."""
    for key in ("p", "p_tost"):
        for comparison, adjusted in zip(comparisons, holm([getattr(c, key) for c in comparisons])):
            setattr(comparison, f"{key}_holm", adjusted)
    for comparison in comparisons:
        comparison.verdict = verdict(comparison, margin)


def _inside(interval, low, high) -> bool:
    return interval is None or (low < interval[0] and interval[1] < high)


def verdict(c: Comparison, margin=DEFAULT_MARGIN) -> str:
    """better / worse: Holm-adjusted Welch p < ALPHA and both intervals on that side of 0;
    equivalent (within ±margin): Holm-adjusted TOST p < ALPHA and both intervals inside ±margin;
    inconclusive otherwise. A missing hierarchical interval (no per-user files) does not veto."""
    intervals = [c.ci95_rel_diff, c.ci95_rel_diff_hier]
    if c.p_holm is not None and c.p_holm < ALPHA and c.ci95_rel_diff is not None:
        if all(_inside(i, 0, math.inf) for i in intervals):
            return "better"
        if all(_inside(i, -math.inf, 0) for i in intervals):
            return "worse"
    if c.p_tost_holm is not None and c.p_tost_holm < ALPHA and all(_inside(i, -margin, margin) for i in intervals):
        return "equivalent"
    return "inconclusive"


def prediction_interval(values):
    """95% interval for one more run of the same config: mean ± t(0.975, n-1) · sd · sqrt(1 + 1/n)
    (scipy's t quantile); None with fewer than two runs."""
    from scipy import stats

    values = _floats(values)
    n = len(values)
    if n < 2:
        return None
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * values.std(ddof=1) * math.sqrt(1 + 1 / n)
    return [float(values.mean() - half), float(values.mean() + half)]
