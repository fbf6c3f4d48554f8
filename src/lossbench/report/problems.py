"""A sweep as a suite of problems: which of its axes make the problem (the data and the model)
and which the recipe, and the recipes compared across the problems (mean ranks, Friedman and
post-hoc tests, wins/ties/losses against a baseline, a performance profile). Within a problem
the report compares groups as it always did; two problems are never compared with each other.
The statistics are :mod:`lossbench.analysis.ranking`'s."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossbench.analysis import ranking, stats, survival
from lossbench.problem import directions
from lossbench.report.aggregate import WITH_RESULT, by_seed, group_label, groups_of

if TYPE_CHECKING:
    import pandas as pd

PROBLEM_GROUPS = ("dataset", "model")  # their choices and their params (dataset.*, model.*)
PROBLEM_KEYS = ("data_seed",)  # the split, where a sweep varies it on purpose
ALPHA = 0.05
PROFILE_TAUS = (1.0, 1.25, 1.5, 2.0, 4.0)  # the performance profile's table; the plot has all


def is_problem_axis(axis: str) -> bool:
    """Whether an axis belongs to the problem half of a run: the dataset (its choice or any
    ``dataset.*`` param), the model (likewise) or ``data_seed``."""
    return axis in PROBLEM_KEYS or axis.split(".", 1)[0] in PROBLEM_GROUPS


def parse_names(text: str) -> list[str]:
    """``dataset,model`` (or ``[dataset, model]``, as a list in a config becomes a tag) as names."""
    cleaned = text.strip().strip("[]")
    return [part.strip().strip("'\"") for part in cleaned.split(",") if part.strip().strip("'\"")]


def problem_axes(axes: Sequence[str], spec: str | None = None) -> list[str]:
    """The problem axes among a sweep's axes: those named by ``spec`` (``--problem`` or
    ``report.problem``: axes separated by commas, or ``none``), else every problem axis
    (:func:`is_problem_axis`). An axis the sweep does not have raises ValueError naming its
    axes."""
    if not spec:
        return [a for a in axes if is_problem_axis(a)]
    names = parse_names(spec)
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in axes]
    if unknown or not names:
        raise ValueError(
            f"problem axis {unknown or spec!r} is not an axis of this sweep; its axes: "
            f"{list(axes)} (--problem AXIS[,AXIS], or none for one problem)"
        )
    return [a for a in axes if a in names]


def problem_labels(frame: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """Each run's problem label (``dataset=iris``), or ``all runs`` when there is one problem."""
    if not axes:
        return ["all runs"] * len(frame)
    return [group_label(axes, key) for key in zip(*(frame[a] for a in axes), strict=True)]


