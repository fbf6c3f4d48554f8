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
    metric_direction,
    runs_frame,
    summarize,
    sweep_axes,
    test_metric,
)
from lossbench.report.problems import Across, across_problems, problem_axes, problem_labels
from lossbench.report.values import searched_axes, shorten, translate
from lossbench.tracking.records import SweepRecord, load_sweep

if TYPE_CHECKING:
    import pandas as pd

TOP_TRIALS = 3  # trials shown per group when an axis was searched
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
    higher: bool = True  # whether higher values of the metric are better
    searched: list[str] = field(default_factory=list)  # axes searched over a range (trials)
    warnings: list[str] = field(default_factory=list)  # shown first: failed audits

    @property
    def problems(self) -> list[str]:
        """The problems' labels, in the order the tables show them."""
        return list(dict.fromkeys(self.summary["problem"]))

    def shown(self, problem: str | None = None) -> pd.DataFrame:
        """The summary's rows the tables show (every group, or one problem's): with a searched
        axis, each group's :data:`TOP_TRIALS` best trials."""
        rows = self.summary if problem is None else self.summary[self.summary["problem"] == problem]
        if not self.searched:
            return rows
        others = ["problem", *(a for a in self.recipe_axes if a != self.nuisance)]
        return rows.groupby(others, sort=False, dropna=False).head(TOP_TRIALS)


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
    sweep's ``report`` settings (its target only for its own headline metric). ``problem``: the
    problem axes (comma-separated, or ``none``); by default the dataset, model and data_seed
    axes. Raises :class:`NotInStore` or
    ``ValueError`` naming the bad value and the choices."""
    record = load_sweep(tracking_uri or default_uri(), experiment, sweep)
    tags = record.tags
    headline = headline_metric(record)
    metric = metric or headline
    # the sweep's target is a value of its own headline metric, not of another one asked for
    if target is None and tags.get("lossbench.report.target") and metric == headline:
        target = float(tags["lossbench.report.target"])
    scientific = scientific or tags.get("lossbench.report.scientific")
    nuisance = nuisance or tags.get("lossbench.report.nuisance")
    problem = problem or tags.get("lossbench.report.problem")
    higher, direction_note = metric_direction(record, metric)
    frame = runs_frame(record, metric, target, higher)
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
    shown = shorten(frame, found)
    notes = [direction_note] if direction_note else []
    searched = searched_axes(frame, recipes, choices)
    if searched and (nuisance is None or nuisance in searched):
        # one run per value: group by the other axes, the searched one chosen on validation
        recipes, nuisance = _trials(frame, recipes, searched, notes)
    else:
        searched = []
    axes = [*problems, *recipes]
    frame["problem"] = problem_labels(frame, problems)
    summary = summarize(frame, axes, metric, target, higher)
    summary.insert(0, "problem", problem_labels(summary, problems))
    summary.insert(1, "recipe", [group_label(recipes, k) for k in zip(*(summary[a] for a in recipes), strict=True)]
                   if recipes else ["all runs"] * len(summary))  # fmt: skip
    summary = summary.sort_values("problem", kind="stable", ignore_index=True)
    if searched:
        summary = _by_best_trial(summary, [a for a in recipes if a != nuisance])
    notes += _single_recipe_notes(summary, problems)
    column = test_metric(metric) if test_metric(metric) in frame.columns else metric
    wanted = translate(_wanted(vs), shown) if vs is not None else None
    if searched:  # no tests between single trials: --vs names a group of the other axes
        others = [a for a in recipes if a != nuisance]
        if wanted is not None and not set(wanted) <= set(others):
            raise ValueError(f"--vs {vs!r}: {sorted(set(wanted) - set(others))} is not a recipe "
                             f"axis here; {nuisance} is searched; axes: {others}")  # fmt: skip
        baselines: dict[str, str] = {}
    else:
        baselines = _baselines(summary, axes, problems, vs, wanted, notes)
    comparisons = _comparisons(frame, recipes, column, baselines)
    fair = None
    if nuisance and (scientific or searched):
        fair = _fair(frame, axes, problems, scientific, nuisance, metric, higher)
    across = None
    if problems:
        across_axes = [a for a in recipes if a != nuisance] if fair is not None else recipes
        across_baseline = None
        if wanted is not None:
            across_baseline = group_label(across_axes, [wanted.get(a, "?") for a in across_axes])
        chosen = nuisance if fair is not None else None
        across = across_problems(frame, problems, across_axes, column, metric, target,
                                 across_baseline, chosen, fair, higher)  # fmt: skip
        notes += _across_notes(across)
    baseline = ""  # one baseline for every problem: --vs's recipe, or the one problem's best
    if vs is not None or not problems:
        baseline = next(iter(baselines.values()), str(summary["recipe"].iloc[0]))
    notes += _sparse_notes(frame, metric, target)
    return Report(record, metric, target, axes, frame, summary, comparisons, fair, baseline,
                  scientific, nuisance, [], problems, recipes, baselines, across, notes, higher,
                  searched, _audit_warnings(summary))  # fmt: skip


def _trials(
    frame: pd.DataFrame, recipes: list[str], searched: list[str], notes: list[str]
) -> tuple[list[str], str]:
    """Recipe axes and nuisance axis of a sweep with searched axes: the searched values (of
    several searched axes, each trial's values together, in a column of their own) become the
    nuisance axis, chosen per group of the other axes."""
    if len(searched) == 1:
        column = searched[0]
    else:
        column = " ".join(searched)
        frame[column] = [" ".join(f"{a}={frame.at[i, a]}" for a in searched) for i in frame.index]
    others = [a for a in recipes if a not in searched]
    by = ", ".join(others) or "all runs"
    notes.append(
        f"{', '.join(searched)} searched (no value run twice, as Optuna's trials): runs grouped "
        f"by {by}, each group's best trials shown, and its best {column} chosen on validation "
        "in the fair comparison; no tests between single trials"
    )
    return [*others, column], column


def _by_best_trial(summary: pd.DataFrame, others: list[str]) -> pd.DataFrame:
    """Trials of a group of the other axes together, the groups in the order of their best
    trial (the summary is sorted best first within each problem)."""
    key = summary[["problem", *others]].astype(str).agg(" ".join, axis=1)
    first = {k: i for i, k in reversed(list(enumerate(key)))}
    order = sorted(
        range(len(summary)), key=lambda i: (summary["problem"].iloc[i], first[key.iloc[i]], i)
    )
    return summary.iloc[order].reset_index(drop=True)


def _sparse_notes(frame: pd.DataFrame, metric: str, target: float | None) -> list[str]:
    """Where the metric was logged at some epochs only: what "best" and the time to target
    read, and the bound the logged epochs give."""
    sparse = [h for h in frame["history"] if len(h) > 1 and not h.dense]
    if not sparse:
        return []
    example = ", ".join(str(e) for e in sparse[0].epochs[:4])
    text = (
        f"{metric} was logged at some epochs only in {len(sparse)} of {len(frame)} runs (e.g. "
        f"epochs {example}, ...: tracking.log_every_n_epochs, trainer.check_val_every_n_epoch): "
        f"'best {metric}' is the best logged value (every epoch's best is at least as good)"
    )
    if target is not None:
        text += (
            "; a run's first epoch at the target lies after the logged epoch before the first "
            "logged one at it, so where they are apart the median epochs to target is shown as "
            "the range those epochs allow (low–high), with the widest CI they allow"
        )
    return [text]


def _audit_warnings(summary: pd.DataFrame) -> list[str]:
    """A loud line when runs failed the audit (a stacked member did not train as its plain
    model): how many, in which groups, and what to do."""
    if "audit failed" not in summary or not summary["audit failed"].any():
        return []
    failed = summary[summary["audit failed"] > 0]
    count = int(failed["audit failed"].sum())
    groups = "; ".join(f"{p}: {g}" if p != "all runs" else g
                       for p, g in zip(failed["problem"], failed["group"], strict=True))  # fmt: skip
    return [
        f"AUDIT FAILED: {count} run(s) did not train as their plain model alone (a coupling "
        f"between stacked members), in {groups}. Their numbers are not to be trusted: re-run "
        "them with hydra.launcher.stack=false rerun=true (README: How sweeps run fast)"
    ]


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
    wanted: dict[str, str] | None,
    notes: list[str],
) -> dict[str, str]:
    """Problem -> the recipe its groups are tested against: ``vs`` (``axis=value,...``, recipe
    axes only) or the problem's best group."""
    baselines: dict[str, str] = {}
    if vs is None or wanted is None:
        for p, rows in summary.groupby("problem", sort=False):
            if len(rows) > 1:
                baselines[str(p)] = str(rows["recipe"].iloc[0])
        return baselines
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
    scientific: str | None,
    nuisance: str,
    metric: str,
    higher: bool,
) -> pd.DataFrame:
    """The fair comparison within each problem."""
    for name in (n for n in (scientific, nuisance) if n):
        if name not in axes:
            raise ValueError(f"{name!r} is not an axis of this sweep; axes: {list(axes)}")
        if name in problems:
            raise ValueError(
                f"{name!r} is a problem axis: the fair comparison is made within each problem; "
                f"name recipe axes: {[a for a in axes if a not in problems]}"
            )
    fair = fair_comparison(frame, axes, scientific or "", nuisance, metric, higher)
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
