"""``lossbench-report``: which recipe of a sweep won, by how much, and how sure we can be.

It finds the axes the sweep varied (Hydra choices and params, seed aside), groups the runs by
them and aggregates over seeds: mean, std, 95% t-interval and n of the final and best
validation metric, the test metric, the final train loss, epochs- and seconds-to-target (runs
that never reach the target are counted as censored) and time per run. Failed, diverged and
killed runs are counted per group. Groups are tested against the best group (or ``--vs``),
paired by seed where the seeds match (see :mod:`lossbench.stats`). With a scientific and a
nuisance axis, it also gives the fair comparison: for each value of the scientific axis, the
best setting of the nuisance axis chosen on validation, reported on test.

It prints the table, writes ``reports/<experiment>/report.md`` and a self-contained
``report.html`` with plots (learning curves, bars with CIs, a heatmap over two axes), and logs
them as artifacts of the sweep's parent run. Reads MLflow; never imports torch or Lightning.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench import render, stats
from lossbench.render import number
from lossbench.tracking import NotInStore, SweepRecord, load_sweep, log_report, metric_histories

if TYPE_CHECKING:
    import pandas as pd

CHOICE_TAG = "lossbench.choice."
NOT_AXES = {"seed", "experiment", "tracking"}
OUTCOMES = ("finished", "diverged", "failed", "killed", "running")
MAX_CURVES = 8  # learning curves drawn: the best groups


def default_uri() -> str:
    """The store training writes to by default: ``$MLFLOW_TRACKING_URI`` or ./mlruns/mlflow.db."""
    from lossbench.tracking import tracking_uri

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

    higher = stats.higher_is_better(metric)
    histories = metric_histories(sweep.uri, [r.run_id for r in sweep.runs], metric)
    rows = []
    for run in sweep.runs:
        history = histories[run.run_id]
        finite = [v for v in history if math.isfinite(v)]
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "run": run.name,
            "outcome": run.outcome,
            "seed": int(run.params.get("seed", run.tags.get("lossbench.seed", -1))),
            **{
                k.removeprefix(CHOICE_TAG): v
                for k, v in run.tags.items()
                if k.startswith(CHOICE_TAG)
            },
            **{k: v for k, v in run.params.items() if k != "seed"},
            **run.metrics,
            "history": history,
            f"best {metric}": (max(finite) if higher else min(finite)) if finite else math.nan,
        }
        if target is not None:
            reached = stats.epochs_to_target(history, target, higher)
            seconds = run.metrics.get("time/seconds", math.nan)
            per_epoch = seconds / len(history) if history else math.nan
            row["epochs_to_target"] = reached if reached is not None else math.nan
            row["seconds_to_target"] = reached * per_epoch if reached is not None else math.nan
            row["censored"] = reached is None
        rows.append(row)
    return pd.DataFrame(rows)


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


def _groups(frame: pd.DataFrame, axes: Sequence[str]) -> list[tuple[tuple[Any, ...], pd.DataFrame]]:
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
    for key, group in _groups(frame, axes):
        finished = group[group["outcome"] == "finished"]
        row: dict[str, Any] = {a: v for a, v in zip(axes, key, strict=True)}
        row["group"] = group_label(axes, key)
        row["runs"] = len(group)
        for outcome in OUTCOMES:
            row[outcome] = int((group["outcome"] == outcome).sum())
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


def _by_seed(group: pd.DataFrame, column: str) -> dict[int, float]:
    finished = group[group["outcome"] == "finished"]
    return {int(s): float(v) for s, v in zip(finished["seed"], finished[column], strict=True)}


def compare_groups(
    frame: pd.DataFrame, axes: Sequence[str], column: str, baseline: str
) -> pd.DataFrame:
    """Every group against ``baseline`` on ``column``: difference, effect size, p-value (raw
    and Holm-adjusted), paired by seed where seeds match."""
    import pandas as pd

    groups = {group_label(axes, k): g for k, g in _groups(frame, axes)}
    base = _by_seed(groups[baseline], column)
    rows = []
    for label, group in groups.items():
        if label == baseline:
            continue
        c = stats.compare(_by_seed(group, column), base)
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
    playbook: select on validation, report on test)."""
    import pandas as pd

    higher = stats.higher_is_better(metric)
    others = [a for a in axes if a != nuisance]
    rows = []
    for key, group in _groups(frame, others):
        best = None
        for (setting,), runs in _groups(group, [nuisance]):
            finished = runs[runs["outcome"] == "finished"]
            val = stats.t_interval(finished[metric].tolist())
            if math.isnan(val.mean):
                continue
            if best is None or (val.mean > best[1].mean if higher else val.mean < best[1].mean):
                best = (setting, val, finished)
        if best is None:
            continue
        setting, val, finished = best
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


# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    """Everything the report shows, as DataFrames (the library entry point returns this)."""

    sweep: SweepRecord
    metric: str
    target: float | None
    axes: list[str]
    runs: pd.DataFrame
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    fair: pd.DataFrame | None = None
    baseline: str = ""
    scientific: str | None = None
    nuisance: str | None = None
    files: list[Path] = field(default_factory=list)


def build_report(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    sweep: str | None = None,
    metric: str | None = None,
    target: float | None = None,
    vs: str | None = None,
    scientific: str | None = None,
    nuisance: str | None = None,
) -> Report:
    """Read a sweep (the latest one by default) and aggregate it. Unset options come from the
    sweep's ``report`` settings. Raises :class:`NotInStore` or ``ValueError`` with the choices."""
    record = load_sweep(tracking_uri or default_uri(), experiment, sweep)
    tags = record.tags
    metric = metric or headline_metric(record)
    if target is None and tags.get("lossbench.report.target"):
        target = float(tags["lossbench.report.target"])
    scientific = scientific or tags.get("lossbench.report.scientific")
    nuisance = nuisance or tags.get("lossbench.report.nuisance")
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
    axes = sweep_axes(frame, choices)
    summary = summarize(frame, axes, metric, target)
    baseline = summary["group"].iloc[0] if vs is None else _find_group(summary, axes, vs)
    column = test_metric(metric) if test_metric(metric) in frame.columns else metric
    comparisons = compare_groups(frame, axes, column, baseline)
    fair = None
    if scientific and nuisance:
        for name in (scientific, nuisance):
            if name not in axes:
                raise ValueError(f"{name!r} is not an axis of this sweep; axes: {axes}")
        fair = fair_comparison(frame, axes, scientific, nuisance, metric)
    return Report(
        record,
        metric,
        target,
        axes,
        frame,
        summary,
        comparisons,
        fair,
        baseline,
        scientific,
        nuisance,
    )


def aggregate(**kwargs: Any) -> pd.DataFrame:
    """The aggregated table of a sweep as a DataFrame, for notebooks; takes the options of
    :func:`build_report` (``experiment=``, ``sweep=``, ``metric=``, ``target=``, ...)."""
    return build_report(**kwargs).summary


def _find_group(summary: pd.DataFrame, axes: Sequence[str], spec: str) -> str:
    """The group matching ``axis=value[,axis=value]``, or a ValueError listing the groups."""
    wanted = dict(part.split("=", 1) for part in spec.replace(" ", ",").split(",") if part)
    unknown = set(wanted) - set(axes)
    if unknown:
        raise ValueError(f"--vs {spec!r}: {sorted(unknown)} not among the sweep's axes {axes}")
    match = summary
    for axis, value in wanted.items():
        match = match[match[axis].astype(str) == value]
    if len(match) != 1:
        groups = "; ".join(summary["group"])
        raise ValueError(f"--vs {spec!r} matches {len(match)} groups; groups: {groups}")
    return str(match["group"].iloc[0])


# ---------------------------------------------------------------------------------------------
# Output


def _ci(row: Mapping[str, Any], column: str) -> str:
    return render.interval(
        row.get(f"{column} mean"), row.get(f"{column} ci_low"), row.get(f"{column} ci_high")
    )


