"""Building a report: read the sweep, split its axes into problem axes and recipe axes,
aggregate and test the groups within each problem, and compare the recipes across the
problems (:mod:`lossbench.report.problems`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.report.aggregate import (
    CHOICE_TAG,
    compare_groups,
    default_uri,
    fair_comparison,
    group_label,
    headline_metric,
    runs_frame,
    summarize,
    sweep_axes,
    test_metric,
)
from lossbench.report.problems import Across, across_problems, problem_axes, problem_labels
from lossbench.tracking.records import SweepRecord, load_sweep

if TYPE_CHECKING:
    import pandas as pd

COMPARISON_COLUMNS = ["problem", "group", "vs", "n", "n baseline", "test", "pairs", "diff",
                      "effect", "p", "p holm"]  # fmt: skip


@dataclass
class Report:
    """Everything the report shows, as DataFrames (the library entry point returns this).
    ``summary``, ``comparisons`` and ``fair`` have a ``problem`` column: groups are tested
    within their problem only; ``across`` compares the recipes across the problems (None
    when the sweep has one problem)."""

    sweep: SweepRecord
    metric: str
    target: float | None
    axes: list[str]  # problem axes first, then recipe axes
    runs: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    fair: pd.DataFrame | None = None
    baseline: str = ""  # the group tested against: --vs's, or the best of the one problem
    scientific: str | None = None
    nuisance: str | None = None
    files: list[Path] = field(default_factory=list)
    problem_axes: list[str] = field(default_factory=list)
    recipe_axes: list[str] = field(default_factory=list)
    baselines: dict[str, str] = field(default_factory=dict)  # problem -> recipe tested against
    across: Across | None = None
    notes: list[str] = field(default_factory=list)  # what was left out, and why

    @property
    def problems(self) -> list[str]:
        """The problems' labels, in the order the tables show them."""
        return list(dict.fromkeys(self.summary["problem"]))


def build_report(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    sweep: str | None = None,
    metric: str | None = None,
    target: float | None = None,
    vs: str | None = None,
    scientific: str | None = None,
    nuisance: str | None = None,
    problem: str | None = None,
) -> Report:
    """Read a sweep (the latest one by default) and aggregate it. Unset options come from the
    sweep's ``report`` settings. ``problem``: the problem axes (comma-separated, or ``none``);
    by default the dataset, model and data_seed axes. Raises :class:`NotInStore` or
    ``ValueError`` naming the bad value and the choices."""
    record = load_sweep(tracking_uri or default_uri(), experiment, sweep)
    tags = record.tags
    metric = metric or headline_metric(record)
    if target is None and tags.get("lossbench.report.target"):
        target = float(tags["lossbench.report.target"])
    scientific = scientific or tags.get("lossbench.report.scientific")
    nuisance = nuisance or tags.get("lossbench.report.nuisance")
    problem = problem or tags.get("lossbench.report.problem")
    frame = runs_frame(record, metric, target)
    available = sorted(k for r in record.runs for k in r.metrics)
    if metric not in frame.columns:
        raise ValueError(
            f"metric {metric!r} is not recorded in this sweep; metrics: {sorted(set(available))}"
        )
    choices = sorted(
        {
            k.removeprefix(CHOICE_TAG)
            for r in record.runs
            for k in r.tags
            if k.startswith(CHOICE_TAG)
        }
    )
    found = sweep_axes(frame, choices)
    problems = problem_axes(found, problem)
    recipes = [a for a in found if a not in problems]
    if problems and not recipes:
        raise ValueError(
            f"nothing to compare: every axis of this sweep ({', '.join(problems)}) is a problem "
            "axis, so each problem has one recipe. Vary a recipe axis too (optimizer=adam,sgd), "
            "or compare the problems' runs as groups with --problem none"
        )
    axes = [*problems, *recipes]
    frame["problem"] = problem_labels(frame, problems)
    summary = summarize(frame, axes, metric, target)
    summary.insert(0, "problem", problem_labels(summary, problems))
    summary.insert(1, "recipe", [group_label(recipes, k) for k in zip(*(summary[a] for a in recipes), strict=True)]
                   if recipes else ["all runs"] * len(summary))  # fmt: skip
    summary = summary.sort_values("problem", kind="stable", ignore_index=True)
    notes = _single_recipe_notes(summary, problems)
    column = test_metric(metric) if test_metric(metric) in frame.columns else metric
    baselines = _baselines(summary, axes, problems, vs, notes)
    comparisons = _comparisons(frame, recipes, column, baselines)
    fair = None
    if scientific and nuisance:
        fair = _fair(frame, axes, problems, scientific, nuisance, metric)
    across = None
    if problems:
        across_axes = [a for a in recipes if a != nuisance] if fair is not None else recipes
        across_baseline = None
        if vs is not None:
            wanted = _wanted(vs)
            across_baseline = group_label(across_axes, [wanted.get(a, "?") for a in across_axes])
        chosen = nuisance if fair is not None else None
        across = across_problems(frame, problems, across_axes, column, metric, target,
                                 across_baseline, chosen, fair)  # fmt: skip
        notes += _across_notes(across)
    baseline = ""  # one baseline for every problem: --vs's recipe, or the one problem's best
    if vs is not None or not problems:
        baseline = next(iter(baselines.values()), str(summary["recipe"].iloc[0]))
    return Report(record, metric, target, axes, frame, summary, comparisons, fair, baseline,
                  scientific, nuisance, [], problems, recipes, baselines, across, notes)  # fmt: skip


