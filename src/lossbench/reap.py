"""``lossbench-reap``: mark runs KILLED that say RUNNING but whose process is gone.

A process killed with SIGKILL (or a machine that went down) cannot record its runs' end, so
they stay RUNNING. Each run carries the host, pid and pid start time of the process writing it;
a RUNNING run of this host whose process no longer exists is stale. A new sweep reaps its
experiment by itself; this command reaps on demand. Runs of other hosts are reaped only with
``--older-than``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lossbench.tracking.reaping import experiment_ids, reap, stale_runs
from lossbench.tracking.records import NotInStore, require_store
from lossbench.tracking.store import StoreUnreachable, check_reachable, open_client, tracking_uri


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-reap``."""
    parser = argparse.ArgumentParser(prog="lossbench-reap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", help="only this experiment (default: all)")
    parser.add_argument("--older-than", type=float, metavar="HOURS",
                        help="also reap RUNNING runs of any host started more than HOURS ago")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="list the stale runs, change nothing"
    )
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)

    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    try:
        check_reachable(uri)
        require_store(uri)  # reaping an empty location creates no store there
        client = open_client(uri)
        ids = experiment_ids(client, args.experiment)
        if args.experiment is not None and not ids:
            print(f"lossbench-reap: no experiment {args.experiment!r} in {uri}", file=sys.stderr)
            return 2
        if args.dry_run:
            stale = stale_runs(client, ids, args.older_than)
            for run in stale:
                print(f"stale: {run.info.run_id} {run.info.run_name}")
            print(f"{len(stale)} stale RUNNING run(s) in {uri} (dry run: nothing changed)")
            return 0
        reaped = reap(client, ids, args.older_than)
    except (StoreUnreachable, NotInStore) as err:
        print(f"lossbench-reap: {err}", file=sys.stderr)
        return 2
    print(f"Marked {len(reaped)} stale RUNNING run(s) KILLED in {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