@dataclass
class Across:
    """The recipes compared across the problems, as DataFrames: problems are rows, recipes
    columns. Ranks and tests use complete problems only (every recipe has a finished run)."""

    problem_axes: list[str]
    recipe_axes: list[str]  # what a recipe is here (the nuisance axis left out when chosen)
    column: str  # the metric compared on each problem (test, else the headline)
    higher: bool
    scores: pd.DataFrame  # mean of column over each cell's finished runs; every problem
    dropped: dict[str, list[str]]  # problem left out -> the recipes it lacks
    ranks: pd.DataFrame  # complete problems; 1 = best
    mean_ranks: pd.Series  # best first
    omnibus: ranking.Omnibus
    posthoc: pd.DataFrame | None  # recipe x recipe p-values: Nemenyi (or Wilcoxon for two)
    critical_difference: float  # Nemenyi's, of mean ranks, at ALPHA
    baseline: str
    wilcoxon: pd.DataFrame  # each recipe vs the baseline over problems, Holm-adjusted
    outcomes: pd.DataFrame  # complete problems x recipes: win, tie, loss vs the baseline
    times: pd.DataFrame | None = None  # epochs to target (Kaplan-Meier median; inf: not reached)
    time_cells: dict[tuple[str, str], survival.TimeToTarget] | None = None  # (problem, recipe)
    profile: pd.DataFrame | None = None  # recipes x τ: share of problems within τ × the best
    chosen: pd.DataFrame | None = None  # problems x recipes: the nuisance value chosen
    nuisance: str | None = None
    recipe_values: dict[str, dict[str, Any]] | None = None  # recipe -> its axes' values
    alpha: float = ALPHA

    @property
    def problems(self) -> list[str]:
        """The complete problems, those the ranks and tests use."""
        return list(self.ranks.index)

    def tally(self, recipe: str) -> tuple[int, int, int]:
        """(wins, ties, losses) of a recipe against the baseline over the complete problems."""
        if recipe not in self.outcomes.columns:
            return 0, 0, 0
        return ranking.tally(list(self.outcomes[recipe]))

    def table(self) -> pd.DataFrame:
        """One row per recipe, best mean rank first: its axes, mean rank, each problem's score
        and rank, wins/ties/losses against the baseline and the post-hoc p-values against it."""
        import pandas as pd

        rows = []
        for recipe, mean_rank in self.mean_ranks.items():
            row: dict[str, Any] = dict((self.recipe_values or {}).get(recipe, {}))
            row.update({"recipe": recipe, "mean rank": float(mean_rank)})
            for problem in self.problems:
                row[f"{problem} {self.column}"] = float(self.scores.loc[problem, recipe])
                row[f"{problem} rank"] = float(self.ranks.loc[problem, recipe])
            wins, ties, losses = self.tally(recipe)
            row.update({"wins": wins, "ties": ties, "losses": losses})
            test = self.wilcoxon.set_index("recipe")
            row["p wilcoxon holm"] = (
                float(test.loc[recipe, "p holm"]) if recipe in test.index else math.nan
            )
            row["p posthoc"] = (
                float(self.posthoc.loc[recipe, self.baseline])
                if self.posthoc is not None and recipe != self.baseline
                else math.nan
            )
            rows.append(row)
        return pd.DataFrame(rows)


def cells(
    frame: pd.DataFrame,
    problem_axes: Sequence[str],
    recipe_axes: Sequence[str],
    nuisance: str | None = None,
    fair: pd.DataFrame | None = None,
) -> dict[tuple[str, str], tuple[pd.DataFrame, str | None]]:
    """(problem, recipe) -> (its runs, the nuisance value chosen). With a nuisance axis, a
    recipe's runs are those at the value the fair comparison chose for it on that problem."""
    out = {}
    for problem_key, runs_of_problem in groups_of(frame, problem_axes):
        problem = group_label(problem_axes, problem_key)
        for recipe_key, runs in groups_of(runs_of_problem, recipe_axes):
            recipe = group_label(recipe_axes, recipe_key)
            setting = None
            if nuisance is not None and fair is not None and not fair.empty:
                match = fair
                values = zip(
                    [*problem_axes, *recipe_axes], [*problem_key, *recipe_key], strict=True
                )
                for axis, value in values:
                    match = match[match[axis] == value]
                if len(match):
                    setting = str(match[f"best {nuisance}"].iloc[0])
                    runs = runs[runs[nuisance].astype(str) == setting]
            out[(problem, recipe)] = (runs, setting)
    return out


