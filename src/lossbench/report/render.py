"""Showing a report: terminal tables, ``report.md``, a self-contained ``report.html`` (plots in
:mod:`lossbench.report.plots`) and the sweep run's MLflow description. With several problems:
the recipes across the problems first, then each problem's own tables."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lossbench.analysis.render import (
    MISSING,
    html_table,
    interval,
    markdown_table,
    number,
    p_value,
    print_table,
)
from lossbench.report.aggregate import test_metric
from lossbench.report.build import Report
from lossbench.report.plots import plot_report

Table = tuple[list[str], list[list[str]]]


def _ci(row: Mapping[str, Any], column: str) -> str:
    return interval(
        row.get(f"{column} mean"), row.get(f"{column} ci_low"), row.get(f"{column} ci_high")
    )


def _rows(report: Report, frame: Any, problem: str | None) -> Any:
    return frame if problem is None else frame[frame["problem"] == problem]


def _axes(report: Report, problem: str | None) -> list[str]:
    """The axes a table shows: all, or a problem's recipe axes."""
    return report.axes if problem is None else report.recipe_axes


def time_cell(row: Mapping[str, Any], column: str, digits: int = 0) -> str:
    """A group's time to target: the Kaplan–Meier median (``low–high`` where the logged epochs
    allow a range; ``> T`` where half the runs did not reach it by the longest run's T) and its
    95% CI (``∞``: no upper limit)."""
    median = row.get(f"{column} median", math.nan)
    if median is None or math.isnan(median):
        return MISSING
    earliest, horizon = row[f"{column} median_earliest"], row[f"{column} horizon"]

    def shown(value: float) -> str:
        return "∞" if math.isinf(value) else number(float(value), digits)

    if math.isinf(median):
        text = f"> {shown(horizon)}" if earliest == median else f"≥ {shown(earliest)}"
    elif earliest < median:
        text = f"{shown(earliest)}–{shown(median)}"
    else:
        text = shown(median)
    low, high = row[f"{column} ci_low"], row[f"{column} ci_high"]
    if math.isinf(low):  # the whole interval beyond the runs' epochs: nothing more to say
        return text
    return f"{text} [{shown(low)}, {shown(high)}]"


def _has(report: Report, problem: str | None, column: str) -> bool:
    rows = report.shown(problem)
    return column in rows and bool((rows[column].fillna(0) > 0).any())


def audit_cell(row: Mapping[str, Any]) -> str:
    """A group's audit: ``FAILED k/n`` (shown loud), ``passed`` (with the largest difference),
    ``skipped``, or a dash where its runs were not audited."""
    passed, failed, skipped = (
        int(row.get(f"audit {k}", 0)) for k in ("passed", "failed", "skipped")
    )
    audited = passed + failed + skipped
    if failed:
        return f"FAILED {failed}/{audited}"
    if passed:
        diff = row.get("audit difference", math.nan)
        more = f", {skipped} skipped" if skipped else ""
        return f"passed (≤ {diff:.1g}{more})" if not math.isnan(diff) else f"passed{more}"
    return "skipped" if skipped else MISSING


