"""The sweep run's MLflow description (``mlflow.note.content``): the report's headline tables,
as much as fits in what MLflow keeps of a tag."""

from __future__ import annotations

from lossbench.analysis.render import MISSING, markdown_table
from lossbench.report.aggregate import test_metric
from lossbench.report.build import Report
from lossbench.report.render import Table, across_table, across_text, display_table, fair_table

NOTE_LIMIT = 7000  # characters; MLflow keeps at most 8,000 in a tag's value


def _headline(report: Report, problem: str | None) -> Table:
    """A problem's headline columns: axes, the metric's mean [95% CI] on validation and test,
    time to target, runs stopped early and the audit where the report has them, n, and failed
    or diverged runs where there are any."""
    header, rows = display_table(report, problem)
    m = report.metric
    n_axes = len(report.axes if problem is None else report.recipe_axes)
    keep = [*range(n_axes), header.index(f"{m} (95% CI)")]
    test = f"{test_metric(m)} (95% CI)"
    if test in header and any(row[header.index(test)] != MISSING for row in rows):
        keep.append(header.index(test))
    keep += [i for i, h in enumerate(header)
             if h.startswith("epochs to ") or h in ("reached", "stopped early (mean epoch)", "audit")]  # fmt: skip
    keep.append(header.index("n"))
    for extra in ("failed", "diverged"):  # shown only when some group has such runs
        if any(row[header.index(extra)] != "0" for row in rows):
            keep.append(header.index(extra))
    head = [header[i] if header[i] != "n" else "n (finished)" for i in keep]
    return head, [[_loud(row[i]) for i in keep] for row in rows]


def _loud(cell: str) -> str:
    """A failed audit in bold."""
    return f"**{cell}**" if cell.startswith("FAILED") else cell


def _warnings(report: Report) -> str:
    return "".join(f"**{w}**\n\n" for w in report.warnings)


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
        per = (
            report.scientific
            or ", ".join(a for a in report.recipe_axes if a != report.nuisance)
            or "all runs"
        )
        caption = f"**Fair comparison**: best {report.nuisance} per {per}, chosen on {m}"
        fair = f"{caption}\n\n{markdown_table(*fair_table(report))}\n\n"
    if report.searched:  # the trials: the fair comparison is the answer, first
        intro = (f"{len(sweep.runs)} runs of sweep `{sweep.sweep_id}`: the best trials of each "
                 f"group, {report.nuisance} searched (lossbench-report).")  # fmt: skip
    shown = len(cells)
    while True:
        more = len(cells) - shown
        rest = f" {more} more group{'s' if more > 1 else ''} in the full report." if more else ""
        table = f"{markdown_table(head, cells[:shown])}\n\n{intro}{rest}\n\n"
        body = f"{fair}{table}" if report.searched else f"{table}{fair}"
        text = f"{_warnings(report)}{body}{FOOTER}"
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
        text = _warnings(report) + "\n\n".join(parts)
        if len(text) <= limit:
            return text
    return text[:limit]
