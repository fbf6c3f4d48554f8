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
them as artifacts of the sweep's parent run, whose description (shown on its MLflow page) gets
the headline table. Reads MLflow; never imports torch or Lightning.

The modules: ``aggregate`` (reading and aggregating a sweep), ``render`` (tables, files,
plots) and ``cli``.
"""

from lossbench.report.aggregate import (
    CHOICE_TAG,
    Report,
    aggregate,
    build_report,
    compare_groups,
    default_uri,
    fair_comparison,
    group_label,
    headline_metric,
    runs_frame,
    summarize,
    sweep_axes,
    test_metric,
)
from lossbench.report.cli import main
from lossbench.report.render import (
    METHODS,
    comparison_table,
    display_table,
    fair_table,
    plot_report,
    print_report,
    run_description,
    write_report,
)

__all__ = [
    "CHOICE_TAG",
    "METHODS",
    "Report",
    "aggregate",
    "build_report",
    "comparison_table",
    "compare_groups",
    "default_uri",
    "display_table",
    "fair_comparison",
    "fair_table",
    "group_label",
    "headline_metric",
    "main",
    "plot_report",
    "print_report",
    "run_description",
    "runs_frame",
    "summarize",
    "sweep_axes",
    "test_metric",
    "write_report",
]