def display_table(report: Report, problem: str | None = None) -> Table:
    """The summary (every group, or one problem's) as header and rows of strings (terminal,
    Markdown and HTML share it). A test metric as the headline has no test column of its own;
    "best" is shown where the metric has a history; time to target, runs stopped early and
    the audit where there are any."""
    m, axes = report.metric, _axes(report, problem)
    test = test_metric(m)
    rows_in = report.shown(problem)
    histories = report.runs.get("history", [])
    with_best = any(len(h) > 1 for h in histories)
    with_test = test != m and f"{test} mean" in rows_in
    header = [*axes, f"{m} (95% CI)", *([f"best {m}"] if with_best else []),
              *([f"{test} (95% CI)"] if with_test else []), "train/loss", "s/run"]  # fmt: skip
    if report.target is not None:
        sign = "≥" if report.higher else "≤"
        header += [f"epochs to {m} {sign} {report.target:g} (median [95% CI])", "reached",
                   "s to target"]  # fmt: skip
    stopped, audited = (
        _has(report, problem, "stopped"),
        any(_has(report, problem, f"audit {k}") for k in ("passed", "failed", "skipped")),
    )
    header += [*(["stopped early (mean epoch)"] if stopped else []), *(["audit"] if audited else []),
               "n", "failed", "diverged"]  # fmt: skip
    rows = []
    for _, row in rows_in.iterrows():
        cells = [str(row[a]) for a in axes] + [_ci(row, m)]
        cells += [number(row.get(f"best {m} mean", math.nan))] if with_best else []
        cells += [_ci(row, test)] if with_test else []
        cells += [number(row.get("train/loss mean", math.nan)),
                  number(row.get("time/seconds mean", math.nan), 2)]  # fmt: skip
        if report.target is not None:
            counted = row.get("target runs", 0)
            cells += [time_cell(row, "epochs_to_target"),
                      f"{row['reached']}/{counted}" if counted else MISSING,
                      time_cell(row, "seconds_to_target", 2)]  # fmt: skip
        if stopped:
            count = int(row["stopped"])
            epoch = number(row["stopped_epoch mean"], 1) if count else MISSING
            cells.append(f"{epoch} ({count}/{row['finished']})" if count else MISSING)
        if audited:
            cells.append(audit_cell(row))
        cells += [str(row["finished"]), str(row["failed"] + row["killed"] + row["running"]),
                  str(row["diverged"])]  # fmt: skip
        rows.append(cells)
    return header, rows


def comparison_table(report: Report, problem: str | None = None) -> Table:
    """The pairwise tests (every problem's, or one's) as header and rows of strings."""
    baseline = report.baselines.get(problem, report.baseline) if problem else report.baseline
    header = ["group", f"diff vs {baseline} (metric units)", "effect size (Cohen's d_z / d)",
              "test", "pairs", "p", "p (Holm)"]  # fmt: skip
    if problem is None and report.problem_axes:
        header.insert(0, "problem")
    rows = []
    for _, row in _rows(report, report.comparisons, problem).iterrows():
        cells = [row["group"], number(row["diff"]), number(row["effect"], 2), row["test"],
                 str(row["pairs"]), number(row["p"], 3), number(row["p holm"], 3)]  # fmt: skip
        rows.append([row["problem"], *cells] if len(header) == 8 else cells)
    return header, rows


def fair_table(report: Report, problem: str | None = None) -> Table:
    """The best-over-nuisance comparison (every problem's, or one's) as header and rows."""
    assert report.fair is not None
    others = [a for a in _axes(report, problem) if a != report.nuisance]
    header = [*others, f"best {report.nuisance}", f"{report.metric} (selected on)",
              f"{test_metric(report.metric)} (95% CI)", "n"]  # fmt: skip
    rows = []
    for _, row in _rows(report, report.fair, problem).iterrows():
        test = {"test mean": row["test mean"], "test ci_low": row["test ci_low"],
                "test ci_high": row["test ci_high"]}  # fmt: skip
        rows.append([*(str(row[a]) for a in others), str(row[f"best {report.nuisance}"]),
                     number(row[f"{report.metric} mean"]), _ci(test, "test"), str(row["n"])])  # fmt: skip
    return header, rows


