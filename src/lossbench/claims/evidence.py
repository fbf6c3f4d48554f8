"""What judging reads and writes: each run's numbers (:class:`RunData`), the number a run
contributes to a group (:func:`run_value`, :func:`group_values`), when it reached a target
(:func:`run_reach`), and an assertion's outcome (:class:`Evidence`). No torch, Lightning or
Hydra here: judging is a light step."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lossbench.analysis import stats, survival
from lossbench.claims.spec import (
    TIME_METRICS,
    Assertion,
    Claim,
    ClaimError,
    RunKey,
    Selector,
    job_key,
)
from lossbench.problem import directions
from lossbench.tracking.records import History

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"


@dataclass
class RunData:
    """What evaluation reads of one run."""

    outcome: str  # finished, diverged, failed, killed, missing
    metrics: dict[str, float]
    histories: dict[str, History]  # a list of values is taken as logged at every epoch
    max_epochs: int
    run_id: str | None = None
    audit: str | None = None  # lossbench.audit: passed, failed, skipped; None: not audited
    directions: dict[str, bool] = field(default_factory=dict)  # its metrics: entries' (recorded)
    val_every: int = 1  # trainer.check_val_every_n_epoch: epochs between two validations

    def __post_init__(self) -> None:
        self.histories = {
            name: h if isinstance(h, History) else History.every_epoch(h)
            for name, h in self.histories.items()
        }


Runs = Mapping[RunKey, RunData]


@dataclass
class Evidence:
    """One assertion's outcome and its numbers."""

    assertion: Assertion
    verdict: str
    why: str
    groups: dict[str, stats.Interval] = field(default_factory=dict)  # group -> mean and CI
    effect: float = math.nan
    p_value: float = math.nan
    n: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # group -> outcomes
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # group -> seed -> value
    effect_kind: str = (
        ""  # what the effect is: a difference in metric units, or a standardized size
    )
    times: dict[str, survival.TimeToTarget] = field(default_factory=dict)  # group -> time to target
    reaches: dict[str, list[survival.Reach]] = field(default_factory=dict)  # group -> its runs
    nuisance: str | None = None  # the claim's nuisance axis, when this assertion chose on it
    chosen: dict[str, str] = field(default_factory=dict)  # group -> the nuisance value chosen
    selection: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> value -> mean
    notes: list[str] = field(default_factory=list)  # about the selection: grid edges, divergence


def higher_of(run: RunData, name: str, why: str) -> bool:
    """Whether higher values of ``name`` are better, as the run recorded it; ClaimError when
    the metric has no direction (``why``: what needs one)."""
    higher = directions.higher_is_better(name, run.directions)
    if higher is None:
        raise ClaimError(
            f"{why} reads which end of {name!r} is best, and it has none: read at: min or max, "
            f"or declare it (metrics.<name>.{directions.KEY})"
        )
    return higher


def run_value(run: RunData, selector: Selector, name: str | None = None) -> float | None:
    """The number a run contributes; ``None`` if it contributes none (failed, missing). A
    history is read by the epochs it was logged at (``at: first`` is the first logged one)."""
    name = name or selector.name
    if run.outcome == "diverged":
        if selector.diverged != "worst":
            return None
        return -math.inf if higher_of(run, name, "diverged: worst") else math.inf
    if run.outcome != "finished":
        return None
    if selector.needs_history and name == selector.name:
        history = run.histories.get(name, History())
        values = [v for v in history.values if math.isfinite(v)]
        if not values:
            return None
        if selector.ratio == "first/last":
            return values[0] / values[-1] if values[-1] else math.inf
        if selector.at == "best":
            return max(values) if higher_of(run, name, "at: best") else min(values)
        pick = {"first": values[0], "last": values[-1], "min": min(values), "max": max(values)}
        return pick[selector.at]
    if name in TIME_METRICS:
        reach = run_reach(run, name)
        # as one number (proportions): a run that never reached it counts one epoch past its end
        if reach is None:
            return None
        if reach.reached:
            return reach.latest
        return reach.latest + (reach.resolution if name == "target/seconds" else 1.0)
    value = run.metrics.get(name)
    return None if value is None else float(value)


