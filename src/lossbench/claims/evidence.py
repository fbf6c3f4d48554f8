"""What judging reads and writes: each run's numbers (:class:`RunData`), the number a run
contributes to a group (:func:`run_value`, :func:`group_values`), and an assertion's outcome
(:class:`Evidence`). No torch, Lightning or Hydra here: judging is a light step."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from lossbench.analysis import stats
from lossbench.claims.spec import Assertion, Claim, ClaimError, RunKey, Selector, job_key

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"


@dataclass
class RunData:
    """What evaluation reads of one run."""

    outcome: str  # finished, diverged, failed, killed, missing
    metrics: dict[str, float]
    histories: dict[str, list[float]]
    max_epochs: int
    run_id: str | None = None
    audit: str | None = None  # lossbench.audit: passed, failed, skipped; None: not audited


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
    nuisance: str | None = None  # the claim's nuisance axis, when this assertion chose on it
    chosen: dict[str, str] = field(default_factory=dict)  # group -> the nuisance value chosen
    selection: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> value -> mean
    notes: list[str] = field(default_factory=list)  # about the selection: grid edges, divergence


def run_value(run: RunData, selector: Selector, name: str | None = None) -> float | None:
    """The number a run contributes; ``None`` if it contributes none (failed, missing)."""
    name = name or selector.name
    higher = stats.higher_is_better(name)
    if run.outcome == "diverged":
        return (-math.inf if higher else math.inf) if selector.diverged == "worst" else None
    if run.outcome != "finished":
        return None
    if selector.needs_history and name == selector.name:
        history = [v for v in run.histories.get(name, []) if math.isfinite(v)]
        if not history:
            return None
        if selector.ratio == "first/last":
            return history[0] / history[-1] if history[-1] else math.inf
        pick = {"first": history[0], "last": history[-1], "min": min(history), "max": max(history)}
        pick["best"] = max(history) if higher else min(history)
        return pick[selector.at]
    value = run.metrics.get(name)
    if value is None:
        return None
    if name == "target/epochs" and math.isnan(value):  # censored: at least max_epochs + 1
        return float(run.max_epochs + 1)
    return float(value)


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


def compare_values(
    a: Mapping[int, float], b: Mapping[int, float], kind: str, alpha: float, min_effect: float
) -> PairTest:
    """Test "a less than b" (``kind`` less) or "a greater than b" (greater): paired by seed or
    Welch (:func:`lossbench.analysis.stats.compare`); a Mann-Whitney U test where diverged runs rank
    worst (infinite values). REPRODUCED: the claimed direction, p < alpha and |difference| ≥
    min_effect; NOT REPRODUCED: the opposite is significant, or the difference is significant
    but smaller than min_effect; else INCONCLUSIVE."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return PairTest(INCONCLUSIVE, "fewer than two runs in a group", math.nan, math.nan, False)
    values = [*a.values(), *b.values()]
    if any(math.isinf(v) for v in values):  # diverged runs ranked worst: a rank test
        test = st.mannwhitneyu(list(a.values()), list(b.values()), alternative="two-sided")
        auc = test.statistic / (len(a) * len(b))
        effect, p = float(2 * auc - 1), float(test.pvalue)  # rank-biserial: > 0 when a > b
        diff = effect
        magnitude_ok = True
    else:
        c = stats.compare(a, b)
        effect, p, diff = c.effect, c.p_value, c.diff
        magnitude_ok = abs(diff) >= min_effect
    claimed = diff < 0 if kind == "less" else diff > 0
    supports = claimed and magnitude_ok
    if math.isnan(p) or p >= alpha:
        return PairTest(INCONCLUSIVE, f"p = {p:.2g} ≥ alpha = {alpha:g}", effect, p, supports)
    if not claimed:
        return PairTest(NOT_REPRODUCED, "the opposite is significant", effect, p, False)
    if not magnitude_ok:
        why = f"significant but |difference| {abs(diff):.3g} < min_effect {min_effect:g}"
        return PairTest(NOT_REPRODUCED, why, effect, p, False)
    return PairTest(REPRODUCED, f"p = {p:.2g} < {alpha:g}", effect, p, True)