def across_table(report: Report, compact: bool = False) -> Table:
    """The recipes across the problems, best mean rank first: each problem's score (the
    recipe's mean over seeds) and rank there, wins/ties/losses against the baseline, and the
    tests against it over the problems (``compact``: without the p-values)."""
    across = report.across
    assert across is not None
    header = [*across.recipe_axes, "mean rank", *across.problems, f"W/T/L vs {across.baseline}"]
    nemenyi = not compact and across.omnibus.test == "Friedman"  # two recipes: Wilcoxon's only
    if not compact:
        header += ["p (Wilcoxon, Holm)", *(["p (Nemenyi)"] if nemenyi else [])]
    table = across.table()
    rows = []
    for _, row in table.iterrows():
        recipe = row["recipe"]
        cells = [str(row.get(a, "")) for a in across.recipe_axes] + [f"{row['mean rank']:.2f}"]
        for problem in across.problems:
            cell = f"{number(row[f'{problem} {across.column}'])} ({row[f'{problem} rank']:g})"
            if across.chosen is not None and across.chosen.loc[problem, recipe]:
                cell += f" at {across.nuisance}={across.chosen.loc[problem, recipe]}"
            cells.append(cell)
        baseline = recipe == across.baseline
        cells.append("baseline" if baseline else f"{row['wins']}/{row['ties']}/{row['losses']}")
        if not compact:
            cells.append(MISSING if baseline else p_value(row["p wilcoxon holm"]))
        if nemenyi:
            cells.append(MISSING if baseline else p_value(row["p posthoc"]))
        rows.append(cells)
    return header, rows


def across_text(report: Report) -> str:
    """The tests across problems in words, and how to read the table."""
    across = report.across
    assert across is not None
    o, n = across.omnibus, len(across.problems)
    if o.test == "Friedman":
        test = (f"Friedman χ² = {o.statistic:.2f}, p = {p_value(o.p_value)} ({n} problems, "
                f"{o.n_recipes} recipes); Nemenyi's critical difference of mean ranks at "
                f"α = {across.alpha:g}: {across.critical_difference:.2f}.")  # fmt: skip
    elif o.test:
        test = f"Wilcoxon signed-rank test over {n} problems: W = {o.statistic:g}, p = {p_value(o.p_value)}."
    else:
        test = f"No test across problems: {n} complete problem(s), {o.n_recipes} recipe(s)."
    return (
        f"Each cell: the recipe's mean `{across.column}` over seeds on that problem, and its "
        f"rank there (1 = best). {test} W/T/L: wins, ties and losses against "
        f"{across.baseline} on each problem, a tie being no significant difference there "
        f"(paired t-test by seed, else Welch; Holm-adjusted over the recipes; α = {across.alpha:g})."
    )


def profile_table(report: Report) -> Table:
    """The performance profile at a few τ: the share of problems on which a recipe reached the
    target within τ × the best recipe's epochs there (each a Kaplan–Meier median)."""
    across = report.across
    assert across is not None and across.profile is not None
    n = len(across.problems)
    header = ["recipe", *(f"ρ({tau:g})" for tau in across.profile.columns)]
    rows = [
        [recipe, *(f"{round(share * n)}/{n}" for share in across.profile.loc[recipe])]
        for recipe in across.mean_ranks.index
    ]
    return header, rows


def times_table(report: Report) -> Table:
    """Each recipe's epochs to target on each problem: the Kaplan–Meier median [95% CI] over
    its seeds, and how many reached it (the times the performance profile compares)."""
    across = report.across
    assert across is not None and across.time_cells is not None
    header = ["recipe", *across.problems]
    rows = []
    for recipe in across.mean_ranks.index:
        cells = [recipe]
        for problem in across.problems:
            t = across.time_cells[(problem, recipe)]
            row = {"epochs_to_target median": t.median, "epochs_to_target ci_low": t.low,
                   "epochs_to_target ci_high": t.high,
                   "epochs_to_target median_earliest": t.median_earliest,
                   "epochs_to_target horizon": t.horizon}  # fmt: skip
            cells.append(f"{time_cell(row, 'epochs_to_target')} ({t.reached}/{t.n})")
        rows.append(cells)
    return header, rows


