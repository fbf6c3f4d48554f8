"""Showing a report: terminal tables, ``report.md``, a self-contained ``report.html`` and
the plots (learning curves, bars with CIs, a heatmap over two axes)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossbench import stats
from lossbench.render import (
    MISSING,
    figure,
    html_table,
    interval,
    markdown_table,
    number,
    print_table,
)
from lossbench.report.aggregate import Report, test_metric

MAX_CURVES = 8  # learning curves drawn: the best groups


def _ci(row: Mapping[str, Any], column: str) -> str:
    return interval(
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
        print_table(caption, header, rows, 220, justify, best)


NOTE_LIMIT = 7000  # characters; MLflow keeps at most 8,000 in a tag's value


def run_description(report: Report, limit: int = NOTE_LIMIT) -> str:
    """The sweep run's description (MLflow's ``mlflow.note.content``, Markdown), table first
    (the run page shows a description's first lines until "Show more"): the headline metric's
    table (each group's mean [95% CI] on validation and test, n, best group first, the
    cells as in the report's headline table), the fair comparison if there is one, and where
    the full report is. Groups that do not fit in ``limit`` characters are counted, not shown."""
    header, rows = display_table(report)
    sweep, m = report.sweep, report.metric
    keep = [*range(len(report.axes)), header.index(f"{m} (95% CI)")]
    if any(row[header.index(f"{test_metric(m)} (95% CI)")] != MISSING for row in rows):
        keep.append(header.index(f"{test_metric(m)} (95% CI)"))
    keep.append(header.index("n"))
    for extra in ("failed", "diverged"):  # shown only when some group has such runs
        if any(row[header.index(extra)] != "0" for row in rows):
            keep.append(header.index(extra))
    head = [header[i] if header[i] != "n" else "n (finished)" for i in keep]
    cells = [[row[i] for i in keep] for row in rows]
    intro = (f"{len(sweep.runs)} runs of sweep `{sweep.sweep_id}`, grouped by "
             f"{', '.join(report.axes) or 'nothing (one group)'}: mean [95% CI] over seeds, "
             f"best `{m}` first (lossbench-report).")  # fmt: skip
    footer = ("Full report (every metric, tests against the best group, plots, method): this "
              "run's artifacts, `report/report.html` and `report/report.md`.")  # fmt: skip
    fair = ""
    if report.fair is not None and not report.fair.empty:
        caption = (
            f"**Fair comparison**: best {report.nuisance} per {report.scientific}, chosen on {m}"
        )
        fair = f"{caption}\n\n{markdown_table(*fair_table(report))}\n\n"
    shown = len(cells)
    while True:
        more = len(cells) - shown
        rest = f" {more} more group{'s' if more > 1 else ''} in the full report." if more else ""
        text = f"{markdown_table(head, cells[:shown])}\n\n{intro}{rest}\n\n{fair}{footer}"
        if len(text) <= limit or shown <= 1:
            return text[:limit]
        shown -= 1


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
    with figure(path, 110, figsize=(8, 5)) as (_, ax):
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
    with figure(path, 110, figsize=(8, height)) as (_, ax):
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
    with figure(path, 110, figsize=size) as (fig, ax):
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
        md += [f"## {title}", "", markdown_table(header, rows), ""]
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
        parts.append(f"<h2>{html.escape(title)}</h2>{html_table(header, rows, best)}")
    parts.append("<h2>Plots</h2>")
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<p><img alt='{png.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append(f"<h2>Method</h2><p>{html.escape(METHODS)}</p></body></html>")
    (out / "report.html").write_text("".join(parts))
    return [out / "report.md", out / "report.html", *pngs]
