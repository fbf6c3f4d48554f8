"""Statistics over seeds: confidence intervals, paired and unpaired tests, effect sizes, and
best-over-nuisance selection (times to target: :mod:`lossbench.analysis.survival`; which end of
a metric is better: :mod:`lossbench.problem.directions`).

Pure NumPy/SciPy/pandas on values already read from the store, so that the report and the
claims judge results the same way, and so that both can be tested on known numbers.

Methods (stated in the report too):
- 95% confidence interval of a group mean: Student's t interval, mean ± t(0.975, n-1)·s/√n
  (SciPy's ``t.interval``; :func:`t_bounds` is the one place lossbench computes one).
- Two groups whose runs share seeds are compared paired by seed: paired t-test, effect size
  Cohen's d_z = mean(diff) / sd(diff). Otherwise: Welch's t-test, effect size Cohen's d with
  the pooled standard deviation. p-values are two-sided; Holm's method adjusts them for the
  number of comparisons made.
- Equivalence within a margin m: two one-sided tests (TOST) on the same difference, paired or
  Welch as above; equivalent when both H0 diff <= -m and H0 diff >= +m are rejected.
- Best over a nuisance axis: the setting with the fewest diverged runs, then the best mean
  validation value (:func:`rank_settings`; the report and the claims both use it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Interval:
    """Mean of a sample with its t confidence interval."""

    n: int
    mean: float
    std: float
    low: float
    high: float


def t_bounds(
    center: npt.ArrayLike, se: npt.ArrayLike, df: float, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Student's t confidence interval ``center ± t(1/2 + confidence/2, df) · se``, elementwise,
    from SciPy's ``t.interval``; NaN bounds when ``df < 1``."""
    center, se = np.asarray(center, dtype=float), np.asarray(se, dtype=float)
    if df < 1:
        nan = np.full(np.broadcast(center, se).shape, math.nan)
        return nan, nan.copy()
    quantile = _t_quantile(confidence, df)
    return center - quantile * se, center + quantile * se


@functools.lru_cache(maxsize=256)
def _t_quantile(confidence: float, df: float) -> float:
    """The upper end of the standard t's ``confidence`` interval with ``df`` degrees of
    freedom (SciPy's ``t.interval``; a report asks for the same few thousands of times)."""
    from scipy import stats

    # the standard t's interval, scaled by the caller: SciPy's scale= refuses a zero error
    return float(stats.t.interval(confidence, df)[1])


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean, sample std and Student's t confidence interval of the finite values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(1, mean, math.nan, math.nan, math.nan)
    std = float(x.std(ddof=1))
    low, high = t_bounds(mean, std / math.sqrt(n), n - 1, confidence)
    return Interval(n, mean, std, float(low), float(high))


