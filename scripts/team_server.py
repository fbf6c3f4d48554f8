"""An MLflow tracking server backed by PostgreSQL, for a team (or several machines) sharing one
store: Debian's ``postgresql`` server on loopback, and ``mlflow server`` with an artifact root.

    python scripts/team_server.py --dir .team --port 5001     # Ctrl+C or SIGTERM stops both
    MLFLOW_TRACKING_URI=http://127.0.0.1:5001 lossbench-train -m seed=0,1,2

Everything binds 127.0.0.1. To serve other machines, put the server behind something that
authenticates (MLflow's server has no access control of its own).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from lossbench.ui import stop_group, wait_http

DB_USER = "lossbench"


class Server(NamedTuple):
    """A running team server: its tracking URI and the process group of ``mlflow server``."""

    uri: str
    pgid: int


def postgres_bin() -> Path:
    """The directory of PostgreSQL's server programs (initdb, pg_ctl)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise SystemExit("PostgreSQL's server is not installed: apt-get install postgresql")


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextlib.contextmanager
def postgres(directory: Path, pg_port: int = 5433) -> Iterator[str]:
    """Run PostgreSQL on 127.0.0.1:``pg_port`` with its data under ``directory`` (created on
    first use) and a database ``mlflow``; yield that database's SQLAlchemy URI; stop it."""
    bin_dir = postgres_bin()
    directory = directory.resolve()
    data, socket_dir = directory / "pgdata", directory / "socket"
    for path in (directory, socket_dir):
        path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        postgres_user = pwd.getpwnam("postgres")
        for path in (directory, socket_dir):
            os.chown(path, postgres_user.pw_uid, postgres_user.pw_gid)
    if not (data / "PG_VERSION").exists():
        subprocess.run(_as_owner([str(bin_dir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust"]),
                       check=True, capture_output=True)  # fmt: skip
    options = f"-c listen_addresses=127.0.0.1 -p {pg_port} -k {socket_dir}"
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "postgres.log")]
    try:  # stopped however the start ends (an interrupt may come while it starts)
        subprocess.run(
            _as_owner([*pg_ctl, "-o", options, "-w", "start"]), check=True, capture_output=True
        )
        exists = subprocess.run(
            _as_owner([str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER, "-d", "postgres",
                       "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'mlflow'"]),
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if exists != "1":
            subprocess.run(_as_owner([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", DB_USER,
                                      "mlflow"]), check=True, capture_output=True)  # fmt: skip
        yield f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{pg_port}/mlflow"
    finally:
        subprocess.run(_as_owner([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True)


@contextlib.contextmanager
def team_server(
    directory: Path, port: int = 5001, pg_port: int = 5433, timeout: float = 180
) -> Iterator[Server]:
    """Start PostgreSQL and an MLflow server on loopback; yield the server; stop both,
    the server's whole process group included (``mlflow server`` leaves workers behind)."""
    directory = directory.resolve()
    artifacts = directory / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with postgres(directory, pg_port) as backend:
        server = None
        try:
            mlflow = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
            with open(directory / "mlflow-server.log", "w") as server_log:
                server = subprocess.Popen(
                    [mlflow, "server", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts),
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                    stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            uri = f"http://127.0.0.1:{port}"
            wait_http(f"{uri}/health", timeout, server, directory / "mlflow-server.log")
            yield Server(uri, server.pid)
        finally:
            if server is not None:
                stop_group(server)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM stops everything, as Ctrl+C does: the KeyboardInterrupt unwinds the servers'
    context managers. Further SIGTERMs are ignored, so that they cannot cut the stopping short."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    """Run the server until Ctrl+C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir", type=Path, default=Path(".team"), help="database, artifacts and logs"
    )
    parser.add_argument("--port", type=int, default=5001, help="the MLflow server's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with (
        contextlib.suppress(KeyboardInterrupt),
        team_server(args.dir, args.port, args.pg_port) as server,
    ):
        print(
            f"Tracking server ready: MLFLOW_TRACKING_URI={server.uri} (Ctrl+C stops it)", flush=True
        )
        signal.pause()
    print("Stopped the MLflow server and PostgreSQL.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