METHODS = (
    "Mean over seeds of each group's finished runs, with Student's t 95% confidence interval "
    "(mean ± t(0.975, n−1)·s/√n). Failed, killed and diverged runs are counted, not averaged. "
    "'Best' and the ranking follow the metric's direction (higher for accuracy, F1, R² and "
    "metrics that declare higher_is_better; lower otherwise). "
    "Epochs to target (Kaplan–Meier, SciPy's ecdf on CensoredData): a run reaches the target "
    "at the first logged epoch whose validation metric is at or past it; a run that never does "
    "(a diverged one included) is right-censored at its planned epochs, so it counts. The "
    "median is the first epoch by which the estimated share of runs reaching the target is at "
    "least one half ('> T': not within the T epochs run); its 95% CI comes from the log-log "
    "pointwise bands (Greenwood's variance) where they cross one half (∞: no upper limit). "
    "Where the metric was logged at some epochs only, a run's first epoch at the target lies "
    "after the logged epoch before, and the median is shown as the range those epochs allow "
    "(low–high), with the widest CI. Seconds to target: the same on each run's epochs times its "
    "seconds per epoch. Tests compare each group with the baseline on "
    "the test metric: a paired t-test by seed when the groups share seeds (effect size Cohen's "
    "d_z), else Welch's t-test (Cohen's d, pooled sd); two-sided p-values, Holm-adjusted for the "
    "number of comparisons. Groups are compared only within their problem (dataset, model, "
    "data_seed). An axis searched over a range (no value run twice, as Optuna's trials) is not "
    "a group: each group of the other axes shows its best trials, and its best value chosen on "
    "validation (the fair comparison). Across problems (Demšar, JMLR 2006): the recipes are "
    "ranked within each problem "
    "on their mean test metric (ties share the mean rank); the Friedman test (SciPy, tie-"
    "corrected) and Nemenyi's post-hoc test (scikit-posthocs) for three recipes or more; "
    "Wilcoxon's signed-rank test over the problems (zero differences split) for two, and for "
    "each recipe against the baseline, Holm-adjusted. Only problems where every recipe has a "
    "finished run are used. Performance profile (Dolan and Moré 2002): a recipe's epochs to "
    "target on a problem is its Kaplan–Meier median over its seeds (infinite when fewer than "
    "half reached it); ρ(τ) is the share of problems where it is at most τ × the best "
    "recipe's. Stopped early: finished runs that early stopping ended, and their mean last "
    "epoch. Audit: whether a stacked member trained as its plain model alone (README, How "
    "sweeps run fast); a FAILED audit means those runs' numbers cannot be trusted."
)


def _sections(report: Report) -> list[tuple[str, Table | str, bool]]:
    """(title, table or paragraph, whether its first row is the best) in the order shown:
    failed audits first; with a searched axis, each problem's fair comparison before its
    trials. A table without rows is left out."""
    sections: list[tuple[str, Table | str, bool]] = []
    if report.warnings:
        sections.append(("", "\n".join(report.warnings), False))
    if report.across is not None:
        across = report.across
        title = (
            f"Across problems: {len(across.problems)} problems by {', '.join(report.problem_axes)}"
        )
        sections += [(title, across_table(report), True), ("", across_text(report), False)]
        if across.time_cells is not None and across.problems:
            sections.append((f"Epochs to {report.metric} {'≥' if report.higher else '≤'} "
                             f"{report.target:g} on each problem (Kaplan–Meier median [95% CI], "
                             "reached)", times_table(report), False))  # fmt: skip
        if across.profile is not None:
            sections.append(("Performance profile: epochs to target", profile_table(report), False))
    for problem in report.problems:
        single = not report.problem_axes
        where = "" if single else f"{problem}: "
        axes = ", ".join(report.axes if single else report.recipe_axes) or "nothing (one group)"
        fair = []
        if report.fair is not None and not report.fair.empty:
            per = report.scientific or ", ".join(_others(report))
            fair = [(f"{where}fair comparison: best {report.nuisance}{f' per {per}' if per else ''}",
                     fair_table(report, None if single else problem), False)]  # fmt: skip
        shown = report.shown(None if single else problem)
        table_title = f"{where}runs grouped by {axes}"
        if report.searched:
            others = ", ".join(_others(report))
            total = (
                len(report.summary) if single else int((report.summary["problem"] == problem).sum())
            )
            table_title = (f"{where}the best trials{f' of each {others}' if others else ''} "
                           f"({len(shown)} of {total} trials; {report.nuisance} searched)")  # fmt: skip
        sections += fair if report.searched else []
        sections.append((table_title, display_table(report, None if single else problem), True))
        baseline = report.baselines.get(problem)
        if baseline is not None and not report.searched:
            sections.append((f"{where}each group vs {baseline} ({test_metric(report.metric)})",
                             comparison_table(report, None if single else problem), False))  # fmt: skip
        sections += [] if report.searched else fair
    if report.notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in report.notes), False))
    return [(t, c, b) for t, c, b in sections if isinstance(c, str) or c[1]]