def display_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The summary as header and rows of strings (terminal, Markdown and HTML share it)."""
    m = report.metric
    test = test_metric(m)
    header = [*report.axes, f"{m} (95% CI)", f"best {m}", f"{test} (95% CI)", "train/loss", "s/run"]
    if report.target is not None:
        header += [
            f"epochs to {m} {'≥' if stats.higher_is_better(m) else '≤'} {report.target:g}",
            "s to target",
        ]
    header += ["n", "failed", "diverged"]
    rows = []
    for _, row in report.summary.iterrows():
        cells = [str(row[a]) for a in report.axes]
        cells += [_ci(row, m), number(row.get(f"best {m} mean", math.nan)), _ci(row, test),
                  number(row.get("train/loss mean", math.nan)), number(row.get("time/seconds mean", math.nan), 2)]  # fmt: skip
        if report.target is not None:
            censored = f" ({row['censored_runs']} censored)" if row["censored_runs"] else ""
            cells += [
                number(row["epochs_to_target mean"], 1) + censored,
                number(row["seconds_to_target mean"], 2),
            ]
        cells += [
            str(row["finished"]),
            str(row["failed"] + row["killed"] + row["running"]),
            str(row["diverged"]),
        ]
        rows.append(cells)
    return header, rows


def comparison_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The pairwise tests as header and rows of strings."""
    header = [
        "group",
        f"diff vs {report.baseline}",
        "effect size",
        "test",
        "pairs",
        "p",
        "p (Holm)",
    ]
    rows = [
        [
            row["group"],
            number(row["diff"]),
            number(row["effect"], 2),
            row["test"],
            str(row["pairs"]),
            number(row["p"], 3),
            number(row["p holm"], 3),
        ]  # fmt: skip
        for _, row in report.comparisons.iterrows()
    ]
    return header, rows


