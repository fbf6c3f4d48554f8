"""How lossbench's commands show numbers: as text, in tables (terminal, Markdown, HTML) and in
figures written to files. Shared by ``lossbench-report`` and ``lossbench-claims``.

rich and matplotlib are imported only when a table is printed or a figure drawn.
"""

from __future__ import annotations

import html
import math
import os
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lossbench.analysis.stats import Interval

MISSING = "–"  # what a table shows for a value that does not exist (NaN)


def number(value: Any, digits: int = 4) -> str:
    """A table cell: floats to ``digits`` decimals (significant digits when very large or
    small), NaN as a dash, anything else as ``str``."""
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        large_or_small = abs(value) >= 1000 or (value != 0 and abs(value) < 1e-3)
        return f"{value:.{digits}g}" if large_or_small else f"{value:.{digits}f}"
    return str(value)


def p_value(p: float) -> str:
    """A p-value to two significant digits, or a dash when there is none."""
    return MISSING if math.isnan(p) else f"{p:.2g}"


def interval(mean: float | None, low: float | None, high: float | None) -> str:
    """``mean [low, high]``; the mean alone when there is no interval (one run)."""
    if mean is None or math.isnan(mean):
        return MISSING
    if low is None or math.isnan(low):
        return number(mean)
    return f"{number(mean)} [{number(low)}, {number(high)}]"


def plus_minus(ci: Interval) -> str:
    """``mean ± half-width (n=...)``; the mean alone when there is no interval (one run)."""
    if ci.n == 0:
        return MISSING
    if math.isnan(ci.low):
        return f"{ci.mean:.4g} (n={ci.n})"
    return f"{ci.mean:.4g} ± {(ci.high - ci.low) / 2:.2g} (n={ci.n})"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], best_first: bool = False
) -> str:
    """An HTML table (cells escaped); ``best_first`` marks the first row ``class=best``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=best' if best_first and i == 0 else ''}>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in row)
        + "</tr>"
        for i, row in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def print_table(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    justify: Sequence[str] = (),
    row_styles: Sequence[str | None] = (),
    overflow: str = "ellipsis",
    show_lines: bool = False,
) -> None:
    """A rich table on stdout: ``width`` columns wide when stdout is not a terminal (a log
    file), else the terminal's width. ``justify`` per column (default left); ``row_styles``
    per row, from the first; cells may hold rich markup."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=show_lines)
    for i, name in enumerate(header):
        table.add_column(
            name, justify=justify[i] if i < len(justify) else "left", overflow=overflow
        )
    for i, row in enumerate(rows):
        table.add_row(*row, style=row_styles[i] if i < len(row_styles) else None)
    Console(width=None if sys.stdout.isatty() else width).print(table)


@contextmanager
def figure(path: Path, dpi: int, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    """A matplotlib figure and its axes (``plt.subplots(**subplots)``), laid out and saved to
    ``path`` at the end of the block, then closed. Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(**subplots)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def draw_figures(subject: Any, figures: Sequence[tuple[Path, Callable[[Any, Path], None]]]) -> None:
    """Draw figures of ``subject`` (each ``draw(subject, path)``): every other one in a forked
    process while this one draws the rest, where this process can fork safely (no other
    thread); matplotlib spends most of a report's drawing in Python, on one core each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 (imported once, before forking)

    if len(figures) < 2 or not hasattr(os, "fork") or threading.active_count() > 1:
        for path, draw in figures:
            draw(subject, path)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # the others; never back into the caller's code
        code = 1
        try:
            for path, draw in figures[::2]:
                draw(subject, path)
            code = 0
        except BaseException:  # noqa: BLE001 (reported by the parent, the traceback here)
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    try:
        for path, draw in figures[1::2]:
            draw(subject, path)
    finally:
        _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        names = ", ".join(p.name for p, _ in figures[::2])
        raise RuntimeError(f"drawing {names} failed (the traceback above)")
