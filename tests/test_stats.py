"""The statistics the report and the claims rely on, against scipy and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from lossbench.analysis import stats


def test_t_interval_matches_scipy() -> None:
    values = [0.91, 0.93, 0.9, 0.95, 0.92]
    ci = stats.t_interval(values)
    low, high = st.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
    assert (ci.n, ci.mean, ci.std) == (
        5,
        pytest.approx(0.922),
        pytest.approx(np.std(values, ddof=1)),
    )
    assert (ci.low, ci.high) == (pytest.approx(low), pytest.approx(high))


def test_t_interval_edge_cases() -> None:
    assert math.isnan(stats.t_interval([]).mean)
    one = stats.t_interval([0.5, float("nan")])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.low)


def test_t_band_is_t_interval_per_column() -> None:
    runs = np.array([[0.5, 0.7, 1.0], [0.6, 0.75, 1.0], [0.55, 0.9, 1.0]])  # seeds x epochs
    mean, low, high = stats.t_band(runs)
    for epoch in range(2):
        column = runs[:, epoch]
        expected = st.t.interval(0.95, 2, loc=column.mean(), scale=st.sem(column))
        assert mean[epoch] == pytest.approx(column.mean())
        assert (low[epoch], high[epoch]) == pytest.approx(expected)
    assert low[2] == high[2] == 1.0  # equal values: a zero-width interval, not NaN
    assert stats.t_interval([1.0, 1.0]).low == 1.0
    _, one_low, _ = stats.t_band(runs[:1])
    assert np.isnan(one_low).all()  # one run: no interval


def test_paired_comparison_matches_scipy() -> None:
    a = {0: 0.91, 1: 0.93, 2: 0.90, 3: 0.95}
    b = {0: 0.89, 1: 0.92, 2: 0.91, 3: 0.90, 9: 0.5}  # seed 9 has no partner
    c = stats.compare(a, b)
    diff = np.array([a[s] - b[s] for s in range(4)])
    assert c.paired and c.n_pairs == 4 and c.test == "paired t"
    assert c.p_value == pytest.approx(
        st.ttest_rel([a[s] for s in range(4)], [b[s] for s in range(4)]).pvalue
    )
    assert c.effect == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert c.diff == pytest.approx(diff.mean())


def test_unpaired_comparison_is_welch() -> None:
    a = {0: 0.91, 1: 0.93, 2: 0.90}
    b = {5: 0.80, 6: 0.85, 7: 0.83, 8: 0.86}
    c = stats.compare(a, b)
    assert not c.paired and c.test == "Welch t"
    assert c.p_value == pytest.approx(
        st.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue
    )
    pooled = math.sqrt(
        (2 * np.var(list(a.values()), ddof=1) + 3 * np.var(list(b.values()), ddof=1)) / 5
    )
    assert c.effect == pytest.approx(
        (np.mean(list(a.values())) - np.mean(list(b.values()))) / pooled
    )


def test_holm_adjustment() -> None:
    # hand-computed: sorted 0.01, 0.02, 0.04 -> 3*0.01, max(0.03, 2*0.02), max(0.04, 1*0.04)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert math.isnan(stats.holm([float("nan"), 0.2])[0])


@pytest.mark.parametrize(
    ("settings", "higher", "expected"),
    [
        (
            {"0.01": ([0.3, 0.4], 0), "0.1": ([0.2, 0.25], 0), "1": ([0.5], 0)},
            False,
            ["0.1", "0.01", "1"],
        ),
        ({"0.01": ([0.8], 0), "0.1": ([0.9], 0)}, True, ["0.1", "0.01"]),  # accuracy: higher
        # a setting with a diverged run ranks below every setting without, whatever its mean
        ({"0.1": ([0.3, 0.3], 0), "1": ([0.1], 1), "3": ([0.05], 2)}, False, ["0.1", "1", "3"]),
        # no finite value (all diverged, or nothing finished) ranks last; ties keep grid order
        (
            {"a": ([], 3), "b": ([], 0), "c": ([0.4], 3), "d": ([0.4], 3)},
            False,
            ["c", "d", "b", "a"],
        ),
        ({"x": ([math.nan, 0.2], 0), "y": ([0.3], 0)}, False, ["x", "y"]),  # NaN left out
    ],
    ids=["lowest-loss", "highest-acc", "diverged-lose", "no-values-last", "nan-ignored"],
)
def test_rank_settings(settings: dict, higher: bool, expected: list[str]) -> None:
    assert stats.rank_settings(settings, higher) == expected


# a, b, margin, and what the paired tests show at 0.05: (equivalence, a difference beyond)
TOST_CASES = [
    ([0.91, 0.93, 0.90, 0.95, 0.92], [0.912, 0.929, 0.903, 0.948, 0.921], 0.01, (True, False)),
    ([0.91, 0.93, 0.90, 0.95, 0.92], [0.71, 0.74, 0.69, 0.76, 0.70], 0.01, (False, True)),
    ([0.91, 0.93, 0.90, 0.95, 0.92], [0.90, 0.95, 0.88, 0.93, 0.93], 0.01, (False, False)),
]


@pytest.mark.parametrize(
    ("a", "b", "margin", "shown"), TOST_CASES, ids=["equivalent", "different", "undecided"]
)
def test_paired_tost_matches_scipy(
    a: list[float], b: list[float], margin: float, shown: tuple[bool, bool]
) -> None:
    e = stats.tost(dict(enumerate(a)), {**dict(enumerate(b)), 9: 0.5}, margin)  # 9: no partner
    d = np.subtract(a, b)
    assert e.paired and e.n_pairs == 5 and e.test == "paired TOST"
    assert e.diff == pytest.approx(d.mean()) and e.df == 4
    lower = st.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = st.ttest_1samp(d, margin, alternative="less").pvalue
    beyond = min(
        st.ttest_1samp(d, margin, alternative="greater").pvalue,
        st.ttest_1samp(d, -margin, alternative="less").pvalue,
    )
    assert (e.p_lower, e.p_upper, e.p_beyond) == pytest.approx((lower, upper, beyond), rel=1e-9)
    assert e.p_value == pytest.approx(max(lower, upper), rel=1e-9)
    ci = st.t.interval(0.90, 4, loc=d.mean(), scale=st.sem(d))
    assert e.interval(0.05) == pytest.approx(ci, rel=1e-9)
    inside = -margin < ci[0] and ci[1] < margin  # the 90% CI inside the margin: TOST rejects
    assert inside == (e.p_value < 0.05)
    assert (e.p_value < 0.05, e.p_beyond < 0.05) == shown


@pytest.mark.parametrize(
    ("a", "b", "margin", "shown"), TOST_CASES, ids=["equivalent", "different", "undecided"]
)
def test_unpaired_tost_is_welch(
    a: list[float], b: list[float], margin: float, shown: object
) -> None:
    e = stats.tost(dict(enumerate(a)), {10 + i: v for i, v in enumerate(b)}, margin)
    xa, xb = np.array(a), np.array(b)
    assert not e.paired and e.test == "Welch TOST"
    lower = st.ttest_ind(xa + margin, xb, equal_var=False, alternative="greater").pvalue
    upper = st.ttest_ind(xa - margin, xb, equal_var=False, alternative="less").pvalue
    beyond = min(
        st.ttest_ind(xa - margin, xb, equal_var=False, alternative="greater").pvalue,
        st.ttest_ind(xa + margin, xb, equal_var=False, alternative="less").pvalue,
    )
    assert (e.p_lower, e.p_upper, e.p_beyond) == pytest.approx((lower, upper, beyond), rel=1e-9)


def test_tost_edge_cases() -> None:
    same = stats.tost({0: 0.5, 1: 0.7}, {0: 0.5, 1: 0.7}, 0.01)  # one run read twice
    assert (same.p_value, same.p_beyond, same.interval(0.05)) == (0.0, 1.0, (0.0, 0.0))
    shifted = stats.tost({0: 0.5, 1: 0.7}, {0: 0.4, 1: 0.6}, 0.01)  # exactly 0.1 apart
    assert shifted.p_value == 1.0 and shifted.p_beyond == 0.0
    assert math.isnan(stats.tost({0: 0.5}, {1: 0.5, 2: 0.6}, 0.01).p_value)  # too few runs
    for margin in (0, -0.01):
        with pytest.raises(ValueError, match="margin must be > 0"):
            stats.tost({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}, margin)


# --- across problems (lossbench.analysis.ranking) ----------------------------------------------------
# Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1-30 (2006).
# Table 6 (p. 13): AUC of C4.5, C4.5+m, C4.5+cf and C4.5+m+cf on 14 data sets, with the
# ranks, mean ranks, Friedman statistic and Nemenyi critical differences worked out in the
# text. On "voting" the table prints 0.975 for both C4.5+cf and C4.5+m+cf but ranks them 2
# and 3: they differ beyond the third decimal, so C4.5+cf is 0.9751 here (SciPy's own test of
# friedmanchisquare does the same).
DEMSAR_RECIPES = ["C4.5", "C4.5+m", "C4.5+cf", "C4.5+m+cf"]
DEMSAR_AUC = [
    [0.763, 0.768, 0.771, 0.798], [0.599, 0.591, 0.590, 0.569], [0.954, 0.971, 0.968, 0.967],
    [0.628, 0.661, 0.654, 0.657], [0.882, 0.888, 0.886, 0.898], [0.936, 0.931, 0.916, 0.931],
    [0.661, 0.668, 0.609, 0.685], [0.583, 0.583, 0.563, 0.625], [0.775, 0.838, 0.866, 0.875],
    [1.000, 1.000, 1.000, 1.000], [0.940, 0.962, 0.965, 0.962], [0.619, 0.666, 0.614, 0.669],
    [0.972, 0.981, 0.9751, 0.975], [0.957, 0.978, 0.946, 0.970],
]  # fmt: skip


def demsar_scores():  # noqa: ANN201
    import pandas as pd

    return pd.DataFrame(DEMSAR_AUC, columns=DEMSAR_RECIPES, index=[f"d{i}" for i in range(14)])


def test_mean_ranks_friedman_and_nemenyi_match_demsars_worked_example() -> None:
    from lossbench.analysis import ranking

    scores = demsar_scores()
    ranks = ranking.mean_ranks(scores, higher=True)
    published = {"C4.5": 3.143, "C4.5+m": 2.000, "C4.5+cf": 2.893, "C4.5+m+cf": 1.964}
    assert {r: round(v, 3) for r, v in ranks.items()} == published
    assert list(ranks.index) == ["C4.5+m+cf", "C4.5+m", "C4.5+cf", "C4.5"]  # best first
    n, k = scores.shape
    # Demšar's chi2_F (no tie correction) and Iman-Davenport's F_F from these mean ranks
    chi2 = 12 * n / (k * (k + 1)) * (sum(r**2 for r in ranks) - k * (k + 1) ** 2 / 4)
    assert round(chi2, 2) == 9.28
    assert round((n - 1) * chi2 / (n * (k - 1) - chi2), 2) == 3.69
    # the Friedman test is SciPy's, with its tie correction (so at least Demšar's 9.28)
    omnibus = ranking.omnibus(scores)
    expected = st.friedmanchisquare(*np.array(DEMSAR_AUC).T)
    assert omnibus.test == "Friedman" and (omnibus.n_problems, omnibus.n_recipes) == (14, 4)
    assert (omnibus.statistic, omnibus.p_value) == pytest.approx(tuple(expected))
    assert omnibus.statistic >= 9.28
    # Nemenyi's critical differences: q_0.05 = 2.569 gives 1.25, q_0.10 = 2.291 gives 1.12
    assert round(ranking.critical_difference(4, 14, 0.05), 2) == 1.25
    assert round(ranking.critical_difference(4, 14, 0.10), 2) == 1.12
    # so C4.5 (3.143) against C4.5+m+cf (1.964) and C4.5+m (2.000): significant at 0.10, not
    # at 0.05, as the paper concludes; the p-values are scikit-posthocs', keyed by recipe
    p = ranking.nemenyi(scores)
    for better in ("C4.5+m+cf", "C4.5+m"):
        assert 0.05 < p.loc["C4.5", better] < 0.10
    assert p.loc["C4.5+m", "C4.5+m+cf"] > 0.9 and p.loc["C4.5", "C4.5"] == 1.0
    q = abs(ranks["C4.5"] - ranks["C4.5+cf"]) / math.sqrt(k * (k + 1) / (6 * n))
    assert p.loc["C4.5", "C4.5+cf"] == pytest.approx(
        st.studentized_range.sf(q * math.sqrt(2), k, np.inf)
    )


def test_wilcoxon_matches_demsars_worked_example() -> None:
    """Demšar 2006, Table 2 (p. 8): C4.5 against C4.5+m on the 14 data sets, zero differences
    split between the signs: R+ = 93, R- = 12, so T = 12, below the critical 21 (N = 14,
    alpha = 0.05): the difference is significant."""
    from lossbench.analysis import ranking

    scores = demsar_scores()
    statistic, p = ranking.wilcoxon(scores["C4.5+m"].tolist(), scores["C4.5"].tolist())
    assert statistic == 12 and p < 0.05
    expected = st.wilcoxon(scores["C4.5+m"], scores["C4.5"], zero_method="zsplit")
    assert p == pytest.approx(expected.pvalue)
    table = ranking.wilcoxon_holm(scores, "C4.5").set_index("recipe")
    assert list(table.index) == ["C4.5+m", "C4.5+cf", "C4.5+m+cf"]
    assert list(table["p holm"]) == pytest.approx(stats.holm(list(table["p"])))
    two = ranking.omnibus(scores[["C4.5", "C4.5+m"]])  # two recipes: Wilcoxon, not Friedman
    assert two.test == "Wilcoxon signed-rank" and two.p_value == pytest.approx(p)


def test_rank_ties_and_complete_blocks() -> None:
    import pandas as pd

    from lossbench.analysis import ranking

    scores = pd.DataFrame(
        {"a": [0.9, 0.5, 0.7, 0.8], "b": [0.8, 0.5, float("nan"), 0.9], "c": [0.7, 0.6, 0.6, 0.7]},
        index=["p1", "p2", "p3", "p4"],
    )
    complete, dropped = ranking.complete_blocks(scores)
    assert list(complete.index) == ["p1", "p2", "p4"] and dropped == {"p3": ["b"]}
    ranks = ranking.rank_table(complete, higher=True)
    assert ranks.loc["p2"].tolist() == [2.5, 2.5, 1.0]  # a tie shares the mean rank
    lower = ranking.rank_table(complete, higher=False)  # losses: lower is better
    assert lower.loc["p1"].tolist() == [3.0, 2.0, 1.0]
    same = ranking.omnibus(pd.DataFrame([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]))
    assert (same.statistic, same.p_value) == (0.0, 1.0)  # every problem a tie
    assert math.isnan(ranking.omnibus(complete.iloc[:1]).p_value)  # one problem: no test


@pytest.mark.parametrize(
    ("diff", "p", "higher", "expected"),
    [(0.05, 0.01, True, "win"), (-0.05, 0.01, True, "loss"), (0.05, 0.2, True, "tie"),
     (-0.1, 0.001, False, "win"), (0.1, 0.001, False, "loss"), (0.1, float("nan"), True, "tie")],
)  # fmt: skip
def test_win_tie_loss(diff: float, p: float, higher: bool, expected: str) -> None:
    from lossbench.analysis import ranking

    assert ranking.outcome(diff, p, higher) == expected


def test_wins_ties_losses_are_counted() -> None:
    from lossbench.analysis import ranking

    assert ranking.tally(["win", "tie", "win", "loss", "baseline"]) == (2, 1, 1)


def test_performance_profile_on_a_hand_computed_case() -> None:
    """Epochs to target, three problems: on p1 a takes 10, b 20, c never; on p2 a 6, b 3, c 3;
    on p3 nobody reaches it. Ratios to the best: a (1, 2, inf), b (2, 1, inf), c (inf, 1, inf)."""
    import pandas as pd

    from lossbench.analysis import ranking

    inf = math.inf
    times = pd.DataFrame({"a": [10, 6, inf], "b": [20, 3, inf], "c": [inf, 3, inf]},
                         index=["p1", "p2", "p3"], dtype=float)  # fmt: skip
    ratios = ranking.performance_ratios(times)
    assert ratios["a"].tolist() == [1.0, 2.0, inf] and ratios["c"].tolist() == [inf, 1.0, inf]
    profile = ranking.performance_profile(times, [1.0, 1.5, 2.0, 100.0])
    assert profile.loc["a"].tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert profile.loc["b"].tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert profile.loc["c"].tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1 / 3])
    assert ranking.profile_taus(times) == [1.0, 2.0]


def test_partial_conjunction() -> None:
    """At least k of n: (n - k + 1) times the k-th smallest p (Benjamini and Heller 2008)."""
    from lossbench.analysis import ranking

    p = [0.01, 0.04, 0.03, 0.5]
    assert ranking.partial_conjunction(p, 4) == 0.5  # all: the largest
    assert ranking.partial_conjunction(p, 3) == pytest.approx(2 * 0.04)
    assert ranking.partial_conjunction(p, 1) == pytest.approx(4 * 0.01)  # any: Bonferroni
    assert ranking.partial_conjunction([0.01, float("nan")], 2) == 1.0
    assert math.isnan(ranking.partial_conjunction(p, 5))


# -- time to target: Kaplan–Meier (lossbench.analysis.survival) -------------------------------

# The AML "maintained" group (Miller 1981; R's survival::aml): times, 1 = event, 0 = censored.
AML_TIMES = [9, 13, 13, 18, 23, 28, 31, 34, 45, 48, 161]
AML_EVENT = [1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 0]


def km_by_hand(times: list[float], events: list[int]) -> tuple[float, float, float]:
    """Product-limit estimate, Greenwood's variance, the log-log band, and the median and its
    CI where the estimate and the bands first reach one half: written out, not SciPy's."""
    z = st.norm.ppf(0.975)
    survival_, greenwood = 1.0, 0.0
    steps = []  # (time, S, low, high)
    for t in sorted(set(times)):
        at_risk = sum(1 for x in times if x >= t)
        died = sum(1 for x, e in zip(times, events, strict=True) if x == t and e)
        if died:
            survival_ *= 1 - died / at_risk
            greenwood += died / (at_risk * (at_risk - died)) if at_risk > died else math.inf
        if 0 < survival_ < 1:
            se = math.sqrt(greenwood) / abs(math.log(survival_))
            low, high = survival_ ** math.exp(z * se), survival_ ** math.exp(-z * se)
        else:
            low = high = survival_
        steps.append((t, survival_, low, high))

    def first(column: int) -> float:
        return next((step[0] for step in steps if step[column] <= 0.5 + 1e-12), math.inf)

    return first(1), first(2), first(3)