def run_reach(run: RunData, name: str, diverged: str = "exclude") -> survival.Reach | None:
    """When a run reached ``diagnostics.target`` (``target/epochs``; ``target/seconds``: those
    epochs times its seconds per epoch). Not reached: censored at its planned epochs
    (``max_epochs``). With validation every k epochs, the first epoch reaching it may lie up
    to k - 1 epochs before. A diverged run counts as not reaching it with ``diverged: worst``;
    left out otherwise, as runs without a result."""
    if run.outcome not in ("finished", "diverged") or (
        run.outcome == "diverged" and diverged != "worst"
    ):
        return None
    epochs = run.metrics.get("target/epochs", math.nan) if run.outcome == "finished" else math.nan
    if math.isfinite(epochs):
        reach = survival.Reach(True, float(epochs), max(1.0, float(epochs) - run.val_every + 1))
    else:
        reach = survival.Reach(False, float(run.max_epochs), float(run.max_epochs))
    if name == "target/seconds":
        per_epoch = run.metrics.get("time/epoch_seconds", math.nan)
        if not math.isfinite(per_epoch):
            return None
        return reach.scaled(per_epoch)
    return reach


def group_runs(claim: Claim, labels: Mapping[str, str], runs: Runs) -> list[tuple[int, RunData]]:
    """(seed, run) of every job of the claim whose axes take these labels."""
    return [
        (seed, runs[job_key(claim, chosen, seed)])
        for chosen, seed, _ in claim.jobs()
        if all(chosen[a] == label for a, label in labels.items())
    ]


def group_values(
    claim: Claim,
    ref: str,
    selector: Selector,
    runs: Runs,
    name: str | None = None,
    fixed: Mapping[str, str] | None = None,
) -> tuple[dict[int, float], Counter[str]]:
    """Seed -> value for a group, and the outcomes of its runs; ``fixed`` pins more axes
    (the nuisance value chosen for the group)."""
    by_seed: dict[int, list[float | None]] = {}
    outcomes: Counter[str] = Counter()
    for seed, run in group_runs(claim, {**claim.resolve(ref), **(fixed or {})}, runs):
        outcomes[run.outcome] += 1
        by_seed.setdefault(seed, []).append(run_value(run, selector, name))
    values: dict[int, float] = {}
    for seed, found in by_seed.items():
        if selector.spread_over is not None:
            finite = [v for v in found if v is not None and math.isfinite(v)]
            if len(finite) == len(found) and len(finite) > 1:
                values[seed] = float(np.std(finite, ddof=1))
        elif len(found) > 1:
            raise ClaimError(
                f"{claim.path.name}: group {ref!r} has {len(found)} runs per seed; name every axis "
                f"(axis=label,...) or give the metric a spread_over"
            )
        elif found[0] is not None:
            values[seed] = found[0]
    return values, outcomes


def group_reaches(
    claim: Claim, ref: str, selector: Selector, runs: Runs, fixed: Mapping[str, str] | None = None
) -> list[survival.Reach]:
    """When each run of a group reached the target of a time metric (see :func:`run_reach`)."""
    found = [
        run_reach(run, selector.name, selector.diverged)
        for _, run in group_runs(claim, {**claim.resolve(ref), **(fixed or {})}, runs)
    ]
    return [r for r in found if r is not None]


@dataclass(frozen=True)
class PairTest:
    """ "a less/greater than b" on values keyed by seed: the verdict at alpha, why, the effect,
    the two-sided p, and whether the difference goes the claimed way by at least min_effect
    (whatever p says)."""

    verdict: str
    why: str
    effect: float
    p_value: float
    supports: bool
    effect_kind: str = ""


