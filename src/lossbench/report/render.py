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

from lossbench.analysis import stats
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


def display_table(report: Report, problem: str | None = None) -> Table:
    """The summary (every group, or one problem's) as header and rows of strings (terminal,
    Markdown and HTML share it)."""
    m, axes = report.metric, _axes(report, problem)
    test = test_metric(m)
    header = [*axes, f"{m} (95% CI)", f"best {m}", f"{test} (95% CI)", "train/loss", "s/run"]
    if report.target is not None:
        header += [
            f"epochs to {m} {'≥' if stats.higher_is_better(m) else '≤'} {report.target:g}",
            "s to target",
        ]
    header += ["n", "failed", "diverged"]
    rows = []
    for _, row in _rows(report, report.summary, problem).iterrows():
        cells = [str(row[a]) for a in axes]
        cells += [_ci(row, m), number(row.get(f"best {m} mean", math.nan)), _ci(row, test),
                  number(row.get("train/loss mean", math.nan)), number(row.get("time/seconds mean", math.nan), 2)]  # fmt: skip
        if report.target is not None:
            censored = f" ({row['censored_runs']} censored)" if row["censored_runs"] else ""
            cells += [number(row["epochs_to_target mean"], 1) + censored,
                      number(row["seconds_to_target mean"], 2)]  # fmt: skip
        cells += [str(row["finished"]), str(row["failed"] + row["killed"] + row["running"]),
                  str(row["diverged"])]  # fmt: skip
        rows.append(cells)
    return header, rows


def comparison_table(report: Report, problem: str | None = None) -> Table:
    """The pairwise tests (every problem's, or one's) as header and rows of strings."""
    baseline = report.baselines.get(problem, report.baseline) if problem else report.baseline
    header = ["group", f"diff vs {baseline}", "effect size", "test", "pairs", "p", "p (Holm)"]
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
              "test (95% CI)", "n"]  # fmt: skip
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
    target within τ × the best recipe's epochs there."""
    across = report.across
    assert across is not None and across.profile is not None
    n = len(across.problems)
    header = ["recipe", *(f"ρ({tau:g})" for tau in across.profile.columns)]
    rows = [
        [recipe, *(f"{round(share * n)}/{n}" for share in across.profile.loc[recipe])]
        for recipe in across.mean_ranks.index
    ]
    return header, rows


METHODS = (
    "Mean over seeds of each group's finished runs, with Student's t 95% confidence interval "
    "(mean ± t(0.975, n−1)·s/√n). Failed, killed and diverged runs are counted, not averaged. "
    "Epochs to target: the first epoch whose validation metric reaches the target; runs that "
    "never reach it are censored (counted, left out of the mean). Seconds to target: those "
    "epochs times the run's mean time per epoch. Tests compare each group with the baseline on "
    "the test metric: a paired t-test by seed when the groups share seeds (effect size Cohen's "
    "d_z), else Welch's t-test (Cohen's d, pooled sd); two-sided p-values, Holm-adjusted for the "
    "number of comparisons. Groups are compared only within their problem (dataset, model, "
    "data_seed). Across problems (Demšar, JMLR 2006): the recipes are ranked within each problem "
    "on their mean test metric (ties share the mean rank); the Friedman test (SciPy, tie-"
    "corrected) and Nemenyi's post-hoc test (scikit-posthocs) for three recipes or more; "
    "Wilcoxon's signed-rank test over the problems (zero differences split) for two, and for "
    "each recipe against the baseline, Holm-adjusted. Only problems where every recipe has a "
    "finished run are used. Performance profile (Dolan and Moré 2002): a recipe's epochs to "
    "target on a problem is the median over its seeds (a run that never reached it, or did not "
    "finish, counts as never); ρ(τ) is the share of problems where it is at most τ × the best "
    "recipe's."
)


def _sections(report: Report) -> list[tuple[str, Table | str, bool]]:
    """(title, table or paragraph, whether its first row is the best) in the order shown."""
    sections: list[tuple[str, Table | str, bool]] = []
    if report.across is not None:
        across = report.across
        title = (
            f"Across problems: {len(across.problems)} problems by {', '.join(report.problem_axes)}"
        )
        sections += [(title, across_table(report), True), ("", across_text(report), False)]
        if across.profile is not None:
            sections.append(("Performance profile: epochs to target", profile_table(report), False))
    for problem in report.problems:
        single = not report.problem_axes
        where = "" if single else f"{problem}: "
        axes = ", ".join(report.axes if single else report.recipe_axes) or "nothing (one group)"
        sections.append(
            (
                f"{where}runs grouped by {axes}",
                display_table(report, None if single else problem),
                True,
            )
        )
        baseline = report.baselines.get(problem)
        if baseline is not None:
            sections.append((f"{where}each group vs {baseline} ({test_metric(report.metric)})",
                             comparison_table(report, None if single else problem), False))  # fmt: skip
        if report.fair is not None and not report.fair.empty:
            sections.append((f"{where}fair comparison: best {report.nuisance} per {report.scientific}",
                             fair_table(report, None if single else problem), False))  # fmt: skip
    if report.notes:
        sections.append(("Notes", "\n".join(f"- {n}" for n in report.notes), False))
    return sections


def print_report(report: Report) -> None:
    """The terminal view: across problems first (if several), then each problem's summary
    (best group highlighted), tests and fair comparison; then what was left out."""
    sweep = report.sweep
    print(f"{sweep.experiment} · sweep {sweep.sweep_id} · {len(sweep.runs)} runs · {report.metric}")
    for title, content, best in _sections(report):
        if isinstance(content, str):
            print(f"{title}\n{content}" if title else content)
            continue
        header, rows = content
        names = {*report.axes, "group", "problem", "recipe"}
        justify = ["left" if name in names else "right" for name in header]
        print_table(title, header, rows, 220, justify, ["bold green"] if best else [])


