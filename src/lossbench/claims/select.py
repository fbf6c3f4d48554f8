"""Best over a nuisance axis: a claim's ``nuisance: {axis, select, mode}`` names an axis (an
lr grid, say) whose value is chosen for each compared group instead of compared: the value
whose runs have the best mean ``select`` metric on the validation split. The group is then
judged on the assertion's metric, which may not be a validation metric.

Ranking (:func:`lossbench.analysis.stats.rank_settings`, as the report's fair comparison): a value
where any run diverged ranks below every value where none did; then the better mean; ties keep
the grid's order. The choice is noted when it is at an edge of the grid (the grid may be too
narrow) and when divergence decided it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lossbench.analysis import stats, survival
from lossbench.claims.evidence import (
    INCONCLUSIVE,
    Evidence,
    Runs,
    group_reaches,
    group_runs,
    group_values,
    run_value,
)
from lossbench.claims.spec import (
    TIME_METRICS,
    Assertion,
    Claim,
    ClaimError,
    Nuisance,
    Selector,
    check_direction,
)

NUISANCE_KEYS = ("axis", "select", "mode")
SELECT_KEYS = ("name", "at")
FORMAT = "nuisance: {axis: <an axis>, select: <a val/ metric>, mode: min|max}"


def parse_nuisance(
    value: Any,
    axes: Mapping[str, Mapping[str, list[str]]],
    where: str,
    overrides: list[str] | None = None,
) -> Nuisance:
    """Read and check a claim's ``nuisance`` (``where`` names the file in errors;
    ``overrides``: the claim's, where a metric of its own may be defined)."""
    if not isinstance(value, Mapping):
        raise ClaimError(f"{where}: expected {FORMAT}, got {value!r}")
    unknown = sorted(set(value) - set(NUISANCE_KEYS))
    if unknown:
        raise ClaimError(f"{where}: unknown nuisance keys {unknown}; valid: {list(NUISANCE_KEYS)}")
    axis = str(value.get("axis"))
    if axis not in axes:
        raise ClaimError(
            f"{where}: nuisance axis {value.get('axis')!r} is not an axis of the claim; "
            f"axes: {', '.join(axes) or 'none'}"
        )
    if len(axes[axis]) < 2:
        raise ClaimError(f"{where}: nuisance axis {axis!r} has one value; a grid needs two or more")
    raw = value.get("select")
    if raw is None:
        raise ClaimError(f"{where}: nuisance needs select: <a val/ metric> ({FORMAT})")
    if isinstance(raw, Mapping) and set(raw) - set(SELECT_KEYS):
        raise ClaimError(
            f"{where}: nuisance select takes {{name, at}}; got {sorted(raw)} "
            "(diverged runs always lose the selection)"
        )
    select = Selector.parse(raw, f"{where}: nuisance select")
    if not select.name.startswith("val/"):
        raise ClaimError(
            f"{where}: nuisance select {select.name!r} is not on the validation split: select on "
            "a val/ metric (val/loss, val/acc, ...) and judge on another split (test/, train/)"
        )
    mode = value.get("mode")
    higher = check_direction(select.name, mode, overrides or [], f"{where}: nuisance")
    return Nuisance(axis, select, higher, mode)


def selects(claim: Claim, assertion: Assertion) -> bool:
    """Whether the assertion's groups are judged at a chosen nuisance value: the claim has a
    nuisance axis and the assertion's metric does not spread over that axis (then it reads
    every value and chooses none)."""
    return (
        claim.nuisance is not None
        and assertion.metric is not None
        and assertion.metric.spread_over != claim.nuisance.axis
    )


@dataclass
class Choice:
    """The nuisance value chosen for one group, and what the choice saw."""

    setting: str
    means: dict[str, float]  # value -> mean selection metric over its finished runs (NaN: none)
    diverged: dict[str, int]  # value -> diverged runs
    runs: dict[str, int]  # value -> runs
    notes: list[str] = field(default_factory=list)
    higher: bool = False  # whether higher values of the selection metric won


def choose(claim: Claim, ref: str, runs: Runs) -> Choice:
    """The nuisance value for group ``ref``: fewest diverged runs, then the best mean of the
    selection metric (over seeds), then the grid's order."""
    nuisance = claim.nuisance
    assert nuisance is not None
    grid = list(claim.axes[nuisance.axis])
    wanted = claim.resolve(ref)
    found: dict[str, tuple[list[float], int]] = {}
    counts: dict[str, int] = {}
    for setting in grid:
        group = group_runs(claim, {**wanted, nuisance.axis: setting}, runs)
        values = [run_value(run, nuisance.select) for _, run in group if run.outcome == "finished"]
        diverged = sum(run.outcome == "diverged" for _, run in group)
        found[setting] = ([v for v in values if v is not None], diverged)
        counts[setting] = len(group)
    higher = nuisance.higher
    if higher is None:  # the metric is the claim's own: as its runs recorded it
        declared = {
            k: v for _, run in group_runs(claim, wanted, runs) for k, v in run.directions.items()
        }
        higher = check_direction(
            nuisance.select.name, nuisance.mode, [], f"{claim.path.name}: nuisance", declared
        )
    ranked = stats.rank_settings(found, bool(higher))
    means = {s: stats.t_interval(v).mean for s, (v, _) in found.items()}
    diverged = {s: d for s, (_, d) in found.items()}
    choice = Choice(ranked[0], means, diverged, counts, higher=bool(higher))
    choice.notes = _notes(nuisance, ref, grid, choice)
    return choice


