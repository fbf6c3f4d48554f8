"""Reading a sweep back and aggregating it: its axes, each group's values over seeds with
their 95% CIs, tests against a baseline group, and the best-over-nuisance comparison.
:mod:`lossbench.report.build` applies them within each problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lossbench.analysis import stats, survival
from lossbench.problem import directions
from lossbench.tracking.records import History, SweepRecord, metric_histories, outcome

if TYPE_CHECKING:
    import pandas as pd

CHOICE_TAG = "lossbench.choice."
NOT_AXES = {"seed", "experiment", "tracking", "stopped_epoch", "audit", "audit_difference"}
OUTCOMES = ("finished", "diverged", "failed", "killed", "running")
WITH_RESULT = ("finished", "diverged")  # runs time to target counts (a diverged run: not reached)


def default_uri() -> str:
    """The store training writes to by default: ``$MLFLOW_TRACKING_URI`` or ./mlruns/mlflow.db."""
    from lossbench.tracking.store import tracking_uri

    return tracking_uri({"root": "mlruns"})


def headline_metric(sweep: SweepRecord) -> str:
    """The sweep's ``report.metric``, else val/acc for classification, val/rmse for regression."""
    if sweep.tags.get("lossbench.report.metric"):
        return sweep.tags["lossbench.report.metric"]
    tasks = {r.tags.get("lossbench.task") for r in sweep.runs}
    return "val/rmse" if tasks == {"regression"} else "val/acc"


def metric_direction(sweep: SweepRecord, metric: str) -> tuple[bool, str | None]:
    """Whether higher values of ``metric`` are better in this sweep, as its runs recorded it
    (:func:`lossbench.problem.directions.recorded_directions`), and a note where nothing says
    (lower is then taken as better). Runs that declare opposite directions raise ValueError."""
    name = metric.partition("/")[2]
    found = {
        d[name] for d in (directions.recorded_directions(r.params) for r in sweep.runs) if name in d
    }
    if len(found) > 1:
        raise ValueError(
            f"the runs of this sweep declare both directions for {metric!r} "
            f"(metrics.{name}.{directions.KEY}): report them apart (--sweep)"
        )
    higher = directions.higher_is_better(metric, {name: found.pop()} if found else None)
    if higher is None:
        return False, (
            f"{metric} has no direction (it is no metric with a better end): lower is taken as "
            "better for 'best' and the ranking"
        )
    return higher, None


def runs_frame(
    sweep: SweepRecord, metric: str, target: float | None, higher: bool | None = None
) -> pd.DataFrame:
    """One row per run: outcome, seed, every choice and param, final metrics, the headline
    metric's :class:`History` (by logged epoch), its best logged value, and when the run reached
    the target (a :class:`lossbench.analysis.survival.Reach` in ``reach``; ``epochs_to_target``,
    ``censored``: the first logged epoch at the target, NaN and True when not reached)."""
    import pandas as pd

    if higher is None:
        higher = metric_direction(sweep, metric)[0]
    table = sweep.table  # MLflow's own: params.*, metrics.*, tags.* columns
    none = pd.Series(None, index=table.index, dtype=object)
    seeds = table.get("params.seed", none).fillna(table.get("tags.lossbench.seed", none))
    statuses = zip(table["status"], table.get("tags.lossbench.status", none), strict=True)
    columns = {
        "run_id": table["run_id"],
        "run": table["tags.mlflow.runName"],
        "outcome": pd.Series([outcome(s, tag) for s, tag in statuses], index=table.index),
        "seed": seeds.fillna(-1).astype(int),
    }
    for tag in ("stopped_epoch", "audit", "audit_difference"):
        columns[tag] = table.get(f"tags.lossbench.{tag}", none)
    for prefix in (f"tags.{CHOICE_TAG}", "params.", "metrics."):  # choices, params, metrics
        for column in table.columns:
            name = column.removeprefix(prefix)
            if column.startswith(prefix) and name != "seed":
                columns[name] = table[column]
    frame = pd.DataFrame(columns).reset_index(drop=True)
    histories = metric_histories(sweep.uri, list(frame["run_id"]), metric)
    frame["history"] = [histories.get(run_id, History()) for run_id in frame["run_id"]]
    finite = [[v for v in h.values if math.isfinite(v)] for h in frame["history"]]
    frame[f"best {metric}"] = [(max(f) if higher else min(f)) if f else math.nan for f in finite]
    if target is not None:
        reaches = [
            survival.first_reach(h.epochs, h.values, target, higher, _planned_epochs(row, h))
            for h, row in zip(frame["history"], frame.to_dict("records"), strict=True)
        ]
        frame["reach"] = reaches
        frame["epochs_to_target"] = [r.latest if r.reached else math.nan for r in reaches]
        frame["censored"] = [not r.reached for r in reaches]
        frame["seconds_per_epoch"] = [_seconds_per_epoch(row) for row in frame.to_dict("records")]
    return frame


