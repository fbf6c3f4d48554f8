"""``lossbench-report``: which recipe of a sweep won, by how much, and how sure we can be.

It finds the axes the sweep varied (Hydra choices and params, seed aside) and splits them into
problem axes (the dataset, the model, a varied ``data_seed``; ``--problem`` overrides) and
recipe axes. It groups the runs by them and aggregates over seeds: mean, std, 95% t-interval and n of the final and best
validation metric, the test metric, the final train loss, epochs- and seconds-to-target (runs
that never reach the target are counted as censored) and time per run. Failed, diverged and
killed runs are counted per group. Within each problem, groups are tested against its best
group (or ``--vs``), paired by seed where the seeds match (see :mod:`lossbench.analysis.stats`); groups
of two problems are never compared. With a scientific and a nuisance axis, it also gives the
fair comparison within each problem: for each value of the scientific axis, the best setting
of the nuisance axis chosen on validation, reported on test. Across problems it ranks the
recipes (Friedman and post-hoc tests, a critical-difference diagram), counts their wins, ties
and losses against the best recipe, and, with a target, draws their performance profile.

It prints the table, writes ``reports/<experiment>/report.md`` and a self-contained
``report.html`` with plots (learning curves, bars with CIs, a heatmap over two axes), and logs
them as artifacts of the sweep's parent run, whose description (shown on its MLflow page) gets
the headline table. Reads MLflow; never imports torch or Lightning.

The modules: ``aggregate`` (reading and aggregating a sweep), ``values`` (numbers as shown,
searched axes), ``problems`` (problem axes, the comparison across problems), ``build`` (the
report), ``render`` (tables, files), ``description`` (the MLflow description), ``plots`` and
``cli``.
"""

from lossbench.report.aggregate import (
    CHOICE_TAG,
    compare_groups,
    default_uri,
    fair_comparison,
    group_label,
    headline_metric,
    metric_direction,
    runs_frame,
    summarize,
    sweep_axes,
    test_metric,
)
from lossbench.report.build import Report, aggregate, build_report, problems_table
from lossbench.report.cli import main
from lossbench.report.description import run_description
from lossbench.report.plots import plot_report
from lossbench.report.problems import Across, across_problems, is_problem_axis, problem_axes
from lossbench.report.render import (
    METHODS,
    across_table,
    comparison_table,
    display_table,
    fair_table,
    print_report,
    profile_table,
    times_table,
    write_report,
)

__all__ = [
    "CHOICE_TAG",
    "METHODS",
    "Across",
    "Report",
    "across_problems",
    "across_table",
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
    "is_problem_axis",
    "main",
    "metric_direction",
    "plot_report",
    "print_report",
    "problem_axes",
    "problems_table",
    "profile_table",
    "run_description",
    "runs_frame",
    "summarize",
    "sweep_axes",
    "test_metric",
    "times_table",
    "write_report",
]