def recipe_values(frame: pd.DataFrame, recipe_axes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Recipe label -> the value of each of its axes."""
    return {
        group_label(recipe_axes, key): dict(zip(recipe_axes, key, strict=True))
        for key, _ in groups_of(frame, recipe_axes)
    }


def across_problems(
    frame: pd.DataFrame,
    problem_axes: Sequence[str],
    recipe_axes: Sequence[str],
    column: str,
    metric: str,
    target: float | None = None,
    baseline: str | None = None,
    nuisance: str | None = None,
    fair: pd.DataFrame | None = None,
    higher: bool | None = None,
) -> Across:
    """Compare the recipes across the problems on ``column`` (each cell's mean over its
    finished runs); the baseline is ``baseline`` or the best mean rank. With a target, each
    cell's Kaplan–Meier epochs to target and the performance profile of their medians.
    ``higher``: whether higher values are better (default: what ``metric``'s name says)."""
    import pandas as pd

    if higher is None:
        higher = bool(directions.higher_is_better(metric))
    table = cells(frame, problem_axes, recipe_axes, nuisance, fair)
    problems = sorted({p for p, _ in table})
    recipes = sorted({r for _, r in table})

    def score(runs: pd.DataFrame) -> float:
        finished = runs.loc[runs["outcome"] == "finished", column]
        return stats.t_interval(finished.tolist()).mean

    scores = pd.DataFrame(math.nan, index=problems, columns=recipes)
    chosen = pd.DataFrame(None, index=problems, columns=recipes, dtype=object)
    for (problem, recipe), (runs, setting) in table.items():
        scores.loc[problem, recipe] = score(runs)
        chosen.loc[problem, recipe] = setting
    complete, dropped = ranking.complete_blocks(scores)
    ranks = ranking.rank_table(complete, higher)
    mean_ranks = ranks.mean(axis=0).dropna().sort_values(kind="stable")  # none: no complete problem
    omnibus = ranking.omnibus(complete)
    posthoc = None
    n, k = complete.shape
    if n >= 2 and k >= 3:
        posthoc = ranking.nemenyi(complete)
    elif n >= 2 and k == 2:
        a, b = complete.columns
        posthoc = pd.DataFrame(
            [[1.0, omnibus.p_value], [omnibus.p_value, 1.0]], index=[a, b], columns=[a, b]
        )
    if baseline is None:
        baseline = str(mean_ranks.index[0]) if len(mean_ranks) else recipes[0]
    usable = complete if baseline in complete.columns else complete.iloc[:, :0]
    wilcoxon = ranking.wilcoxon_holm(usable, baseline)
    outcomes = _outcomes(
        table, list(complete.index), list(complete.columns), baseline, column, higher
    )
    result = Across(list(problem_axes), list(recipe_axes), column, higher, scores, dropped, ranks,
                    mean_ranks, omnibus, posthoc, ranking.critical_difference(k, n, ALPHA), baseline,
                    wilcoxon, outcomes, chosen=chosen if nuisance else None, nuisance=nuisance,
                    recipe_values=recipe_values(frame, recipe_axes))  # fmt: skip
    if target is not None and "reach" in frame.columns:
        times = pd.DataFrame(math.inf, index=list(complete.index), columns=list(complete.columns))
        result.time_cells = {}
        for problem in times.index:
            for recipe in times.columns:
                runs, _ = table[(problem, recipe)]
                counted = runs[runs["outcome"].isin(WITH_RESULT)]
                cell = survival.time_to_target(list(counted["reach"]))
                result.time_cells[(problem, recipe)] = cell
                times.loc[problem, recipe] = cell.median if cell.n else math.inf
        result.times = times
        result.profile = ranking.performance_profile(times, PROFILE_TAUS)
    return result


def _outcomes(
    table: dict[tuple[str, str], tuple[pd.DataFrame, str | None]],
    problems: list[str],
    recipes: list[str],
    baseline: str,
    column: str,
    higher: bool,
) -> pd.DataFrame:
    """Win, tie or loss of each recipe against the baseline on each problem: the report's
    per-problem test (paired by seed, else Welch), Holm-adjusted over the recipes compared."""
    import pandas as pd

    outcomes = pd.DataFrame("", index=problems, columns=recipes, dtype=object)
    if baseline not in recipes:
        return outcomes
    for problem in problems:
        base = by_seed(table[(problem, baseline)][0], column)
        others = [r for r in recipes if r != baseline]
        tests = [stats.compare(by_seed(table[(problem, r)][0], column), base) for r in others]
        adjusted = stats.holm([t.p_value for t in tests])
        for recipe, test, p in zip(others, tests, adjusted, strict=True):
            outcomes.loc[problem, recipe] = ranking.outcome(test.diff, p, higher, ALPHA)
        outcomes.loc[problem, baseline] = "baseline"
    return outcomes
