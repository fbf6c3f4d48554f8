"""Time to target, with the runs that never reach it counted: Kaplan–Meier.

A run either reaches the target at some epoch (an event) or ends without reaching it. A run
that ends without reaching it says the target was not reached within its planned epochs: it is
right-censored there, not dropped (dropping it would let a recipe that reaches the target fast
in 2 seeds of 5 beat one that reaches it a little later in all 5). The Kaplan–Meier estimate
(SciPy's ``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``) gives, at each epoch, the share
of runs still short of the target; from it:

- the median time to target: the first time at which the estimated share still short of the
  target is at most one half ("half the runs had reached it by then"); infinite when that never
  happens within the runs' epochs;
- its 95% confidence interval: the first times at which the lower and the upper pointwise
  confidence bands of that share reach one half (Brookmeyer and Crowley's construction, as R's
  ``survfit`` does), the bands by Greenwood's variance on the log-log scale (SciPy's
  ``method="log-log"``; where the share is exactly 0 or 1 the band is that value). An upper
  limit that never comes is infinite;
- the share of runs that reached it.

The same applies to seconds: each run's epochs times its seconds per epoch.

Logged epochs. A metric logged at some epochs only (``tracking.log_every_n_epochs``,
``trainer.check_val_every_n_epoch``) tells when a run had reached the target (the first logged
epoch at or past it), not always when it first did: that lies after the logged epoch before.
:class:`Reach` keeps both ends. :func:`time_to_target` computes the figures on the first logged
epochs reaching the target, and the range of medians every first epoch allowed by the logged
ones gives (:attr:`TimeToTarget.median_earliest` to :attr:`TimeToTarget.median`); with every
epoch logged the two are the same.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CORNERS = 4096  # configurations tried for the median's range (see _slots)


@dataclass(frozen=True)
class Reach:
    """When one run reached the target. ``reached``: ``latest`` is when it had reached it (the
    first logged epoch at or past the target), ``earliest`` the first epoch it may have done so
    (one past the logged epoch before; equal to ``latest`` when that epoch was logged too).
    Not reached: censored at ``latest`` (``earliest`` is the same)."""

    reached: bool
    latest: float
    earliest: float
    resolution: float = 1.0  # the time between two of its epochs

    @property
    def exact(self) -> bool:
        """Whether the logged epochs give the first epoch reaching the target exactly."""
        return self.earliest == self.latest

    def scaled(self, factor: float) -> Reach:
        """The same run on another scale (seconds: ``factor`` seconds per epoch)."""
        return Reach(
            self.reached, self.latest * factor, self.earliest * factor, self.resolution * factor
        )


def first_reach(
    epochs: Sequence[int],
    values: Sequence[float],
    target: float,
    higher: bool,
    censored_at: float,
) -> Reach:
    """A run's :class:`Reach` from the epochs its metric was logged at (1, 2, ... counting
    epochs trained; MLflow's step + 1) and the values there. Not reached at any logged epoch:
    censored at ``censored_at`` (the epochs the run was planned to train)."""
    previous = 0
    for epoch, value in zip(epochs, values, strict=True):
        if math.isfinite(value) and (value >= target if higher else value <= target):
            return Reach(True, float(epoch), float(previous + 1))
        previous = epoch
    return Reach(False, float(censored_at), float(censored_at))


def kaplan_meier_median(
    times: Sequence[float], reached: Sequence[bool], confidence: float = 0.95
) -> tuple[float, float, float]:
    """(median, CI low, CI high) of the time to an event, from each run's time and whether the
    event happened then (else: right-censored there), by SciPy's Kaplan–Meier estimate (see the
    module docstring). ``inf`` where the estimate or a band never reaches one half; NaN for no
    runs."""
    from scipy import stats

    if len(times) == 0:
        return math.nan, math.nan, math.nan
    t = np.asarray(times, dtype=float)
    hit = np.asarray(reached, dtype=bool)
    if not hit.any():
        return math.inf, math.inf, math.inf
    data = stats.CensoredData(uncensored=t[hit], right=t[~hit])
    sf = stats.ecdf(data).sf
    with warnings.catch_warnings():  # undefined where the share is 0 or 1: filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(confidence, method="log-log")
    share = sf.probabilities

    def filled(probabilities: np.ndarray) -> np.ndarray:
        out = np.array(probabilities, dtype=float)
        for exact in (0.0, 1.0):
            out[np.isnan(out) & np.isclose(share, exact)] = exact
        return out

    def half(probabilities: np.ndarray) -> float:
        below = np.flatnonzero(probabilities <= 0.5 + 1e-12)
        return float(sf.quantiles[below[0]]) if below.size else math.inf

    return half(share), half(filled(band.low.probabilities)), half(filled(band.high.probabilities))


@dataclass(frozen=True)
class TimeToTarget:
    """A group's time to target: Kaplan–Meier median with its confidence interval, on the
    first logged epochs at the target, and how many of its runs reached it. Where the logged
    epochs leave the first ones open, ``median_earliest`` is the smallest median they allow
    (``median`` the largest); else the two are equal."""

    n: int
    reached: int
    median: float
    low: float
    high: float
    median_earliest: float
    horizon: float = math.nan  # the longest time any run was followed

    @property
    def share(self) -> float:
        """The share of runs that reached the target."""
        return self.reached / self.n if self.n else math.nan

    @property
    def exact(self) -> bool:
        """Whether the logged epochs give the median exactly."""
        return self.median_earliest == self.median or math.isnan(self.median)


def time_to_target(runs: Sequence[Reach], confidence: float = 0.95) -> TimeToTarget:
    """The Kaplan–Meier figures of a group of runs (see the module docstring). Where the logged
    epochs leave first epochs open: over every first epoch they allow, the smallest and the
    largest median (found exactly by :func:`_slots`), and the widest confidence interval."""
    reached = [r.reached for r in runs]
    median, low, high = kaplan_meier_median([r.latest for r in runs], reached, confidence)
    earliest = median
    if any(not r.exact for r in runs if r.reached):
        first = [kaplan_meier_median(t, reached, confidence) for t in _corners(runs, True) or []]
        latest = _corners(runs, first=False)
        last = (
            [(math.inf,) * 3]
            if latest is None
            else [kaplan_meier_median(t, reached, confidence) for t in latest]
        )
        earliest = min(m for m, _, _ in first)
        low = min(lo for _, lo, _ in first)
        median = max(m for m, _, _ in last)
        high = max(hi for _, _, hi in last)
    horizon = max((r.latest for r in runs), default=math.nan)
    return TimeToTarget(len(runs), sum(reached), median, low, high, earliest, horizon)


def _slots(run: Reach, censored: Sequence[float], first: bool) -> list[float]:
    """The times a run's first reach may take (its epochs from ``earliest`` to ``latest``) that
    can give the smallest (``first``) or the largest median. Between two censoring times the
    Kaplan–Meier estimate only falls as events come earlier, so within each stretch of the
    run's interval between censoring times only its earliest epoch (for the smallest median) or
    its latest matters; an event at a censoring time comes before it (SciPy's convention)."""
    if not run.reached or run.exact:
        return [run.latest]
    inside = sorted(c for c in censored if run.earliest <= c < run.latest)

    def epoch(c: float, after: bool) -> float:  # the run's first epoch after c, or last at c
        k = math.floor((c - run.earliest) / run.resolution + 1e-9) + (1 if after else 0)
        return min(run.earliest + k * run.resolution, run.latest)

    if first:
        return [run.earliest, *(epoch(c, after=True) for c in inside)]
    return [*(epoch(c, after=False) for c in inside), run.latest]


def _corners(runs: Sequence[Reach], first: bool) -> list[list[float]] | None:
    """Every combination of the runs' :func:`_slots`. Past :data:`MAX_CORNERS`, a bound that
    holds whatever the order: for the smallest median, every event at the earliest time of any
    run; for the largest, ``None`` (unbounded)."""
    censored = [r.latest for r in runs if not r.reached]
    options = [_slots(r, censored, first) for r in runs]
    if math.prod(len(o) for o in options) <= MAX_CORNERS:
        return [list(times) for times in itertools.product(*options)]
    if not first:
        return None
    bound = min(r.earliest for r in runs if r.reached)
    return [[bound if r.reached else r.latest for r in runs]]
