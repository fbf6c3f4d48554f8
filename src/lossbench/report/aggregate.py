"""Reading a sweep back and aggregating it: its axes, each group's values over seeds with
their 95% CIs, tests against a baseline group, and the best-over-nuisance comparison.
:mod:`lossbench.report.build` applies them within each problem."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lossbench.analysis import stats
from lossbench.tracking.records import SweepRecord, metric_histories, outcome

if TYPE_CHECKING:
    import pandas as pd

CHOICE_TAG = "lossbench.choice."
NOT_AXES = {"seed", "experiment", "tracking"}
OUTCOMES = ("finished", "diverged", "failed", "killed", "running")


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


def runs_frame(sweep: SweepRecord, metric: str, target: float | None) -> pd.DataFrame:
    """One row per run: outcome, seed, every choice and param, final metrics, the headline
    metric's history, its best value, and epochs/seconds to target."""
    import pandas as pd

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
    for prefix in (f"tags.{CHOICE_TAG}", "params.", "metrics."):  # choices, params, metrics
        for column in table.columns:
            name = column.removeprefix(prefix)
            if column.startswith(prefix) and name != "seed":
                columns[name] = table[column]
    frame = pd.DataFrame(columns).reset_index(drop=True)
    higher = stats.higher_is_better(metric)
    histories = metric_histories(sweep.uri, list(frame["run_id"]), metric)
    frame["history"] = [histories[run_id] for run_id in frame["run_id"]]
    finite = [[v for v in h if math.isfinite(v)] for h in frame["history"]]
    frame[f"best {metric}"] = [(max(f) if higher else min(f)) if f else math.nan for f in finite]
    if target is not None:
        reached = [stats.epochs_to_target(h, target, higher) for h in frame["history"]]
        seconds = frame.get("time/seconds", pd.Series(math.nan, index=frame.index))
        per_epoch = [
            s / len(h) if h else math.nan for s, h in zip(seconds, frame["history"], strict=True)
        ]
        frame["epochs_to_target"] = [r if r is not None else math.nan for r in reached]
        frame["seconds_to_target"] = [
            r * p if r is not None else math.nan for r, p in zip(reached, per_epoch, strict=True)
        ]
        frame["censored"] = [r is None for r in reached]
    return frame


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
    grouped = frame.groupby(choice_axes, dropna=False) if choice_axes else [(None, frame)]
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
    frame: pd.DataFrame, axes: Sequence[str], metric: str, target: float | None = None
) -> pd.DataFrame:
    """One row per group: counts by outcome, and mean, std, 95% CI and n over its finished
    runs of each value; sorted best first by the headline metric."""
    import pandas as pd

    values = [metric, f"best {metric}", test_metric(metric), "train/loss", "time/seconds"]
    rows = []
    for key, group in groups_of(frame, axes):
        finished = group[group["outcome"] == "finished"]
        row: dict[str, Any] = {a: v for a, v in zip(axes, key, strict=True)}
        row["group"] = group_label(axes, key)
        row["runs"] = len(group)
        for kind in OUTCOMES:
            row[kind] = int((group["outcome"] == kind).sum())
        for column in values:
            if column not in frame.columns:
                continue
            ci = stats.t_interval(finished[column].tolist())
            row.update({f"{column} mean": ci.mean, f"{column} std": ci.std, f"{column} ci_low": ci.low,
                        f"{column} ci_high": ci.high, f"{column} n": ci.n})  # fmt: skip
        if target is not None and "epochs_to_target" in frame.columns:
            reached = finished[~finished["censored"]]
            row["reached"] = len(reached)
            row["censored_runs"] = len(finished) - len(reached)
            for column in ("epochs_to_target", "seconds_to_target"):
                ci = stats.t_interval(reached[column].tolist())
                row[f"{column} mean"], row[f"{column} ci_low"], row[f"{column} ci_high"] = (
                    ci.mean,
                    ci.low,
                    ci.high,
                )
        rows.append(row)
    table = pd.DataFrame(rows)
    ascending = not stats.higher_is_better(metric)
    return table.sort_values(
        f"{metric} mean", ascending=ascending, na_position="last", ignore_index=True
    )


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
    frame: pd.DataFrame, axes: Sequence[str], scientific: str, nuisance: str, metric: str
) -> pd.DataFrame:
    """For each value of the scientific axis (and of the other axes), the nuisance setting
    with the best mean validation metric, and that setting's test metric (Google's tuning
    playbook: select on validation, report on test). A setting where a run diverged ranks
    below every setting where none did (:func:`lossbench.analysis.stats.rank_settings`)."""
    import pandas as pd

    higher = stats.higher_is_better(metric)
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