def test_kaplan_meier_median_and_ci_against_a_hand_computation_and_r() -> None:
    """R's survfit(Surv(time, status) ~ 1, aml[aml$x == "Maintained", ], conf.type =
    "log-log") gives median 31, 0.95LCL 13, 0.95UCL NA (no upper limit)."""
    from lossbench.analysis import survival

    got = survival.kaplan_meier_median(AML_TIMES, [bool(e) for e in AML_EVENT])
    assert got == (31.0, 13.0, math.inf) == km_by_hand(AML_TIMES, AML_EVENT)


@pytest.mark.parametrize("seed", range(6))
def test_kaplan_meier_against_scipys_estimate_on_random_censored_data(seed: int) -> None:
    """Runs reaching a target at random epochs, a share never: the median is where SciPy's
    survival function first drops to one half, and the CI as written out by hand."""
    from lossbench.analysis import survival

    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 12))
    times = rng.integers(1, 30, n).astype(float).tolist()
    events = (rng.random(n) < 0.7).astype(int).tolist()
    events[0] = 1
    got = survival.kaplan_meier_median(times, [bool(e) for e in events])
    sf = st.ecdf(st.CensoredData(
        uncensored=[t for t, e in zip(times, events, strict=True) if e],
        right=[t for t, e in zip(times, events, strict=True) if not e],
    )).sf  # fmt: skip
    below = sf.quantiles[sf.probabilities <= 0.5 + 1e-12]
    assert got[0] == (below[0] if below.size else math.inf)
    assert got == km_by_hand(times, events)


