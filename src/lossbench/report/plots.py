"""The report's figures: learning curves and bars with CIs (one panel per problem), a heatmap
(problems by recipes, coloured by rank; or the first two axes of a one-problem sweep), the
critical-difference diagram of the recipes' mean ranks across problems, and their
performance profile."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.analysis import stats
from lossbench.analysis.render import draw_figures, figure, number

if TYPE_CHECKING:
    from lossbench.report.build import Report

MAX_CURVES = 8  # learning curves drawn per problem: its best groups
COLUMNS = 3  # panels per row


def plot_report(report: Report, out: Path) -> list[Path]:
    """Learning curves (best groups, mean ± 95% CI band) and bars of the final metric with
    CIs, a panel per problem; a heatmap; across problems, the critical-difference diagram
    and, with a target, the performance profile. Returns the PNG files written."""
    figures: list[tuple[Path, Callable[[Report, Path], None]]] = [
        (out / "curves.png", _plot_curves),
        (out / "bars.png", _plot_bars),
    ]
    across = report.across
    if across is not None and len(across.problems) >= 1 and len(across.mean_ranks) >= 2:
        figures.append((out / "heatmap.png", _plot_rank_heatmap))
    elif across is None and len(report.axes) >= 2 and not report.searched:
        figures.append((out / "heatmap.png", _plot_heatmap))
    if across is not None and across.posthoc is not None:
        figures.append((out / "cd.png", _plot_critical_difference))
    if across is not None and across.times is not None and len(across.problems):
        figures.append((out / "profile.png", _plot_profile))
    draw_figures(report, figures)
    return [path for path, _ in figures]


def _panels(n: int) -> tuple[int, int]:
    cols = min(COLUMNS, n)
    return math.ceil(n / cols), cols


def _plot_curves(report: Report, path: Path) -> None:
    problems = report.problems
    rows, cols = _panels(len(problems))
    size = (8 if cols == 1 else 5.5 * cols, 5 if rows * cols == 1 else 4.2 * rows)
    with figure(path, 110, nrows=rows, ncols=cols, figsize=size, squeeze=False) as (_, axes):
        for i, problem in enumerate(problems):
            _curves(report, problem, axes[i // cols][i % cols])
        for j in range(len(problems), rows * cols):
            axes[j // cols][j % cols].axis("off")


def _curves(report: Report, problem: str, ax: Any) -> None:
    import numpy as np

    metric, frame = report.metric, report.runs
    summary = report.shown(problem)
    for _, row in summary.head(MAX_CURVES).iterrows():
        runs = frame[frame["problem"] == problem]
        for axis in report.recipe_axes:
            runs = runs[runs[axis] == row[axis]]
        curves = [
            h
            for h, o in zip(runs["history"], runs["outcome"], strict=True)
            if o == "finished" and len(h)
        ]
        if not curves:
            continue
        # the epochs every run logged (step = epoch - 1), not positions in the lists
        common = sorted(set.intersection(*(set(c.epochs) for c in curves)))
        if not common:
            continue
        values = [[dict(zip(c.epochs, c.values, strict=True))[e] for e in common] for c in curves]
        mean, low, high = stats.t_band(values)
        epochs = np.asarray(common)
        ax.plot(epochs, mean, label=row["recipe"], marker="." if len(common) < 30 else None)
        if len(curves) > 1:
            ax.fill_between(epochs, low, high, alpha=0.2)
    if report.target is not None:
        ax.axhline(report.target, color="grey", linestyle="--", linewidth=1,
                   label=f"target {report.target:g}")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    shown = min(MAX_CURVES, len(summary))
    where = f"{problem}: " if report.problem_axes else ""
    ax.set_title(f"{where}{metric} per epoch, mean ± 95% CI over seeds "
                 f"({shown} best of {len(summary)} groups)", fontsize=8)  # fmt: skip
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _plot_bars(report: Report, path: Path) -> None:
    import numpy as np

    metric = report.metric
    problems = report.problems
    heights = [max(1.5, 0.3 * len(report.shown(p)) + 1) for p in problems]
    with figure(path, 110, nrows=len(problems), ncols=1, figsize=(8, sum(heights)),
                squeeze=False, gridspec_kw={"height_ratios": heights}) as (_, axes):  # fmt: skip
        for ax, problem in zip(axes[:, 0], problems, strict=True):
            summary = report.shown(problem)
            means = summary[f"{metric} mean"].to_numpy(float)
            low = np.nan_to_num(means - summary[f"{metric} ci_low"].to_numpy(float))
            high = np.nan_to_num(summary[f"{metric} ci_high"].to_numpy(float) - means)
            positions = np.arange(len(summary))[::-1]
            ax.barh(positions, means, xerr=[low, high], color="tab:blue", alpha=0.7, capsize=3)
            ax.set_yticks(positions, summary["recipe"], fontsize=7)
            finite = means[np.isfinite(means)]
            if finite.size:
                span = finite.max() - finite.min()
                ax.set_xlim(finite.min() - max(span, abs(finite.min()) * 0.02) * 0.6,
                            finite.max() + max(span, 1e-3) * 0.4)  # fmt: skip
            if report.problem_axes:
                ax.set_title(problem, fontsize=8)
            ax.set_xlabel(f"final {metric} (mean, 95% CI)")
            ax.grid(alpha=0.3, axis="x")


def _plot_heatmap(report: Report, path: Path) -> None:
    """One problem: the final metric over the first two axes."""
    import numpy as np

    metric, frame = report.metric, report.runs
    rows_axis, cols_axis = report.axes[0], report.axes[1]
    finished = frame[frame["outcome"] == "finished"]
    pivot = finished.pivot_table(index=rows_axis, columns=cols_axis, values=metric, aggfunc="mean")
    size = (1.2 * pivot.shape[1] + 3, 0.6 * pivot.shape[0] + 2)
    with figure(path, 110, figsize=size) as (fig, ax):
        cmap = "viridis" if report.higher else "viridis_r"
        image = ax.imshow(pivot.to_numpy(), cmap=cmap, aspect="auto")
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


def _plot_rank_heatmap(report: Report, path: Path) -> None:
    """Problems by recipes: each cell's rank within its problem (colour) and its score."""
    import numpy as np

    across = report.across
    assert across is not None
    recipes = list(across.mean_ranks.index)
    ranks = across.ranks[recipes]
    scores = across.scores.loc[ranks.index, recipes]
    size = (1.3 * len(recipes) + 3, 0.6 * len(ranks) + 2.2)
    with figure(path, 110, figsize=size) as (fig, ax):
        image = ax.imshow(ranks.to_numpy(float), cmap="RdYlGn_r", aspect="auto", vmin=1,
                          vmax=max(2, len(recipes)))  # fmt: skip
        ax.set_xticks(range(len(recipes)), recipes, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(len(ranks)), list(ranks.index), fontsize=7)
        for (i, j), value in np.ndenumerate(scores.to_numpy(float)):
            rank = ranks.iloc[i, j]
            ax.text(j, i, f"{number(float(value), 3)}\n({rank:g})", ha="center", va="center",
                    color="black", fontsize=7)  # fmt: skip
        ax.set_title(f"{across.column} (rank within each problem; 1 = best)", fontsize=9)
        fig.colorbar(image, ax=ax, label="rank")


