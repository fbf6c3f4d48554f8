"""The statistics the report and the claims rely on, against scipy and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from lossbench import stats


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
    ("history", "target", "higher", "expected"),
    [
        ([0.5, 0.8, 0.95, 0.99], 0.9, True, 3),
        ([0.5, 0.8], 0.9, True, None),  # censored
        ([2.0, 1.0, 0.4], 0.5, False, 3),
        ([float("nan"), 0.95], 0.9, True, 2),
    ],
)
def test_epochs_to_target(
    history: list[float], target: float, higher: bool, expected: int | None
) -> None:
    assert stats.epochs_to_target(history, target, higher) == expected


def test_direction_of_metrics() -> None:
    assert stats.higher_is_better("val/acc") and stats.higher_is_better("test/r2")
    assert not stats.higher_is_better("val/rmse") and not stats.higher_is_better("train/loss")


def test_direction_is_none_where_the_name_does_not_say() -> None:
    assert stats.direction("val/acc") == "max" and stats.direction("val/loss") == "min"
    assert stats.direction("test/brier") == "min" and stats.direction("val/widgets") is None


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