def _wanted(spec: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in spec.replace(" ", ",").split(",") if "=" in part)


def _single_recipe_notes(summary: pd.DataFrame, problems: Sequence[str]) -> list[str]:
    """A problem with one recipe has nothing to compare within it; where no problem has two,
    there is nothing to compare at all (ValueError)."""
    if not problems:
        return []
    counts = summary.groupby("problem", sort=False)["recipe"].nunique()
    single = [p for p, n in counts.items() if n < 2]
    if len(single) == len(counts):
        raise ValueError(
            f"nothing to compare: each problem ({', '.join(counts.index)}) has one recipe "
            f"({'; '.join(summary['group'])}); vary a recipe axis on the same problems"
        )
    return [
        f"problem {p} has one recipe ({summary.loc[summary['problem'] == p, 'recipe'].iloc[0]}): "
        "nothing to compare within it"
        for p in single
    ]


def _baselines(
    summary: pd.DataFrame,
    axes: Sequence[str],
    problems: Sequence[str],
    vs: str | None,
    notes: list[str],
) -> dict[str, str]:
    """Problem -> the recipe its groups are tested against: ``vs`` (``axis=value,...``, recipe
    axes only) or the problem's best group."""
    baselines: dict[str, str] = {}
    if vs is None:
        for p, rows in summary.groupby("problem", sort=False):
            if len(rows) > 1:
                baselines[str(p)] = str(rows["recipe"].iloc[0])
        return baselines
    wanted = _wanted(vs)
    unknown = set(wanted) - set(axes)
    if unknown or not wanted:
        raise ValueError(f"--vs {vs!r}: {sorted(unknown)} not among the sweep's axes {list(axes)}")
    named_problems = sorted(set(wanted) & set(problems))
    if named_problems:
        recipes = [a for a in axes if a not in problems]
        raise ValueError(
            f"--vs {vs!r}: {named_problems} is a problem axis; groups are tested only against "
            f"groups of the same problem, so name recipe axes only: {recipes}"
        )
    matched = 0
    for p, rows in summary.groupby("problem", sort=False):
        match = rows
        for axis, value in wanted.items():
            match = match[match[axis].astype(str) == value]
        if len(match) > 1:
            raise ValueError(
                f"--vs {vs!r} matches {len(match)} groups; groups: {'; '.join(rows['recipe'])}"
            )
        if len(match) == 0:
            if problems:
                notes.append(f"--vs {vs}: no such group on problem {p}: its groups are not tested")
            continue
        matched += 1
        if len(rows) > 1:
            baselines[str(p)] = str(match["recipe"].iloc[0])
    if not matched:
        raise ValueError(f"--vs {vs!r} matches 0 groups; groups: {'; '.join(summary['group'])}")
    return baselines


def _comparisons(
    frame: pd.DataFrame, recipes: Sequence[str], column: str, baselines: dict[str, str]
) -> pd.DataFrame:
    """Each problem's groups against its baseline (never a group of another problem)."""
    import pandas as pd

    tables = []
    for problem, baseline in baselines.items():
        table = compare_groups(frame[frame["problem"] == problem], recipes, column, baseline)
        table.insert(0, "problem", problem)
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return pd.concat(tables, ignore_index=True)


def _fair(
    frame: pd.DataFrame,
    axes: Sequence[str],
    problems: Sequence[str],
    scientific: str,
    nuisance: str,
    metric: str,
) -> pd.DataFrame:
    """The fair comparison within each problem."""
    for name in (scientific, nuisance):
        if name not in axes:
            raise ValueError(f"{name!r} is not an axis of this sweep; axes: {list(axes)}")
        if name in problems:
            raise ValueError(
                f"{name!r} is a problem axis: the fair comparison is made within each problem; "
                f"name recipe axes: {[a for a in axes if a not in problems]}"
            )
    fair = fair_comparison(frame, axes, scientific, nuisance, metric)
    if fair.empty:
        return fair
    fair.insert(0, "problem", problem_labels(fair, problems))
    return fair.sort_values("problem", kind="stable", ignore_index=True)


def _across_notes(across: Across) -> list[str]:
    """What the across-problem comparison left out."""
    total = len(across.scores)
    if not across.dropped:
        return []
    lacking = "; ".join(f"{p} lacks {', '.join(r)}" for p, r in across.dropped.items())
    return [
        f"{len(across.dropped)} of {total} problems dropped from the ranks and tests across "
        f"problems (they use complete blocks only: every recipe with a finished run): {lacking}"
    ]


def aggregate(**kwargs: Any) -> pd.DataFrame:
    """The aggregated table of a sweep as a DataFrame, one row per group (with its ``problem``
    and ``recipe``), for notebooks; takes the options of :func:`build_report`
    (``experiment=``, ``sweep=``, ``metric=``, ``target=``, ``problem=``, ...)."""
    return build_report(**kwargs).summary


def problems_table(**kwargs: Any) -> pd.DataFrame:
    """The recipes compared across the problems as a DataFrame, one row per recipe, best mean
    rank first (:meth:`Across.table`); takes the options of :func:`build_report`. Raises
    ValueError when the sweep has one problem."""
    built = build_report(**kwargs)
    if built.across is None:
        raise ValueError(
            f"this sweep has one problem: none of its axes {built.axes} is a problem axis "
            "(dataset, model, data_seed); name one with problem=..."
        )
    return built.across.table()