def _others(report: Report) -> list[str]:
    """The recipe axes but the nuisance axis."""
    return [a for a in report.recipe_axes if a != report.nuisance]


LOUD = "FAILED"  # a cell that starts with it is shown loud (a failed audit)


def print_report(report: Report) -> None:
    """The terminal view: failed audits first, across problems (if several), then each
    problem's summary (best group highlighted), tests and fair comparison; then what was left
    out."""
    from rich.markup import escape

    sweep = report.sweep
    print(f"{sweep.experiment} · sweep {sweep.sweep_id} · {len(sweep.runs)} runs · {report.metric}")
    for title, content, best in _sections(report):
        if isinstance(content, str):
            print(f"{title}\n{content}" if title else content)
            continue
        header, rows = content
        names = {*report.axes, "group", "problem", "recipe"}
        justify = ["left" if name in names else "right" for name in header]
        loud = [[f"[bold red]{escape(c)}[/]" if c.startswith(LOUD) else c for c in row]
                for row in rows]  # fmt: skip
        print_table(title, header, loud, 220, justify, ["bold green"] if best else [])


def write_report(report: Report, out: Path) -> list[Path]:
    """report.md and a self-contained report.html (plots embedded), plus the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    pngs = plot_report(report, out)
    sweep = report.sweep
    sections = _sections(report)
    target = f", target {report.metric} {report.target:g}" if report.target is not None else ""
    intro = (f"Experiment `{sweep.experiment}`, sweep `{sweep.sweep_id}`: {len(sweep.runs)} runs, "
             f"headline metric `{report.metric}`{target}. Store: `{sweep.uri}`.")  # fmt: skip

    md = [f"# lossbench report: {sweep.experiment}", "", intro, ""]
    for title, content, _ in sections:
        md += [f"## {title}", ""] if title else []
        if isinstance(content, str):
            loud = content in report.warnings or content == "\n".join(report.warnings)
            md += [f"**{content}**" if loud else content, ""]
        else:
            header, rows = content
            rows = [[f"**{c}**" if c.startswith(LOUD) else c for c in row] for row in rows]
            md += [markdown_table(header, rows), ""]
    md += [
        "## Plots",
        "",
        *(f"![{p.stem}]({p.name})" for p in pngs),
        "",
        "## Method",
        "",
        METHODS,
        "",
    ]
    (out / "report.md").write_text("\n".join(md))

    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse;"
             "margin:1em 0;font-size:13px} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             " th{background:#f0f0f0} tr.best{background:#e3f6e3;font-weight:bold} img{max-width:100%}"
             " .loud{color:#b00000;font-weight:bold}")  # fmt: skip
    name = html.escape(sweep.experiment)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: {name}"
             f"</title><style>{style}</style></head><body><h1>lossbench report: {name}</h1>"
             f"<p>{html.escape(intro)}</p>"]  # fmt: skip
    for title, content, best in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>" if title else "")
        if isinstance(content, str):
            lines = content.split("\n")
            css = " class=loud" if content == "\n".join(report.warnings) else ""
            parts.append("".join(f"<p{css}>{html.escape(line)}</p>" for line in lines))
        else:
            table = html_table(*content, best)  # a failed audit in red
            parts.append(table.replace(f"<td>{LOUD}", f"<td class=loud>{LOUD}"))
    parts.append("<h2>Plots</h2>")
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<p><img alt='{png.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append(f"<h2>Method</h2><p>{html.escape(METHODS)}</p></body></html>")
    (out / "report.html").write_text("".join(parts))
    return [out / "report.md", out / "report.html", *pngs]
