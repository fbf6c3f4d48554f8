"""``lossbench-claims [IDS...]``: load the claims, run their sweeps, judge, report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lossbench.claims
from lossbench.claims.evaluate import evaluate
from lossbench.claims.files import write_report
from lossbench.claims.load import CLAIMS_DIR, MissingClaim, read_claims
from lossbench.claims.render import print_verdicts, verdicts_json
from lossbench.claims.run import run_claims
from lossbench.claims.spec import ClaimError
from lossbench.config.spec import ConfigError

EXIT_CODES = (
    "Exit code: 0 when every claim was judged, whatever its verdict; 2 on bad input: a claim "
    "file that cannot be loaded (its error is printed and the other claims are still judged), "
    "an unknown or duplicated claim id, a store that cannot be reached; 130 or 143 when interrupted."
)


def _print_problems(errors: Sequence[ClaimError]) -> None:
    for err in errors:
        print(f"lossbench-claims: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-claims``."""
    from lossbench.interrupts import Interrupted
    from lossbench.tracking.artifacts import log_report
    from lossbench.tracking.store import StoreUnreachable, tracking_uri
    from lossbench.tracking.sweeps import close_sweep, open_sweep, sweep_parent
    from lossbench.tracking.writer import Tracker

    parser = argparse.ArgumentParser(
        prog="lossbench-claims",
        description=(lossbench.claims.__doc__ or "").split("\n\n")[0],
        epilog=EXIT_CODES,
    )
    parser.add_argument("ids", nargs="*", help="claim ids (default: every claim in conf/claims/)")
    parser.add_argument(
        "--experiment", default="claims", help="MLflow experiment of the claims' runs"
    )
    parser.add_argument("--json", type=Path, help="also write the verdicts to this JSON file")
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="report directory (default: reports)"
    )
    parser.add_argument(
        "--claims-dir", type=Path, help="where the claim files are (default: conf/claims/)"
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        help="a folder of your own config options (e.g. optimizer/mine.yaml) that claims may "
        "name as lossbench's own (as lossbench-train's --config-dir)",
    )
    parser.add_argument("--n-jobs", type=int, help="worker processes (default: all cores)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")

    start = time.perf_counter()
    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    sweep_dir = Path("multirun") / "claims" / time.strftime("%Y-%m-%d_%H-%M-%S")
    tracker = Tracker(uri, args.experiment)
    files = read_claims(args.claims_dir or CLAIMS_DIR)
    _print_problems(files.errors)  # now, and again at the end
    try:
        try:
            claims = files.select(args.ids)
        except MissingClaim as err:
            if args.claims_dir is None:  # a claim file of your own is found with --claims-dir
                raise MissingClaim(
                    f"{err}; for claim files in another directory: --claims-dir DIR"
                ) from None
            raise
        if not claims and files.errors:
            return 2
        tracker.check_reachable()
        open_sweep(sweep_dir, [c.id for c in claims])
        runs = run_claims(
            claims, uri, args.experiment, args.n_jobs, sweep_dir, config_dir=args.config_dir
        )
        verdicts = [evaluate(claim, runs) for claim in claims]
    except (ConfigError, StoreUnreachable) as err:
        print(f"lossbench-claims: {err}", file=sys.stderr)
        return 2
    except Interrupted as interrupt:
        close_sweep(sweep_dir, "KILLED")
        print(f"lossbench-claims: {interrupt}", file=sys.stderr)
        return interrupt.exit_code
    seconds = time.perf_counter() - start
    print_verdicts(verdicts)
    report = write_report(verdicts, args.out, seconds, args.experiment, uri)
    print(f"Report: {report} (each claim's section, plot and JSON in {args.out / 'claims'})")
    parent = sweep_parent(sweep_dir, tracker).parent_run_id  # created here if nothing trained
    assert parent is not None
    log_report(uri, parent, args.out / "claims", "claims-report")
    log_report(uri, parent, report, "claims-report")
    close_sweep(sweep_dir, "FINISHED")
    print(f"Attached to MLflow run {parent} (artifacts/claims-report/)")
    if args.json:
        args.json.write_text(json.dumps(verdicts_json(verdicts), indent=2))
        print(f"Verdicts: {args.json}")
    counts = Counter(v.verdict for v in verdicts)
    print(
        f"{len(verdicts)} claims: "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f". Total time {seconds:.0f} s."
    )
    if files.errors:
        print(f"lossbench-claims: {len(files.errors)} claim file problem(s), those claims "
              "not judged:", file=sys.stderr)  # fmt: skip
        _print_problems(files.errors)
        return 2
    return 0