def _notes(nuisance: Nuisance, ref: str, grid: list[str], choice: Choice) -> list[str]:
    """What a reader of the verdict should know about a choice."""
    axis, best = nuisance.axis, choice.setting
    notes = []
    if all(math.isnan(m) for m in choice.means.values()):
        if all(choice.diverged[s] == choice.runs[s] > 0 for s in grid):
            return [f"{ref}: every run diverged at every {axis}"]
        return [f"{ref}: no {axis} has a finished run"]
    if choice.diverged[best]:
        notes.append(
            f"{ref}: diverged runs at every {axis} that has finished runs; {axis}={best} has "
            f"the fewest ({choice.diverged[best]}/{choice.runs[best]})"
        )
    sign = -1 if choice.higher else 1
    for s in grid:
        beats = sign * choice.means[s] < sign * choice.means[best]  # NaN compares False
        if choice.diverged[s] > choice.diverged[best] and beats:
            notes.append(
                f"{ref}: {axis}={s} has a better mean {nuisance.select.name} but "
                f"{choice.diverged[s]}/{choice.runs[s]} runs diverged: ranked below"
            )
    edge = _edge(grid, best)
    if edge:
        notes.append(f"{ref}: {axis}={best} is the grid's {edge}: the grid may be too narrow")
    return notes


def _edge(grid: list[str], setting: str) -> str | None:
    """Which edge of the grid a value is at: by number when every value is a number, else by
    the order of the claim file."""
    try:
        numbers = {s: float(s) for s in grid}
    except ValueError:
        first, last = grid[0], grid[-1]
        return "first value" if setting == first else "last value" if setting == last else None
    ordered = sorted(grid, key=numbers.__getitem__)
    if setting == ordered[0]:
        return "smallest value"
    return "largest value" if setting == ordered[-1] else None


def measure(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """Evidence that is still INCONCLUSIVE, with each group's values by seed, outcomes and
    mean with its 95% CI (at the nuisance value chosen for it, where the claim has one):
    where every kind that reads runs starts."""
    assert assertion.metric is not None
    evidence = Evidence(assertion, INCONCLUSIVE, "")
    for ref in assertion.groups:
        fixed = {}
        if selects(claim, assertion):
            assert claim.nuisance is not None
            choice = choose(claim, ref, runs)
            fixed = {claim.nuisance.axis: choice.setting}
            evidence.nuisance = claim.nuisance.axis
            evidence.chosen[ref], evidence.selection[ref] = choice.setting, choice.means
            evidence.notes += choice.notes
        values, evidence.counts[ref] = group_values(claim, ref, assertion.metric, runs, fixed=fixed)
        evidence.values[ref] = values
        evidence.groups[ref] = stats.t_interval([v for v in values.values() if math.isfinite(v)])
        if assertion.metric.name in TIME_METRICS:
            reaches = group_reaches(claim, ref, assertion.metric, runs, fixed)
            evidence.reaches[ref] = reaches
            evidence.times[ref] = survival.time_to_target(reaches)
    evidence.n = min(len(v) for v in evidence.values.values())
    evidence.notes += history_notes(claim, assertion.metric, runs)
    return evidence


def history_notes(claim: Claim, selector: Selector, runs: Runs) -> list[str]:
    """Where a history read by ``at``/``ratio`` was logged at some epochs only, what the
    logged epochs give: the first logged epoch's value for ``first``, and for min, max and
    best the extreme of the logged values, a bound on every epoch's."""
    if not selector.needs_history:
        return []
    histories = [
        run.histories[selector.name]
        for key, run in runs.items()
        if key[0] == claim.id and selector.name in run.histories
    ]
    sparse = [h for h in histories if len(h) and not h.dense]
    if not sparse:
        return []
    where = (
        f"{selector.label()}: {len(sparse)} of {len(histories)} runs logged it at some epochs only"
    )
    if selector.ratio or selector.at == "first":
        starts = sorted({h.epochs[0] for h in sparse})
        if starts != [1]:
            return [
                f"{where}; the first logged epoch ({', '.join(map(str, starts))}) is read, not epoch 1"
            ]
        return []
    if selector.at == "last":
        return []
    bound = {"min": "at most", "max": "at least", "best": "at least as good as"}[selector.at]
    return [
        f"{where}: the {selector.at} over the logged epochs is read; every epoch's is {bound} it"
    ]


def check_judged(claim: Claim, assertion: Assertion, names: list[str], where: str) -> None:
    """With a nuisance axis, an assertion that chooses on it must judge on another split than
    the selection, and its groups must leave the nuisance axis to the choice."""
    if not selects(claim, assertion):
        return
    nuisance = claim.nuisance
    assert nuisance is not None
    for name in names:
        if name.startswith("val/"):
            raise ClaimError(
                f"{where}: judges {name!r}, on the validation split, where the nuisance "
                f"{nuisance.axis!r} is selected ({nuisance.select.name}); judge on another split "
                "(test/..., train/...)"
            )
    for ref in assertion.groups:
        if nuisance.axis in claim.resolve(ref):
            raise ClaimError(
                f"{where}: group {ref!r} names the nuisance axis {nuisance.axis!r}, whose value "
                f"is chosen per group ({nuisance.label()}); name the other axes only"
            )
