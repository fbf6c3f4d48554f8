"""``lossbench-ui``: the MLflow UI on lossbench's store, bound to 127.0.0.1 unless told otherwise.

It replaces itself with ``mlflow ui``, so Ctrl+C in the terminal stops the UI and its workers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from lossbench.tracking.store import tracking_uri

LOCALHOST = "127.0.0.1"


def ui_command(uri: str, host: str = LOCALHOST, port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line serving ``uri``."""
    mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    return [mlflow, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]


def free_port() -> int:
    """A loopback TCP port nobody listens on right now, for servers started by scripts and tests."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def wait_http(
    url: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    """Wait until ``url`` answers 200, failing early if ``process`` (which should serve it)
    exits; the error then shows the end of its ``log``."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(
                f"the server exited with {process.returncode} before answering {url}:\n{tail}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")
        time.sleep(0.5)


def stop_group(process: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a server started with ``start_new_session=True`` and everything it spawned:
    SIGTERM to its process group, then SIGKILL to what is left (``mlflow`` servers leave
    worker processes behind otherwise)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@contextlib.contextmanager
def serving(uri: str, port: int, log: Path, timeout: float = 120) -> Iterator[str]:
    """Run the MLflow UI on ``uri`` at 127.0.0.1:``port`` until the block ends; yields its
    address once it answers. For scripts and tests; people use ``lossbench-ui``."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            ui_command(uri, LOCALHOST, port),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    address = f"http://{LOCALHOST}:{port}"
    try:
        wait_http(f"{address}/health", timeout, process, log)
        yield address
    finally:
        stop_group(process)


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