def _planned_epochs(row: dict[str, Any], history: History) -> float:
    """The epochs a run was to train (``trainer.max_epochs``), or its last logged epoch when
    more: where a run that never reached the target is censored."""
    last = float(history.epochs[-1]) if history.epochs else 0.0
    try:
        return max(float(row.get("trainer.max_epochs")), last)
    except (TypeError, ValueError):
        return last


def _seconds_per_epoch(row: dict[str, Any]) -> float:
    """A run's training seconds per epoch: ``time/epoch_seconds`` (a stacked fit's time shared
    among its members), else its seconds over its logged epochs."""
    value = row.get("time/epoch_seconds")
    if value is not None and math.isfinite(value):
        return float(value)
    seconds, history = row.get("time/seconds"), row["history"]
    if seconds is None or not math.isfinite(seconds) or not history.epochs:
        return math.nan
    return float(seconds) / history.epochs[-1]


def sweep_axes(frame: pd.DataFrame, choices: Sequence[str] = ()) -> list[str]:
    """Columns the sweep varied, seed aside: group choices, then params that vary within them
    (params that only follow a choice, like each optimizer's default lr, are not axes)."""
    columns = [c for c in frame.columns if c not in NOT_AXES and frame[c].map(type).eq(str).all()]
    varying = [
        c
        for c in columns
        if frame[c].nunique(dropna=False) > 1 and c not in ("run_id", "run", "outcome")
    ]
    choice_axes = [c for c in choices if c in varying]
    # the groups listed once: a groupby re-slices the frame each time it is walked
    grouped = list(frame.groupby(choice_axes, dropna=False)) if choice_axes else [(None, frame)]
    params = [
        c
        for c in varying
        if c not in choices and any(g[c].nunique(dropna=False) > 1 for _, g in grouped)
    ]
    return choice_axes + params


def group_label(axes: Sequence[str], key: Sequence[Any]) -> str:
    """``loss=focal optimizer=adam``."""
    return " ".join(f"{a}={v}" for a, v in zip(axes, key, strict=True)) or "all runs"


def groups_of(
    frame: pd.DataFrame, axes: Sequence[str]
) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
    """(key, runs) of each group of ``axes``, in the order the frame first has them."""
    if not axes:
        return [((), frame)]
    return [
        ((k if isinstance(k, tuple) else (k,)), g)
        for k, g in frame.groupby(list(axes), dropna=False, sort=False)
    ]


def test_metric(metric: str) -> str:
    """The test-split counterpart of a validation metric."""
    return metric.replace("val/", "test/", 1)


def summarize(
    frame: pd.DataFrame,
    axes: Sequence[str],
    metric: str,
    target: float | None = None,
    higher: bool | None = None,
) -> pd.DataFrame:
    """One row per group: counts by outcome, and mean, std, 95% CI and n over its finished
    runs of each value; with a target, the Kaplan–Meier time to it (:func:`time_columns`);
    runs stopped early and the audit where there are any; sorted best first by the headline
    metric."""
    import pandas as pd

    if higher is None:
        higher = bool(directions.higher_is_better(metric))
    values = [metric, f"best {metric}", test_metric(metric), "train/loss", "time/seconds"]
    rows = []
    for key, group in groups_of(frame, axes):
        finished = group[group["outcome"] == "finished"]
        row: dict[str, Any] = {a: v for a, v in zip(axes, key, strict=True)}
        row["group"] = group_label(axes, key)
        row["runs"] = len(group)
        for kind in OUTCOMES:
            row[kind] = int((group["outcome"] == kind).sum())
        for column in dict.fromkeys(values):  # a test metric as the headline: once
            if column not in frame.columns:
                continue
            ci = stats.t_interval(finished[column].tolist())
            row.update({f"{column} mean": ci.mean, f"{column} std": ci.std, f"{column} ci_low": ci.low,
                        f"{column} ci_high": ci.high, f"{column} n": ci.n})  # fmt: skip
        if target is not None and "reach" in frame.columns:
            row.update(time_columns(group))
        row.update(_stopped(group))
        row.update(_audit(group))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(
        f"{metric} mean", ascending=not higher, na_position="last", ignore_index=True
    )


