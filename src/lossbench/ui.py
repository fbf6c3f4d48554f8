"""``lossbench-ui``: the MLflow UI on lossbench's store, bound to 127.0.0.1 unless told otherwise.

It replaces itself with ``mlflow ui``, so Ctrl+C in the terminal stops the UI and its workers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

from lossbench.tracking import tracking_uri

LOCALHOST = "127.0.0.1"


def ui_command(uri: str, host: str = LOCALHOST, port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line serving ``uri``."""
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    return [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-ui``."""
    parser = argparse.ArgumentParser(prog="lossbench-ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=LOCALHOST,
                        help="address to bind (default 127.0.0.1: this machine only)")  # fmt: skip
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    if args.host != LOCALHOST:
        print(f"lossbench-ui: --host {args.host} exposes the store to the network", file=sys.stderr)
    command = ui_command(uri, args.host, args.port)
    print(
        f"MLflow UI for {uri} at http://{args.host}:{args.port} (it takes ~20 s to start)",
        flush=True,
    )
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
