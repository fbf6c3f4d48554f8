"""Sweeps that survive, through the command line: failures, Ctrl+C, SIGTERM, SIGKILL and resume,
parallel writers. These need real processes and signals; each is kept small."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

TESTS = Path(__file__).parent
SMALL = ["dataset.source.n_samples=200", "trainer.max_epochs=3"]


def command(tmp_path: Path, experiment: str, *overrides: str, multirun: bool = True) -> list[str]:
    sweep_dir = tmp_path / f"{experiment}-{time.monotonic_ns()}"
    return [
        sys.executable, "-m", "lossbench.train", *(["-m"] if multirun else []),
        f"tracking.experiment={experiment}", f"hydra.sweep.dir={sweep_dir}",
        f"hydra.run.dir={sweep_dir}", *overrides,
    ]  # fmt: skip


def environment(store_uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "PYTHONPATH": str(TESTS)}


def start(cmd: list[str], store_uri: str) -> subprocess.Popen:
    """In a session of its own, as a terminal's foreground job would be."""
    return subprocess.Popen(
        cmd, env=environment(store_uri), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip


def runs(store_uri: str, experiment: str, role: str = "run") -> list:
    client = MlflowClient(store_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return [
        r
        for r in client.search_runs([found.experiment_id])
        if r.data.tags.get("lossbench.role") == role
    ]


def wait_for(condition: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


@pytest.mark.slow
def test_failed_and_diverged_jobs_are_summarized(tmp_path: Path, store_uri: str) -> None:
    """Every job runs; failures end with a summary and exit code 1; divergence is recorded."""
    cmd = command(tmp_path, "summary", *SMALL, "optimizer=sgd", "optimizer.lr=0.1,1000",
                  "loss._target_=lossbench.problem.losses.CrossEntropy,failing.FailsInTraining")  # fmt: skip
    done = subprocess.run(
        cmd, env=environment(store_uri), capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr  # Hydra logs to stdout
    assert done.returncode == 1, output[-3000:]
    assert "2 of 4 jobs failed" in output and "boom: this loss fails in training" in output
    assert "diverged: job #2" in output and "Traceback" not in output
    records = {
        (r.data.params["loss._target_"], r.data.params["optimizer.lr"]): r
        for r in runs(store_uri, "summary")
    }
    assert records[("lossbench.problem.losses.CrossEntropy", "0.1")].info.status == "FINISHED"
    diverged = records[("lossbench.problem.losses.CrossEntropy", "1000")]
    assert diverged.info.status == "FAILED" and diverged.data.tags["lossbench.status"] == "diverged"
    client = MlflowClient(store_uri)
    for lr in ("0.1", "1000"):
        failed = records[("failing.FailsInTraining", lr)]
        assert failed.info.status == "FAILED"
        text = Path(client.download_artifacts(failed.info.run_id, "traceback.txt")).read_text()
        assert "RuntimeError: boom" in text
    [parent] = runs(store_uri, "summary", "sweep")
    assert parent.info.status == "FAILED"


@pytest.mark.slow
def test_sigterm_marks_a_single_run_killed(tmp_path: Path, store_uri: str) -> None:
    cmd = command(tmp_path, "sigterm", "dataset.source.n_samples=200", "trainer.max_epochs=100000",
                  "tracking.flush_every_s=0.5", multirun=False)  # fmt: skip
    process = start(cmd, store_uri)
    client = MlflowClient(store_uri)

    def some_epochs_recorded() -> bool:
        found = runs(store_uri, "sigterm")
        return bool(found) and bool(client.get_metric_history(found[0].info.run_id, "val/acc"))

    wait_for(some_epochs_recorded)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-3000:]
    [run] = runs(store_uri, "sigterm")
    assert run.info.status == "KILLED"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) >= 5  # what was flushed stays


@pytest.mark.slow
def test_sigkill_midway_then_relaunch_finishes_every_config_once(
    tmp_path: Path, store_uri: str
) -> None:
    """SIGKILL leaves runs RUNNING; lossbench-reap marks them KILLED; relaunching the same
    sweep skips the FINISHED configs and trains the rest."""
    # three stacks (one per optimizer) on two workers: the third trains after the first two,
    # so there is a long moment with runs FINISHED and others RUNNING
    overrides = ["dataset.source.n_samples=200", "trainer.max_epochs=150", "optimizer=sgd,adam,rmsprop",
                 "seed=0,1", "hydra.launcher.n_jobs=2", "hydra.launcher.stack_by=seed_loss"]  # fmt: skip
    process = start(command(tmp_path, "resume", *overrides), store_uri)

    def midway() -> bool:
        statuses = Counter(r.info.status for r in runs(store_uri, "resume"))
        return statuses["FINISHED"] >= 2 and statuses["RUNNING"] >= 2

    wait_for(midway)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    stale = [
        r
        for role in ("run", "sweep")
        for r in runs(store_uri, "resume", role)
        if r.info.status == "RUNNING"
    ]
    assert len(stale) >= 3  # the parent run and the runs in flight
    env = environment(store_uri)
    reap = [sys.executable, "-m", "lossbench.reap", "--experiment", "resume"]
    dry = subprocess.run([*reap, "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert f"{len(stale)} stale RUNNING run(s)" in dry.stdout, dry.stdout + dry.stderr
    done = subprocess.run(reap, env=env, capture_output=True, text=True, timeout=60)
    assert f"Marked {len(stale)} stale RUNNING run(s) KILLED" in done.stdout, (
        done.stdout + done.stderr
    )

    again = subprocess.run(
        command(tmp_path, "resume", *overrides),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already completed in the store" in again.stdout + again.stderr
    final = runs(store_uri, "resume")
    finished = Counter(
        r.data.tags["lossbench.config_hash"] for r in final if r.info.status == "FINISHED"
    )
    assert len(finished) == 6 and set(finished.values()) == {1}, finished
    assert {r.info.status for r in final} <= {"FINISHED", "KILLED"}
    assert [r.info.status for r in runs(store_uri, "resume", "sweep")].count("RUNNING") == 0
    # the relaunched sweep counts the runs it reused: its report shows all six configs
    from lossbench.report import build_report

    latest = build_report(store_uri, "resume")
    assert len(latest.sweep.runs) == 6 and set(latest.runs["outcome"]) == {"finished"}


@pytest.mark.slow
def test_parallel_writers_lose_nothing(tmp_path: Path) -> None:
    """Two lossbench sweeps started at the same moment and a joblib sweep, all into one fresh
    SQLite store: every run and every metric arrives, and nobody sees "database is locked"."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    common = ["trainer.max_epochs=4", "dataset.source.n_samples=200", "loss=mse,cross_entropy"]
    processes = [
        start(command(tmp_path, "shared", *common, "seed=0,1,2"), uri),
        start(command(tmp_path, "shared", *common, "seed=3,4,5"), uri),
        start(
            command(
                tmp_path,
                "shared",
                *common,
                "seed=6,7",
                "hydra/launcher=joblib",
                "hydra.launcher.n_jobs=2",
            ),
            uri,
        ),  # fmt: skip
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=400)
        assert process.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr
    found = runs(uri, "shared")
    assert len(found) == 16 and {r.info.status for r in found} == {"FINISHED"}
    assert len(runs(uri, "shared", "sweep")) == 3
    with sqlite3.connect(tmp_path / "fresh" / "mlflow.db") as db:
        per_run = db.execute(
            "SELECT run_uuid, COUNT(*) FROM metrics WHERE key = 'val/acc' GROUP BY run_uuid"
        ).fetchall()
    assert len(per_run) == 16 and {count for _, count in per_run} == {4}


@pytest.mark.slow
def test_unreachable_store_fails_before_training(tmp_path: Path) -> None:
    """It fails with a message naming the store (how fast: scripts/bench_sweep.py measures it)."""
    done = subprocess.run(command(tmp_path, "nowhere", *SMALL, "seed=0,1"), capture_output=True, text=True,
                          env=environment("http://127.0.0.1:9"), timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]  # bad input, before anything is written
    assert "lossbench-train: error: tracking store http://127.0.0.1:9 is unreachable" in done.stderr