def time_columns(runs: pd.DataFrame) -> dict[str, Any]:
    """Time to target of a group's runs with a result (finished, and diverged: not reached),
    by Kaplan–Meier (:mod:`lossbench.analysis.survival`): for epochs and for seconds, the
    median, its 95% CI and the smallest median the logged epochs allow; how many reached it."""
    counted = runs[runs["outcome"].isin(WITH_RESULT)]
    reaches = list(counted["reach"])
    row: dict[str, Any] = {"target runs": len(reaches), "reached": sum(r.reached for r in reaches)}
    row["censored_runs"] = row["target runs"] - row["reached"]
    seconds = [r.scaled(s) for r, s in zip(reaches, counted["seconds_per_epoch"], strict=True)]
    for column, runs_on_scale in (("epochs_to_target", reaches), ("seconds_to_target", seconds)):
        usable = [r for r in runs_on_scale if math.isfinite(r.latest)]
        t = survival.time_to_target(usable)
        row.update({f"{column} median": t.median, f"{column} ci_low": t.low,
                    f"{column} ci_high": t.high, f"{column} median_earliest": t.median_earliest,
                    f"{column} horizon": t.horizon})  # fmt: skip
    return row


def _stopped(runs: pd.DataFrame) -> dict[str, Any]:
    """Finished runs that early stopping stopped, and their mean stopped epoch (1, 2, ...)."""
    finished = runs[runs["outcome"] == "finished"]
    epochs = [int(e) + 1 for e in finished["stopped_epoch"] if isinstance(e, str) and e.isdigit()]
    return {
        "stopped": len(epochs),
        "stopped_epoch mean": sum(epochs) / len(epochs) if epochs else math.nan,
    }


def _audit(runs: pd.DataFrame) -> dict[str, Any]:
    """How many runs passed, failed or skipped the audit, and the largest difference seen."""
    tags = [a for a in runs["audit"] if isinstance(a, str)]
    differences = [float(d) for d in runs["audit_difference"] if isinstance(d, str)]
    row: dict[str, Any] = {
        f"audit {kind}": tags.count(kind) for kind in ("passed", "failed", "skipped")
    }
    row["audit difference"] = max(differences, default=math.nan)
    return row


def by_seed(group: pd.DataFrame, column: str) -> dict[int, float]:
    """Seed -> value of ``column`` for a group's finished runs."""
    finished = group[group["outcome"] == "finished"]
    return {int(s): float(v) for s, v in zip(finished["seed"], finished[column], strict=True)}


def compare_groups(
    frame: pd.DataFrame, axes: Sequence[str], column: str, baseline: str
) -> pd.DataFrame:
    """Every group against ``baseline`` on ``column``: difference, effect size, p-value (raw
    and Holm-adjusted), paired by seed where seeds match."""
    import pandas as pd

    groups = {group_label(axes, k): g for k, g in groups_of(frame, axes)}
    base = by_seed(groups[baseline], column)
    rows = []
    for label, group in groups.items():
        if label == baseline:
            continue
        c = stats.compare(by_seed(group, column), base)
        rows.append({"group": label, "vs": baseline, "n": c.n_a, "n baseline": c.n_b, "test": c.test,
                     "pairs": c.n_pairs, "diff": c.diff, "effect": c.effect, "p": c.p_value})  # fmt: skip
    table = pd.DataFrame(
        rows, columns=["group", "vs", "n", "n baseline", "test", "pairs", "diff", "effect", "p"]
    )
    table["p holm"] = stats.holm(table["p"].tolist())
    return table


def fair_comparison(
    frame: pd.DataFrame,
    axes: Sequence[str],
    scientific: str,
    nuisance: str,
    metric: str,
    higher: bool | None = None,
) -> pd.DataFrame:
    """For each value of the scientific axis (and of the other axes), the nuisance setting
    with the best mean validation metric, and that setting's test metric (Google's tuning
    playbook: select on validation, report on test). A setting where a run diverged ranks
    below every setting where none did (:func:`lossbench.analysis.stats.rank_settings`)."""
    import pandas as pd

    if higher is None:
        higher = bool(directions.higher_is_better(metric))
    others = [a for a in axes if a != nuisance]
    rows = []
    for key, group in groups_of(frame, others):
        settings = {setting: runs for (setting,), runs in groups_of(group, [nuisance])}
        ranked = stats.rank_settings(
            {
                setting: (
                    runs.loc[runs["outcome"] == "finished", metric].tolist(),
                    int((runs["outcome"] == "diverged").sum()),
                )
                for setting, runs in settings.items()
            },
            higher,
        )
        runs = settings[ranked[0]]
        finished = runs[runs["outcome"] == "finished"]
        val = stats.t_interval(finished[metric].tolist())
        if math.isnan(val.mean):  # no setting has a finished run
            continue
        setting = ranked[0]
        test = (
            stats.t_interval(finished[test_metric(metric)].tolist())
            if test_metric(metric) in finished
            else None
        )
        row = {a: v for a, v in zip(others, key, strict=True)}
        row.update({f"best {nuisance}": setting, f"{metric} mean": val.mean, "test mean": test.mean if test else math.nan,
                    "test ci_low": test.low if test else math.nan, "test ci_high": test.high if test else math.nan,
                    "n": val.n})  # fmt: skip
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values("test mean", ascending=not higher, ignore_index=True)
