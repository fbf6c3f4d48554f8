"""Team tracking: a parallel sweep into an MLflow server backed by PostgreSQL (started by
scripts/team_server.py) records every run, metric and artifact; SIGTERM to the script stops the
server and PostgreSQL, leaving none of their processes behind."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from conftest import postgres_directory
from lossbench.ui import free_port, wait_http

SCRIPT = Path(__file__).parents[1] / "scripts" / "team_server.py"


def group_alive(pgid: int) -> list[str]:
    alive = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.info["cmdline"] or []))
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def naming(text: str) -> list[str]:
    """Live processes whose command line contains ``text``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if text in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(cmdline)
    return found


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_parallel_sweep_into_postgres_backed_server_loses_nothing(tmp_path: Path) -> None:
    directory = postgres_directory("lossbench-team-")
    port, pg_port = free_port(), free_port()
    cmd = [sys.executable, str(SCRIPT), "--dir", str(directory / "server"), "--port", str(port),
           "--pg-port", str(pg_port)]  # fmt: skip
    script = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", 180, script)
        [server] = [p for p in psutil.Process(script.pid).children() if "server" in p.cmdline()]
        cmd = [
            sys.executable, "-m", "lossbench.train", "-m",
            "loss=cross_entropy,mse", "optimizer=sgd,adam", "seed=0,1",
            "hydra.launcher.n_jobs=2", "trainer.max_epochs=4", "dataset.source.n_samples=200",
            "tracking.experiment=team", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)  # fmt: skip
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("team")
        records = client.search_runs([experiment.experiment_id])
        runs = [r for r in records if r.data.tags["lossbench.role"] == "run"]
        [parent] = [r for r in records if r.data.tags["lossbench.role"] == "sweep"]
        assert len(runs) == 8 and len({r.info.run_name for r in runs}) == 8
        assert {r.info.status for r in [*runs, parent]} == {"FINISHED"}
        assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
        for run in runs:
            assert {"train/loss", "val/loss", "val/acc", "test/acc"} <= set(run.data.metrics)
            for key in ("train/loss", "val/loss", "val/acc"):
                steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
                assert sorted(steps) == [0, 1, 2, 3], (run.info.run_name, key)
            # artifacts go through the server into its artifact root
            artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert "config.yaml" in artifacts, artifacts
        stored = list((directory / "server" / "artifacts").rglob("config.yaml"))
        assert len(stored) == 8
        assert group_alive(server.pid), "the server runs in its own process group"
        assert naming(str(directory / "server" / "pgdata")), "PostgreSQL runs"

        script.send_signal(signal.SIGTERM)  # as a service manager or `kill` stops it
        output, _ = script.communicate(timeout=120)
        assert script.returncode == 0, output[-3000:]
        assert "Stopped the MLflow server and PostgreSQL." in output
        assert group_alive(server.pid) == []
        assert naming(str(directory / "server")) == []
        assert not port_open(port) and not port_open(pg_port)
    finally:
        script.kill()
        script.wait()
        shutil.rmtree(directory, ignore_errors=True)