def test_runs_that_never_reach_the_target_count() -> None:
    """Fast in 2 seeds of 5 and never in the others loses to a little later in all 5: the
    mean over the runs that reached it (what the report showed before) says the opposite."""
    from lossbench.analysis import survival

    fast = [survival.Reach(True, 3, 3)] * 2 + [survival.Reach(False, 50, 50)] * 3
    steady = [survival.Reach(True, e, e) for e in (6, 7, 7, 8, 8)]
    f, s = survival.time_to_target(fast), survival.time_to_target(steady)
    assert (f.median, f.reached, f.n, f.horizon) == (math.inf, 2, 5, 50)
    assert (s.median, s.reached, s.share) == (7, 5, 1.0)
    assert f.exact and s.exact


def test_epochs_to_target_read_logged_epochs_not_positions() -> None:
    """Issue 29: val/acc first at or above 0.95 in epoch 14. Logged every epoch: 14. Logged
    every 5 epochs (epochs 1, 6, 11, 16, ..., MLflow steps 0, 5, 10, 15): the first logged
    epoch at the target is 16 (step 15), and it was not reached by epoch 11, so the first
    epoch lies in 12..16 (the position in the list, 4, was the bug)."""
    from lossbench.analysis import survival

    values = [0.5 + 0.45 * e / 14 if e < 14 else 0.96 for e in range(1, 31)]
    dense = survival.first_reach(list(range(1, 31)), values, 0.95, True, 30)
    assert (dense.reached, dense.latest, dense.exact) == (True, 14, True)
    epochs = [1, 6, 11, 16, 21, 26, 30]
    sparse = survival.first_reach(epochs, [values[e - 1] for e in epochs], 0.95, True, 30)
    assert (sparse.latest, sparse.earliest) == (16, 12)
    t = survival.time_to_target([sparse] * 3)
    assert (t.median_earliest, t.median) == (12, 16) and not t.exact
    assert t.median_earliest <= dense.latest <= t.median
    never = survival.first_reach(epochs, [0.5] * 7, 0.95, True, 30)
    assert (never.reached, never.latest) == (False, 30)
    lower = survival.first_reach([2, 4], [0.9, 0.3], 0.5, False, 4)  # a loss: lower is better
    assert (lower.latest, lower.earliest) == (4, 3)