def t_band(
    samples: npt.ArrayLike, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column by column (e.g. epochs, with one row per seed): the mean and the bounds of its t
    confidence interval, as :func:`t_interval` gives them (NaN bounds for a single row)."""
    x = np.asarray(samples, dtype=float)
    n = x.shape[0]
    mean = x.mean(axis=0)
    se = x.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full_like(mean, math.nan)
    low, high = t_bounds(mean, se, n - 1, confidence)
    return mean, low, high


@dataclass(frozen=True)
class Comparison:
    """A two-sided test of group ``a`` against group ``b`` (difference a - b)."""

    n_a: int
    n_b: int
    paired: bool
    n_pairs: int
    diff: float  # mean of a minus mean of b (mean of the paired differences when paired)
    effect: float  # Cohen's d_z (paired) or d (pooled sd)
    p_value: float
    test: str


def compare(a: Mapping[int, float], b: Mapping[int, float]) -> Comparison:
    """Compare two groups' values, keyed by seed. Paired by seed when at least two seeds are
    shared; otherwise Welch's unpaired test. NaN p-value when a test cannot be computed."""
    from scipy import stats

    a = {s: v for s, v in a.items() if math.isfinite(v)}
    b = {s: v for s, v in b.items() if math.isfinite(v)}
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        diff = np.array([a[s] - b[s] for s in shared])
        sd = diff.std(ddof=1)
        if sd == 0:
            p = 1.0 if diff.mean() == 0 else 0.0
            effect = 0.0 if diff.mean() == 0 else math.copysign(math.inf, diff.mean())
        else:
            p = float(stats.ttest_rel([a[s] for s in shared], [b[s] for s in shared]).pvalue)
            effect = float(diff.mean() / sd)
        return Comparison(
            len(a), len(b), True, len(shared), float(diff.mean()), effect, p, "paired t"
        )
    xa, xb = np.array(list(a.values())), np.array(list(b.values()))
    diff = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan
    if len(xa) < 2 or len(xb) < 2:
        return Comparison(len(xa), len(xb), False, 0, diff, math.nan, math.nan, "Welch t")
    pooled = math.sqrt(
        ((len(xa) - 1) * xa.var(ddof=1) + (len(xb) - 1) * xb.var(ddof=1)) / (len(xa) + len(xb) - 2)
    )
    effect = diff / pooled if pooled > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    p = float(stats.ttest_ind(xa, xb, equal_var=False).pvalue) if pooled > 0 else float(diff != 0)
    return Comparison(len(xa), len(xb), False, 0, diff, float(effect), p, "Welch t")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for multiple comparisons (NaNs pass through)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def rank_settings(settings: Mapping[K, tuple[Sequence[float], int]], higher: bool) -> list[K]:
    """Settings of a nuisance axis, best first. Each is given as (its runs' selection values,
    how many of its runs diverged): settings without a finite value rank last; before them,
    fewer diverged runs rank first (a setting where any run diverged ranks below every setting
    where none did), then the better mean of the finite values, then the order given."""

    def key(item: tuple[int, K]) -> tuple[int, int, float, int]:
        order, setting = item
        values, diverged = settings[setting]
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return (1, diverged, 0.0, order)
        mean = float(np.mean(finite))
        return (0, diverged, -mean if higher else mean, order)

    return [setting for _, setting in sorted(enumerate(settings), key=key)]


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided tests (TOST) of ``|mean(a) - mean(b)| < margin``, and the two one-sided
    tests of the opposite: a difference beyond the margin."""

    paired: bool
    n_a: int
    n_b: int
    n_pairs: int
    margin: float
    diff: float  # mean of a minus mean of b (mean of the paired differences when paired)
    se: float  # standard error of diff
    df: float  # degrees of freedom (n - 1 paired; Welch-Satterthwaite otherwise)
    p_lower: float  # H0: diff <= -margin (rejected: diff is above -margin)
    p_upper: float  # H0: diff >= +margin (rejected: diff is below +margin)
    p_beyond: float  # the smaller p of H0 diff <= +margin and H0 diff >= -margin
    test: str

    @property
    def p_value(self) -> float:
        """TOST's p-value: the larger of the two one-sided p-values."""
        return max(self.p_lower, self.p_upper)

    def interval(self, alpha: float) -> tuple[float, float]:
        """The (1 - 2·alpha) confidence interval of diff: it lies inside ±margin exactly when
        TOST rejects at alpha (NaN bounds without a test)."""
        if self.se == 0:
            return self.diff, self.diff
        low, high = t_bounds(self.diff, self.se, self.df, 1 - 2 * alpha)
        return float(low), float(high)


def _one_sided(diff: float, se: float, df: float, bound: float, above: bool) -> float:
    """p of H0 ``diff <= bound`` (``above``: H1 diff > bound) or H0 ``diff >= bound``."""
    from scipy import stats

    if math.isnan(diff) or math.isnan(se) or df < 1:
        return math.nan
    if se == 0:  # no spread: the difference is exactly known
        return 0.0 if (diff > bound if above else diff < bound) else 1.0
    t = (diff - bound) / se
    return float(stats.t.sf(t, df) if above else stats.t.cdf(t, df))


def tost(a: Mapping[int, float], b: Mapping[int, float], margin: float) -> Equivalence:
    """Equivalence of two groups' values, keyed by seed, within ``margin`` (metric units):
    paired by seed when at least two seeds are shared, as :func:`compare`; otherwise Welch.
    NaN p-values when a test cannot be computed (fewer than two values)."""
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin!r}")
    a = {s: v for s, v in a.items() if math.isfinite(v)}
    b = {s: v for s, v in b.items() if math.isfinite(v)}
    shared = sorted(set(a) & set(b))
    if len(shared) >= 2:
        d = np.array([a[s] - b[s] for s in shared])
        diff, se, df = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1.0
        test, paired = "paired TOST", True
    else:
        xa, xb = np.array(list(a.values())), np.array(list(b.values()))
        test, paired = "Welch TOST", False
        if len(xa) < 2 or len(xb) < 2:
            diff = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan
            se, df = math.nan, 0.0
        else:
            va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
            diff, se = float(xa.mean() - xb.mean()), float(math.sqrt(va + vb))
            denominator = va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)
            df = float((va + vb) ** 2 / denominator) if denominator > 0 else len(xa) + len(xb) - 2.0
    p_lower = _one_sided(diff, se, df, -margin, above=True)
    p_upper = _one_sided(diff, se, df, margin, above=False)
    p_beyond = min(
        _one_sided(diff, se, df, margin, above=True),
        _one_sided(diff, se, df, -margin, above=False),
    )
    return Equivalence(paired, len(a), len(b), len(shared) if paired else 0, float(margin),
                       diff, se, df, p_lower, p_upper, p_beyond, test)  # fmt: skip