def _plot_critical_difference(report: Report, path: Path) -> None:
    """Mean ranks on an axis; recipes with no significant difference (the post-hoc test at
    alpha) joined by a bar (scikit-posthocs' diagram)."""
    import scikit_posthocs as sp

    across = report.across
    assert across is not None and across.posthoc is not None
    height = 1.2 + 0.35 * len(across.mean_ranks)
    with figure(path, 110, figsize=(8, height)) as (fig, ax):
        cd = across.critical_difference if across.omnibus.test == "Friedman" else None
        sp.critical_difference_diagram(across.mean_ranks.to_dict(), across.posthoc, ax=ax,
                                       alpha=across.alpha, cd=cd,
                                       label_props={"fontsize": 8})  # fmt: skip
        test = "Nemenyi" if across.omnibus.test == "Friedman" else "Wilcoxon signed-rank"
        ax.set_title(f"mean rank of {across.column} over {len(across.problems)} problems "
                     f"(bars: no significant difference, {test}, α = {across.alpha:g})",
                     fontsize=8, pad=24)  # fmt: skip


def _plot_profile(report: Report, path: Path) -> None:
    """ρ(τ), a step per recipe: the share of problems reached within τ × the best time."""
    import numpy as np

    from lossbench.analysis import ranking

    across = report.across
    assert across is not None and across.times is not None
    ratios = ranking.performance_ratios(across.times)
    finite = ratios.to_numpy(float)[np.isfinite(ratios.to_numpy(float))]
    top = max(2.0, float(finite.max()) * 1.1) if finite.size else 2.0
    taus = np.unique(np.concatenate([[1.0, top], finite]))
    profile = ranking.performance_profile(across.times, list(taus))
    with figure(path, 110, figsize=(8, 4.5)) as (_, ax):
        for recipe in across.mean_ranks.index:
            ax.step(taus, profile.loc[recipe].to_numpy(float), where="post", label=recipe)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("τ (epochs to target / the best recipe's on that problem)")
        ax.set_ylabel("share of problems")
        ax.set_title(f"performance profile: epochs to {report.metric} {'≥' if across.higher else '≤'} "
                     f"{report.target:g} within τ × the best ({len(across.problems)} problems)",
                     fontsize=8)  # fmt: skip
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