NOTE_LIMIT = 7000  # characters; MLflow keeps at most 8,000 in a tag's value


def _headline(report: Report, problem: str | None) -> Table:
    """A problem's headline columns: axes, the metric's mean [95% CI] on validation and test,
    n, and failed or diverged runs where there are any."""
    header, rows = display_table(report, problem)
    m = report.metric
    n_axes = len(_axes(report, problem))
    keep = [*range(n_axes), header.index(f"{m} (95% CI)")]
    if any(row[header.index(f"{test_metric(m)} (95% CI)")] != MISSING for row in rows):
        keep.append(header.index(f"{test_metric(m)} (95% CI)"))
    keep.append(header.index("n"))
    for extra in ("failed", "diverged"):  # shown only when some group has such runs
        if any(row[header.index(extra)] != "0" for row in rows):
            keep.append(header.index(extra))
    head = [header[i] if header[i] != "n" else "n (finished)" for i in keep]
    return head, [[row[i] for i in keep] for row in rows]


def run_description(report: Report, limit: int = NOTE_LIMIT) -> str:
    """The sweep run's description (MLflow's ``mlflow.note.content``, Markdown), table first
    (the run page shows a description's first lines until "Show more"). One problem: each
    group's mean [95% CI] on validation and test, n, best first, the fair comparison if any.
    Several: the recipes across the problems first, then each problem's headline table.
    What does not fit in ``limit`` characters is counted, not shown."""
    if report.across is not None:
        return _across_description(report, limit)
    head, cells = _headline(report, None)
    sweep, m = report.sweep, report.metric
    intro = (f"{len(sweep.runs)} runs of sweep `{sweep.sweep_id}`, grouped by "
             f"{', '.join(report.axes) or 'nothing (one group)'}: mean [95% CI] over seeds, "
             f"best `{m}` first (lossbench-report).")  # fmt: skip
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
        text = f"{markdown_table(head, cells[:shown])}\n\n{intro}{rest}\n\n{fair}{FOOTER}"
        if len(text) <= limit or shown <= 1:
            return text[:limit]
        shown -= 1


FOOTER = ("Full report (every metric, tests against the best group, plots, method): this "
          "run's artifacts, `report/report.html` and `report/report.md`.")  # fmt: skip


def _across_description(report: Report, limit: int) -> str:
    """Several problems: the across-problem table, then per-problem headlines, as many groups
    per problem (then problems, then recipes) as fit."""
    across = report.across
    assert across is not None
    sweep = report.sweep
    head, rows = across_table(report, compact=True)
    intro = (f"{len(sweep.runs)} runs of sweep `{sweep.sweep_id}`: {len(report.problems)} problems "
             f"({', '.join(report.problem_axes)}), recipes by {', '.join(across.recipe_axes)} "
             f"(lossbench-report). {across_text(report)}")  # fmt: skip
    notes = "".join(f"\n\nNote: {n}" for n in report.notes)
    headlines = [(p, _headline(report, p)) for p in report.problems]
    most = max((len(cells) for _, (_, cells) in headlines), default=0)
    # the fullest first: every group of every problem, then fewer groups, fewer problems, recipes
    plans = [(len(rows), len(headlines), n) for n in range(most, 0, -1)]
    plans += [(len(rows), k, 1) for k in range(len(headlines) - 1, -1, -1)]
    plans += [(r, 0, 1) for r in range(len(rows) - 1, 0, -1)]
    text = ""
    for n_rows, n_problems, per_problem in plans:
        parts = [markdown_table(head, rows[:n_rows])]
        if n_rows < len(rows):
            parts.append(f"{len(rows) - n_rows} more recipes in the full report.")
        parts.append(intro + notes)
        for problem, (h, cells) in headlines[:n_problems]:
            more = len(cells) - per_problem
            rest = f" ({more} more in the full report)" if more > 0 else ""
            parts.append(f"**{problem}**: mean [95% CI] over seeds, best `{report.metric}` first{rest}"
                         f"\n\n{markdown_table(h, cells[:per_problem])}")  # fmt: skip
        if n_problems < len(headlines):
            parts.append(f"{len(headlines) - n_problems} more problems in the full report.")
        parts.append(FOOTER)
        text = "\n\n".join(parts)
        if len(text) <= limit:
            return text
    return text[:limit]


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
        md += [content if isinstance(content, str) else markdown_table(*content), ""]
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
             " th{background:#f0f0f0} tr.best{background:#e3f6e3;font-weight:bold} img{max-width:100%}")  # fmt: skip
    name = html.escape(sweep.experiment)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: {name}"
             f"</title><style>{style}</style></head><body><h1>lossbench report: {name}</h1>"
             f"<p>{html.escape(intro)}</p>"]  # fmt: skip
    for title, content, best in sections:
        parts.append(f"<h2>{html.escape(title)}</h2>" if title else "")
        if isinstance(content, str):
            lines = content.split("\n")
            parts.append("".join(f"<p>{html.escape(line)}</p>" for line in lines))
        else:
            parts.append(html_table(*content, best))
    parts.append("<h2>Plots</h2>")
    for png in pngs:
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<p><img alt='{png.stem}' src='data:image/png;base64,{data}'></p>")
    parts.append(f"<h2>Method</h2><p>{html.escape(METHODS)}</p></body></html>")
    (out / "report.html").write_text("".join(parts))
    return [out / "report.md", out / "report.html", *pngs]
