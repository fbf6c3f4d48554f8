"""``lossbench-report``: compare the runs of a sweep, grouped by what the sweep varied.

Reads MLflow only: it never imports torch or Lightning.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

CHOICE = "tags.lossbench.choice."
NOT_AXES = ("params.seed", f"{CHOICE}experiment", f"{CHOICE}tracking")


class ReportError(RuntimeError):
    """The store holds nothing to report for the given experiment or sweep."""


def default_uri() -> str:
    """The store training writes to by default: ``$MLFLOW_TRACKING_URI`` or ./mlruns/mlflow.db."""
    from lossbench.tracking import tracking_uri

    return tracking_uri({"root": "mlruns"})


def latest_sweep(client: MlflowClient, experiment: str | None = None) -> tuple[str, str]:
    """(experiment id, sweep id) of the most recent sweep, optionally within one experiment."""
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise ReportError(f"no experiment {experiment!r} in this store; experiments: {names}")
        experiment_ids = [found.experiment_id]
    else:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    sweeps = client.search_runs(
        experiment_ids,
        filter_string="tags.`lossbench.role` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not sweeps:
        raise ReportError("no lossbench sweep in this store: run `lossbench-train -m ...` first")
    run = sweeps[0]
    return run.info.experiment_id, run.data.tags["lossbench.sweep_id"]


def sweep_runs(client: MlflowClient, experiment_id: str, sweep_id: str) -> pd.DataFrame:
    """One row per run of the sweep: its status, params, choice tags and final metrics."""
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=f"tags.`lossbench.sweep_id` = '{sweep_id}' and tags.`lossbench.role` = 'run'",
        max_results=100_000,
    )
    if runs.empty:
        raise ReportError(f"sweep {sweep_id} has no runs")
    return runs


def sweep_axes(runs: pd.DataFrame) -> list[str]:
    """Columns the sweep varied, seed aside: group choices, and params that vary within them."""
    choices = [
        c for c in runs.columns
        if c.startswith(CHOICE) and c not in NOT_AXES and runs[c].nunique(dropna=False) > 1
    ]  # fmt: skip
    params = [
        c for c in runs.columns
        if c.startswith("params.") and c not in NOT_AXES and runs[c].nunique(dropna=False) > 1
    ]  # fmt: skip
    grouped = runs.groupby(choices, dropna=False) if choices else [(None, runs)]
    extra = [p for p in params if any(g[p].nunique(dropna=False) > 1 for _, g in grouped)]
    return choices + extra


def headline_metric(runs: pd.DataFrame) -> str:
    """val/acc for classification sweeps, val/rmse for regression."""
    column = "tags.lossbench.task"
    tasks = set(runs[column].dropna()) if column in runs.columns else set()
    return "val/rmse" if tasks == {"regression"} else "val/acc"


def summarize(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of the final val, test and train metrics, per group of the axes."""
    import pandas as pd

    axes = sweep_axes(runs)
    test = metric.replace("val/", "test/", 1)
    columns = [c for c in (metric, test, "train/loss") if f"metrics.{c}" in runs.columns]
    rows = []
    grouped = runs.groupby(axes, dropna=False) if axes else [((), runs)]
    for key, group in grouped:
        key = key if isinstance(key, tuple) else (key,)
        finished = group[group["status"] == "FINISHED"]
        row = {_short(a): v for a, v in zip(axes, key, strict=True)}
        row["n"] = len(finished)
        row["failed"] = len(group) - len(finished)
        for c in columns:
            values = finished[f"metrics.{c}"].dropna()
            row[f"{c} mean"] = values.mean()
            row[f"{c} std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        rows.append(row)
    table = pd.DataFrame(rows)
    ascending = metric.endswith(("rmse", "mae", "loss"))
    return table.sort_values(f"{metric} mean", ascending=ascending, ignore_index=True)


def _short(column: str) -> str:
    return column.removeprefix(CHOICE).removeprefix("params.")


def print_table(table: pd.DataFrame, metric: str, title: str) -> None:
    """A terminal table, best group first and highlighted."""
    from rich.console import Console
    from rich.table import Table

    out = Table(title=title)
    value_columns = sorted({c.rsplit(" ", 1)[0] for c in table.columns if c.endswith(" mean")},
                           key=lambda c: (c != metric, c))  # fmt: skip
    keys = [
        c for c in table.columns if not c.endswith((" mean", " std")) and c not in ("n", "failed")
    ]
    for c in keys:
        out.add_column(c)
    for c in value_columns:
        out.add_column(f"{c} (mean ± std)", justify="right")
    out.add_column("n", justify="right")
    out.add_column("failed", justify="right")
    for i, row in table.iterrows():
        cells = [str(row[c]) for c in keys]
        cells += [f"{row[f'{c} mean']:.4f} ± {row[f'{c} std']:.4f}" for c in value_columns]
        cells += [str(row["n"]), str(row["failed"])]
        out.add_row(*cells, style="bold green" if i == 0 else None)
    Console().print(out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-report``."""
    parser = argparse.ArgumentParser(
        prog="lossbench-report",
        description="Compare the runs of a sweep: mean and std over seeds per group of the axes "
        "the sweep varied. Reads the store training writes to ($MLFLOW_TRACKING_URI, else "
        "./mlruns/mlflow.db).",
    )
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: that of the latest sweep)"
    )
    parser.add_argument("--sweep", help="sweep id (default: the latest sweep)")
    parser.add_argument(
        "--metric", help="headline metric (default: val/acc, or val/rmse for regression)"
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: as training)")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient

    uri = args.tracking_uri or default_uri()
    client = MlflowClient(uri)
    try:
        if args.sweep:
            experiment_ids = [e.experiment_id for e in client.search_experiments()]
            found = client.search_runs(
                experiment_ids,
                filter_string=f"tags.`lossbench.sweep_id` = '{args.sweep}'",
                max_results=1,
            )
            if not found:
                raise ReportError(f"no sweep {args.sweep!r} in {uri}")
            experiment_id, sweep_id = found[0].info.experiment_id, args.sweep
        else:
            experiment_id, sweep_id = latest_sweep(client, args.experiment)
        runs = sweep_runs(client, experiment_id, sweep_id)
    except ReportError as err:
        print(f"lossbench-report: {err} (store: {uri})", file=sys.stderr)
        return 2
    metric = args.metric or headline_metric(runs)
    experiment = client.get_experiment(experiment_id).name
    table = summarize(runs, metric)
    print_table(table, metric, f"{experiment} · sweep {sweep_id} · {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
