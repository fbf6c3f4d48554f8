"""Distributed launch: a sweep on a local Ray cluster (hydra/launcher=ray_cluster) records every
run in MLflow under one sweep, and the SLURM launcher config composes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lossbench.ui import free_port, stop_group

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra is not installed")


@contextlib.contextmanager
def ray_cluster(directory: Path) -> Iterator[str]:
    """A one-node Ray cluster on loopback, started in ``directory``; yields its address."""
    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
        "--ray-client-server-port", str(free_port()), "--dashboard-port", str(free_port()),
        "--include-dashboard=false", "--disable-usage-stats",
    ]  # fmt: skip
    log = directory / "ray.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while "will now block forever" not in log.read_text():
            assert head.poll() is None, f"ray start failed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start timed out:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(head)


@pytest.mark.slow
def test_sweep_on_a_local_ray_cluster_records_every_run(tmp_path: Path, store_uri: str) -> None:
    """Jobs run as Ray tasks in the cluster's own processes and working directory, yet all
    four land in MLflow as FINISHED runs of one sweep, with their Hydra outputs in the sweep dir."""
    cluster_dir, work_dir = tmp_path / "cluster", tmp_path / "work"
    cluster_dir.mkdir()
    work_dir.mkdir()
    with ray_cluster(cluster_dir) as address:
        cmd = [
            sys.executable, "-m", "lossbench.train", "-m", "hydra/launcher=ray_cluster",
            "loss=cross_entropy,mse", "seed=0,1", "trainer=smoke", "dataset.source.n_samples=200",
            "tracking.experiment=test-ray",
        ]  # fmt: skip
        env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "RAY_ADDRESS": address}
        done = subprocess.run(
            cmd, cwd=work_dir, env=env, capture_output=True, text=True, timeout=600
        )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Initializing ray with config: {{'address': '{address}'" in output
    assert "Connected to Ray cluster" in output

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("test-ray")
    records = client.search_runs([experiment.experiment_id])
    runs = [r for r in records if r.data.tags["lossbench.role"] == "run"]
    [parent] = [r for r in records if r.data.tags["lossbench.role"] == "sweep"]
    assert sorted(r.info.run_name for r in runs) == [
        "moons-cross_entropy-adam-constant-s0", "moons-cross_entropy-adam-constant-s1",
        "moons-mse-adam-constant-s0", "moons-mse-adam-constant-s1",
    ]  # fmt: skip
    assert {r.info.status for r in [*runs, parent]} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    for r in runs:  # every epoch of every run arrived
        assert (
            len(client.get_metric_history(r.info.run_id, "val/loss")) == 3
        )  # trainer=smoke: 3 epochs
    # Ray's workers run elsewhere: the sweep dir is absolute, under where the sweep started
    [sweep_dir] = (work_dir / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert not (cluster_dir / "multirun").exists()


def test_slurm_launcher_config_composes_for_submitit(make_spec) -> None:  # noqa: ANN001
    """``hydra/launcher=slurm`` is submitit's SLURM launcher with lossbench's defaults."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="no [slurm] extra")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.config import CONF_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=cpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.partition, launcher.cpus_per_task, launcher.timeout_min) == ("cpu", 1, 60)
