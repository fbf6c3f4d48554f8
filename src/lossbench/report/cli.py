"""``lossbench-report``: build the report of a sweep, show it, write it, attach it to MLflow."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from lossbench.one_shot import collect_rarely
from lossbench.report.aggregate import default_uri
from lossbench.report.build import build_report
from lossbench.report.description import run_description
from lossbench.report.render import print_report, write_report
from lossbench.tracking.artifacts import log_report, set_description
from lossbench.tracking.records import NotInStore
from lossbench.tracking.store import StoreUnreachable, check_reachable


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-report``."""
    if argv is None:  # the console command: this process ends with the report
        collect_rarely()
    parser = argparse.ArgumentParser(
        prog="lossbench-report",
        description="Compare the runs of a sweep: grouped by the axes it varied, aggregated over "
        "seeds with 95% confidence intervals, tested against the best group of their problem "
        "(dataset, model), and the recipes ranked across the problems (Friedman, post-hoc, "
        "wins/ties/losses), with plots. Reads the store training writes to "
        "($MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db).",
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
        "--target",
        type=float,
        help="value of the metric that counts as reached (time to target: Kaplan-Meier median "
        "over seeds, runs that never reach it censored)",
    )
    parser.add_argument(
        "--vs",
        metavar="GROUP",
        help="baseline recipe, e.g. 'loss=mse' or 'loss=mse,optimizer=sgd', tested against on "
        "every problem (default: each problem's best; across problems, the best mean rank)",
    )
    parser.add_argument(
        "--problem",
        metavar="AXIS",
        help="the axes that make a problem, comma-separated, or 'none' (default: the sweep's "
        "report.problem, else its dataset, model and data_seed axes)",
    )
    parser.add_argument("--scientific", help="axis to compare fairly, e.g. optimizer")
    parser.add_argument(
        "--nuisance", help="axis to take the best of (on validation), e.g. optimizer.lr"
    )
    parser.add_argument("--out", type=Path, help="output directory (default: reports/<experiment>)")
    parser.add_argument(
        "--no-mlflow",
        action="store_true",
        help="do not attach the report to the sweep's run nor set its description",
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)

    uri = args.tracking_uri or default_uri()
    try:
        check_reachable(uri)  # seconds, instead of MLflow's minutes of retries
        report = build_report(uri, args.experiment, args.sweep, args.metric, args.target, args.vs,
                              args.scientific, args.nuisance, args.problem)  # fmt: skip
    except (NotInStore, ValueError) as err:
        print(f"lossbench-report: {err} (store: {uri})", file=sys.stderr)
        return 2
    except StoreUnreachable as err:
        print(f"lossbench-report: {err}", file=sys.stderr)
        return 2
    print_report(report)
    out = args.out or Path("reports") / report.sweep.experiment
    report.files = write_report(report, out)
    print(
        f"\nReport: {out / 'report.md'} and {out / 'report.html'} (plots: {', '.join(p.name for p in report.files[2:])})"
    )
    if report.sweep.parent_run_id and not args.no_mlflow:
        log_report(uri, report.sweep.parent_run_id, out)
        set_description(uri, report.sweep.parent_run_id, run_description(report))
        print(
            f"Attached to the sweep's MLflow run {report.sweep.parent_run_id} (artifacts/report/);"
            " its headline tables are the run's description, on its page in the MLflow UI."
        )
    return 0
