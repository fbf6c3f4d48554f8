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