def test_the_range_of_medians_is_every_first_epoch_the_logged_ones_allow() -> None:
    """Brute force over every first epoch in each run's open interval, with a censored run
    whose end falls inside one of them (where the estimate is not monotone in the times)."""
    import itertools

    from lossbench.analysis import survival

    runs = [survival.Reach(True, 8, 3), survival.Reach(False, 5, 5), survival.Reach(True, 6, 6),
            survival.Reach(True, 10, 7), survival.Reach(False, 9, 9)]  # fmt: skip
    reached = [r.reached for r in runs]
    choices = [range(int(r.earliest), int(r.latest) + 1) if r.reached else [r.latest] for r in runs]
    medians = [survival.kaplan_meier_median(list(times), reached)[0]
               for times in itertools.product(*choices)]  # fmt: skip
    t = survival.time_to_target(runs)
    assert (t.median_earliest, t.median) == (min(medians), max(medians))


# -- which end of a metric is better (lossbench.problem.directions) ---------------------------


def test_directions_of_built_in_and_declared_metrics() -> None:
    from lossbench.problem import directions as d

    assert d.higher_is_better("val/acc") and d.higher_is_better("test/r2")
    assert d.higher_is_better("val/rmse") is False and d.higher_is_better("train/loss") is False
    assert (
        d.higher_is_better("test/brier") is False and d.higher_is_better("target/epochs") is False
    )
    assert d.higher_is_better("val/widgets") is None and d.higher_is_better("lr") is None
    assert d.direction("val/acc") == "max" and d.direction("train/grad_norm") is None
    assert d.higher_is_better("val/auroc", {"auroc": True}) is True
    assert d.higher_is_better("test/top2_error", {"top2_error": False}) is False


def test_directions_are_recovered_from_a_runs_params() -> None:
    """What training reads from the config, the report reads back from the params."""
    from lossbench.problem import directions as d
    from lossbench.tracking.payloads import flatten

    cfg = {"metrics": {"auroc": {"_target_": "m.auroc", "task": "classification",
                                 "higher_is_better": True},
                       "ece": {"_target_": "lossbench.problem.metrics.ece", "task": "classification"}}}  # fmt: skip
    assert d.config_directions(cfg) == {"auroc": True, "ece": False}
    assert d.recorded_directions(flatten(cfg)) == d.config_directions(cfg)
    with pytest.raises(
        ValueError, match="metrics.auroc.higher_is_better='yes' must be true or false"
    ):
        d.config_directions({"metrics": {"auroc": {"higher_is_better": "yes"}}})
