"""The command line itself: a multirun through ``lossbench-train -m`` records one sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient


def sweep(
    tmp_path: Path, store_uri: str, experiment: str, *extra: str
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m",
        "loss=cross_entropy,mse", "optimizer=sgd,adam",
        "trainer=smoke", "dataset.source.n_samples=200",
        f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path / experiment}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["lossbench", "basic"])
def test_two_by_two_multirun_is_one_sweep(tmp_path: Path, store_uri: str, launcher: str) -> None:
    experiment = f"cli-{launcher}"
    done = sweep(tmp_path, store_uri, experiment, f"hydra/launcher={launcher}")
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags["lossbench.role"] == "run"]
    [parent] = [r for r in runs if r.data.tags["lossbench.role"] == "sweep"]
    assert len(children) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["lossbench.sweep_id"] for r in runs} == {
        parent.data.tags["lossbench.sweep_id"]
    }
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    combos = {
        (r.data.tags["lossbench.choice.loss"], r.data.tags["lossbench.choice.optimizer"])
        for r in children
    }
    assert combos == {
        ("cross_entropy", "sgd"),
        ("cross_entropy", "adam"),
        ("mse", "sgd"),
        ("mse", "adam"),
    }
    for run in children:
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 3
    for job in range(4):  # Hydra's own per-job outputs are there too
        assert (tmp_path / experiment / str(job) / ".hydra" / "config.yaml").exists()


@pytest.mark.slow
def test_bad_choice_fails_before_anything_runs(tmp_path: Path, store_uri: str) -> None:
    done = sweep(tmp_path, store_uri, "cli-bad", "scheduler=nope")
    assert done.returncode != 0
    assert "Could not find 'scheduler/nope'" in done.stderr
    assert "cosine" in done.stderr and "onecycle" in done.stderr
    assert MlflowClient(store_uri).get_experiment_by_name("cli-bad") is None


@pytest.mark.slow
def test_bad_value_in_one_job_fails_the_sweep_before_training(
    tmp_path: Path, store_uri: str
) -> None:
    done = sweep(tmp_path, store_uri, "cli-badlr", "optimizer.lr=0.1,-1")
    assert done.returncode != 0
    assert "optimizer.lr=-1 must be a number > 0" in done.stderr
    exp = MlflowClient(store_uri).get_experiment_by_name("cli-badlr")
    runs = MlflowClient(store_uri).search_runs([exp.experiment_id]) if exp else []
    assert [r for r in runs if r.data.tags.get("lossbench.role") == "run"] == []