def compare_values(
    a: Mapping[int, float], b: Mapping[int, float], kind: str, alpha: float, min_effect: float
) -> PairTest:
    """Test "a less than b" (``kind`` less) or "a greater than b" (greater): paired by seed or
    Welch (:func:`lossbench.analysis.stats.compare`); a Mann-Whitney U test where diverged runs rank
    worst (infinite values). REPRODUCED: the claimed direction, p < alpha and |difference| ≥
    min_effect; NOT REPRODUCED: the opposite is significant, or the difference is significant
    but smaller than min_effect; else INCONCLUSIVE. The effect: Cohen's d_z (paired) or d
    (Welch), or the rank-biserial correlation: standardized sizes, labelled in effect_kind."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return PairTest(INCONCLUSIVE, "fewer than two runs in a group", math.nan, math.nan, False)
    values = [*a.values(), *b.values()]
    if any(math.isinf(v) for v in values):  # diverged runs ranked worst: a rank test
        test = st.mannwhitneyu(list(a.values()), list(b.values()), alternative="two-sided")
        auc = test.statistic / (len(a) * len(b))
        effect, p = float(2 * auc - 1), float(test.pvalue)  # rank-biserial: > 0 when a > b
        diff, effect_kind = effect, "rank-biserial r"
        magnitude_ok = True
    else:
        c = stats.compare(a, b)
        effect, p, diff = c.effect, c.p_value, c.diff
        effect_kind = "Cohen's d_z" if c.paired else "Cohen's d"
        magnitude_ok = abs(diff) >= min_effect
    claimed = diff < 0 if kind == "less" else diff > 0
    return _verdict(claimed, magnitude_ok, abs(diff), p, alpha, min_effect, effect, effect_kind)


def _verdict(
    claimed: bool,
    magnitude_ok: bool,
    size: float,
    p: float,
    alpha: float,
    min_effect: float,
    effect: float,
    effect_kind: str,
) -> PairTest:
    supports = claimed and magnitude_ok
    if math.isnan(p) or p >= alpha:
        why = f"p = {p:.2g} ≥ alpha = {alpha:g}"
        return PairTest(INCONCLUSIVE, why, effect, p, supports, effect_kind)
    if not claimed:
        return PairTest(
            NOT_REPRODUCED, "the opposite is significant", effect, p, False, effect_kind
        )
    if not magnitude_ok:
        why = f"significant but |difference| {size:.3g} < min_effect {min_effect:g}"
        return PairTest(NOT_REPRODUCED, why, effect, p, False, effect_kind)
    return PairTest(REPRODUCED, f"p = {p:.2g} < {alpha:g}", effect, p, True, effect_kind)


def compare_times(
    a: Sequence[survival.Reach],
    b: Sequence[survival.Reach],
    kind: str,
    alpha: float,
    min_effect: float,
    unit: str = "epochs",
) -> PairTest:
    """Test "a reaches the target in less (``kind`` less) or more time than b" with the
    log-rank test (SciPy's ``logrank`` on ``CensoredData``: runs that never reached it count,
    censored). The effect: the difference of the Kaplan–Meier medians, a - b, in ``unit``;
    ``min_effect`` applies to it. Where the logged epochs leave the first ones open the test
    uses the first logged epochs at the target."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return PairTest(INCONCLUSIVE, "fewer than two runs in a group", math.nan, math.nan, False)
    if not any(r.reached for r in [*a, *b]):
        return PairTest(INCONCLUSIVE, "no run reached the target", math.nan, math.nan, False)

    def data(runs: Sequence[survival.Reach]) -> st.CensoredData:
        return st.CensoredData(
            uncensored=[r.latest for r in runs if r.reached],
            right=[r.latest for r in runs if not r.reached],
        )

    test = st.logrank(data(a), data(b))
    z, p = float(test.statistic), float(test.pvalue)  # z > 0: a reaches it sooner than expected
    median_a, median_b = survival.time_to_target(a).median, survival.time_to_target(b).median
    diff = median_a - median_b if not (math.isinf(median_a) and math.isinf(median_b)) else math.nan
    claimed = z > 0 if kind == "less" else z < 0
    magnitude_ok = min_effect == 0 or abs(diff) >= min_effect  # NaN: both medians unreached
    return _verdict(claimed, magnitude_ok, abs(diff), p, alpha, min_effect, diff,
                    f"Δ median, {unit}")  # fmt: skip


def pair_test(
    evidence: Evidence, a: str, b: str, kind: str, alpha: float, min_effect: float
) -> PairTest:
    """ "a less/greater than b" on the evidence's values: the seeds' values (t-tests), or for a
    time to target the runs' times, censored where not reached (log-rank)."""
    assert evidence.assertion.metric is not None
    name = evidence.assertion.metric.name
    if name in TIME_METRICS:
        unit = "epochs" if name == "target/epochs" else "seconds"
        return compare_times(
            evidence.reaches[a], evidence.reaches[b], kind, alpha, min_effect, unit
        )
    return compare_values(evidence.values[a], evidence.values[b], kind, alpha, min_effect)