def fair_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The best-over-nuisance comparison as header and rows of strings."""
    assert report.fair is not None
    others = [a for a in report.axes if a != report.nuisance]
    header = [
        *others,
        f"best {report.nuisance}",
        f"{report.metric} (selected on)",
        "test (95% CI)",
        "n",
    ]
    rows = []
    for _, row in report.fair.iterrows():
        test = {
            "test mean": row["test mean"],
            "test ci_low": row["test ci_low"],
            "test ci_high": row["test ci_high"],
        }
        rows.append([*(str(row[a]) for a in others), str(row[f"best {report.nuisance}"]),
                     number(row[f"{report.metric} mean"]), _ci(test, "test"), str(row["n"])])  # fmt: skip
    return header, rows


METHODS = (
    "Mean over seeds of each group's finished runs, with Student's t 95% confidence interval "
    "(mean ± t(0.975, n−1)·s/√n). Failed, killed and diverged runs are counted, not averaged. "
    "Epochs to target: the first epoch whose validation metric reaches the target; runs that "
    "never reach it are censored (counted, left out of the mean). Seconds to target: those "
    "epochs times the run's mean time per epoch. Tests compare each group with the baseline on "
    "the test metric: a paired t-test by seed when the groups share seeds (effect size Cohen's "
    "d_z), else Welch's t-test (Cohen's d, pooled sd); two-sided p-values, Holm-adjusted for the "
    "number of comparisons."
)


def print_report(report: Report) -> None:
    """The terminal view: the summary (best group highlighted), tests, fair comparison."""
    sweep = report.sweep
    title = (
        f"{sweep.experiment} · sweep {sweep.sweep_id} · {len(sweep.runs)} runs · {report.metric}"
    )
    tables = [
        (display_table(report), title),
        (comparison_table(report), f"each group vs {report.baseline}"),
    ]
    if report.fair is not None and not report.fair.empty:
        caption = f"fair comparison: best {report.nuisance} per {report.scientific}"
        tables.append((fair_table(report), caption))
    for (header, rows), caption in tables:
        justify = [
            "left" if i < len(report.axes) or name == "group" else "right"
            for i, name in enumerate(header)
        ]
        best = ["bold green"] if caption == title else []
        render.print_table(caption, header, rows, 220, justify, best)


def plot_report(report: Report, out: Path) -> list[Path]:
    """Learning curves (best groups, mean ± 95% CI band), bars of the final metric with CIs,
    and a heatmap over the first two axes. Returns the PNG files written."""
    files = [out / "curves.png", out / "bars.png"]
    _plot_curves(report, files[0])
    _plot_bars(report, files[1])
    if len(report.axes) >= 2:
        files.append(out / "heatmap.png")
        _plot_heatmap(report, files[-1])
    return files


def _plot_curves(report: Report, path: Path) -> None:
    import numpy as np

    metric, summary, frame = report.metric, report.summary, report.runs
    with render.figure(path, 110, figsize=(8, 5)) as (_, ax):
        for label in summary["group"].head(MAX_CURVES):
            key = (
                tuple(summary.loc[summary["group"] == label, report.axes].iloc[0])
                if report.axes
                else ()
            )
            runs = frame
            for axis, value in zip(report.axes, key, strict=True):
                runs = runs[runs[axis] == value]
            curves = [
                h
                for h, o in zip(runs["history"], runs["outcome"], strict=True)
                if o == "finished" and h
            ]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean, low, high = stats.t_band([c[:length] for c in curves])
            epochs = np.arange(1, length + 1)
            ax.plot(epochs, mean, label=label)
            if len(curves) > 1:
                ax.fill_between(epochs, low, high, alpha=0.2)
        if report.target is not None:
            ax.axhline(
                report.target,
                color="grey",
                linestyle="--",
                linewidth=1,
                label=f"target {report.target:g}",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        shown = min(MAX_CURVES, len(summary))
        ax.set_title(
            f"{metric} per epoch, mean ± 95% CI over seeds ({shown} best of {len(summary)} groups)"
        )
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)


def _plot_bars(report: Report, path: Path) -> None:
    import numpy as np

    metric, summary = report.metric, report.summary
    height = max(2.5, 0.3 * len(summary) + 1)
    with render.figure(path, 110, figsize=(8, height)) as (_, ax):
        means = summary[f"{metric} mean"].to_numpy()
        low = np.nan_to_num(means - summary[f"{metric} ci_low"].to_numpy())
        high = np.nan_to_num(summary[f"{metric} ci_high"].to_numpy() - means)
        positions = np.arange(len(summary))[::-1]
        ax.barh(positions, means, xerr=[low, high], color="tab:blue", alpha=0.7, capsize=3)
        ax.set_yticks(positions, summary["group"], fontsize=7)
        finite = means[np.isfinite(means)]
        if finite.size:
            span = finite.max() - finite.min()
            ax.set_xlim(
                finite.min() - max(span, abs(finite.min()) * 0.02) * 0.6,
                finite.max() + max(span, 1e-3) * 0.4,
            )
        ax.set_xlabel(f"final {metric} (mean, 95% CI)")
        ax.grid(alpha=0.3, axis="x")


def _plot_heatmap(report: Report, path: Path) -> None:
    import numpy as np

    metric, frame = report.metric, report.runs
    rows_axis, cols_axis = report.axes[0], report.axes[1]
    finished = frame[frame["outcome"] == "finished"]
    pivot = finished.pivot_table(index=rows_axis, columns=cols_axis, values=metric, aggfunc="mean")
    size = (1.2 * pivot.shape[1] + 3, 0.6 * pivot.shape[0] + 2)
    with render.figure(path, 110, figsize=size) as (fig, ax):
        image = ax.imshow(
            pivot.to_numpy(),
            cmap="viridis" if stats.higher_is_better(metric) else "viridis_r",
            aspect="auto",
        )
        ax.set_xticks(
            range(pivot.shape[1]), [str(c) for c in pivot.columns], rotation=30, ha="right"
        )
        ax.set_yticks(range(pivot.shape[0]), [str(i) for i in pivot.index])
        for (i, j), value in np.ndenumerate(pivot.to_numpy()):
            ax.text(
                j, i, number(float(value), 3), ha="center", va="center", color="white", fontsize=8
            )
        ax.set_xlabel(cols_axis)
        ax.set_ylabel(rows_axis)
        others = f", averaged over {', '.join(report.axes[2:])}" if len(report.axes) > 2 else ""
        ax.set_title(f"final {metric}: mean over seeds{others}", fontsize=9)
        fig.colorbar(image, ax=ax)


def write_report(report: Report, out: Path) -> list[Path]:
    """report.md and a self-contained report.html (plots embedded), plus the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = plot_report(report, out)
    sweep = report.sweep
    sections = [(f"Runs grouped by {', '.join(report.axes) or 'nothing (one group)'}", display_table(report), True),
                (f"Each group vs {report.baseline} ({test_metric(report.metric)})", comparison_table(report), False)]  # fmt: skip
    if report.fair is not None and not report.fair.empty:
        sections.append(
            (
                f"Fair comparison: best {report.nuisance} per {report.scientific}",
                fair_table(report),
                False,
            )
        )
    target = f", target {report.metric} {report.target:g}" if report.target is not None else ""
    intro = (f"Experiment `{sweep.experiment}`, sweep `{sweep.sweep_id}`: {len(sweep.runs)} runs, "
             f"headline metric `{report.metric}`{target}. Store: `{sweep.uri}`.")  # fmt: skip

    md = [f"# lossbench report: {sweep.experiment}", "", intro, ""]
    for title, (header, rows), _ in sections:
        md += [f"## {title}", "", render.markdown_table(header, rows), ""]
    md += (
        ["## Plots", ""]
        + [f"![{p.stem}]({p.name})" for p in pngs]
        + ["", "## Method", "", METHODS, ""]
    )
    (out / "report.md").write_text("\n".join(md))

    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             " th{background:#f0f0f0} tr.best{background:#e3f6e3;font-weight:bold} img{max-width:100%}")  # fmt: skip
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: {html.escape(sweep.experiment)}"
             f"</title><style>{style}</style></head><body><h1>lossbench report: {html.escape(sweep.experiment)}</h1>"
             f"<p>{html.escape(intro)}</p>"]  # fmt: skip
    for title, (header, rows), best in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>{render.html_table(header, rows, best)}")
    parts.append("<h2>Plots</h2>")
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<p><img alt='{png.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append(f"<h2>Method</h2><p>{html.escape(METHODS)}</p></body></html>")
    (out / "report.html").write_text("".join(parts))
    return [out / "report.md", out / "report.html", *pngs]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-report``."""
    parser = argparse.ArgumentParser(
        prog="lossbench-report",
        description="Compare the runs of a sweep: grouped by the axes it varied, aggregated over "
        "seeds with 95%% confidence intervals, tested against the best group, with plots. Reads "
        "the store training writes to ($MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db).",
    )
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: that of the latest sweep)"
    )
    parser.add_argument("--sweep", help="sweep id (default: the latest sweep)")
    parser.add_argument(
        "--metric",
        help="headline metric (default: the sweep's report.metric, else val/acc or val/rmse)",
    )
    parser.add_argument(
        "--target", type=float, help="value of the metric that counts as reached (epochs-to-target)"
    )
    parser.add_argument(
        "--vs",
        metavar="GROUP",
        help="baseline group, e.g. 'loss=mse' or 'loss=mse,optimizer=sgd' (default: the best)",
    )
    parser.add_argument("--scientific", help="axis to compare fairly, e.g. optimizer")
    parser.add_argument(
        "--nuisance", help="axis to take the best of (on validation), e.g. optimizer.lr"
    )
    parser.add_argument("--out", type=Path, help="output directory (default: reports/<experiment>)")
    parser.add_argument(
        "--no-mlflow", action="store_true", help="do not attach the report to the sweep's run"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)

    uri = args.tracking_uri or default_uri()
    try:
        report = build_report(uri, args.experiment, args.sweep, args.metric, args.target, args.vs,
                              args.scientific, args.nuisance)  # fmt: skip
    except (NotInStore, ValueError) as err:
        print(f"lossbench-report: {err} (store: {uri})", file=sys.stderr)
        return 2
    print_report(report)
    out = args.out or Path("reports") / report.sweep.experiment
    report.files = write_report(report, out)
    print(
        f"\nReport: {out / 'report.md'} and {out / 'report.html'} (plots: {', '.join(p.name for p in report.files[2:])})"
    )
    if report.sweep.parent_run_id and not args.no_mlflow:
        log_report(uri, report.sweep.parent_run_id, out)
        print(
            f"Attached to the sweep's MLflow run {report.sweep.parent_run_id} (artifacts/report/)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
