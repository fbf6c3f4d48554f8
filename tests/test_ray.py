"""Distributed launch on a local Ray cluster (one per module, started in a directory of its
own): lossbench's launcher with ``hydra.launcher.executor=ray`` (stacks as Ray tasks; a lost
worker's stack retried; Ctrl+C cancels the tasks), Hydra's ``hydra/launcher=ray_cluster`` (one
job per task), and the SLURM launcher config composes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from lossbench.config.spec import ConfigError
from lossbench.ui import free_port, stop_group

pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="the [ray] extra is not installed")

from lossbench.sweep.executors.ray_tasks import RayExecutor  # noqa: E402

TINY = ["dataset.source.n_samples=200"]


@dataclass
class Cluster:
    """A running local Ray cluster: its address, and its head process (``ray start``)."""

    address: str
    directory: Path
    head: subprocess.Popen

    def tasks(self, name: str = "train_stack") -> set[int]:
        """Pids of this cluster's workers running a task ``name`` (their title: ray::name)."""
        found = set()
        for process in psutil.Process(self.head.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                title = process.cmdline()
                if title and title[0].startswith(f"ray::{name}"):
                    found.add(process.pid)
        return found

    def kill(self) -> None:
        """SIGKILL the node at once: ``ray start`` and every process under it. Ray's workers
        run in process groups of their own, so the node's group alone would miss them."""
        with contextlib.suppress(psutil.Error):
            processes = [psutil.Process(self.head.pid)]
            processes += processes[0].children(recursive=True)
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    process.kill()


@contextlib.contextmanager
def ray_cluster(
    directory: Path, num_cpus: int = 2, join: str | None = None, env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """A Ray node with ``num_cpus`` CPUs on loopback, started in ``directory``: the head of a
    new cluster, or a node that joins the cluster at ``join``; ``env`` adds to its
    environment (Ray's settings, ``RAY_<name>``)."""
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    if join is None:
        cmd = [
            ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
            str(port), "--num-cpus", str(num_cpus), "--ray-client-server-port", str(free_port()),
            "--dashboard-port", str(free_port()), "--include-dashboard=false",
            "--disable-usage-stats",
        ]  # fmt: skip
    else:
        cmd = [ray, "start", "--block", "--address", join, "--node-ip-address", "127.0.0.1",
               "--num-cpus", str(num_cpus), "--disable-usage-stats"]  # fmt: skip
    log = directory / "ray.log"
    with open(log, "w") as out:
        head = subprocess.Popen(
            cmd, cwd=directory, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "will now block forever" not in log.read_text():
            assert head.poll() is None, f"ray start failed:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray start timed out:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        yield Cluster(join or f"127.0.0.1:{port}", directory, head)
    finally:
        # Ray's orderly stop takes ~30 s; nothing of a test cluster needs keeping: the whole
        # group is killed after 3 s, then whatever Ray started in groups of its own
        leftovers = []
        with contextlib.suppress(psutil.Error):
            leftovers = psutil.Process(head.pid).children(recursive=True)
        stop_group(head, timeout=3)
        for process in leftovers:
            with contextlib.suppress(psutil.Error):
                process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module's tests (starting one takes ~10 s)."""
    with ray_cluster(tmp_path_factory.mktemp("ray-cluster")) as running:
        yield running


def sweep(work_dir: Path, experiment: str, *overrides: str) -> list[str]:
    """A multirun of lossbench's launcher with executor=ray, its sweep dir in ``work_dir``."""
    return [
        sys.executable, "-m", "lossbench.train", "-m", "hydra.launcher.executor=ray",
        f"tracking.experiment={experiment}", f"hydra.sweep.dir={work_dir / 'sweep'}", *TINY,
        *overrides,
    ]  # fmt: skip


def recorded(store_uri: str, experiment: str) -> tuple[list, list]:
    """The experiment's runs and its sweep runs."""
    client = MlflowClient(store_uri)
    found = client.get_experiment_by_name(experiment)
    records = client.search_runs([found.experiment_id]) if found else []
    runs = [r for r in records if r.data.tags.get("lossbench.role") == "run"]
    return runs, [r for r in records if r.data.tags.get("lossbench.role") == "sweep"]


def wait_for(condition: Callable[[], object], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def epochs(client: MlflowClient, run_id: str, metric: str = "val/loss") -> list[int]:
    """The epochs (steps) of a run's metric history, in order."""
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


@pytest.mark.slow
def test_sweep_on_a_local_ray_cluster_records_every_run(
    cluster: Cluster, tmp_path: Path, store_uri: str
) -> None:
    """Jobs run as Ray tasks in the cluster's own processes and working directory, yet all
    four land in MLflow as FINISHED runs of one sweep, with their Hydra outputs in the sweep dir."""
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m", "hydra/launcher=ray_cluster",
        "loss=cross_entropy,mse", "seed=0,1", "trainer=smoke", "dataset.source.n_samples=200",
        "tracking.experiment=test-ray",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "RAY_ADDRESS": cluster.address}
    done = subprocess.run(cmd, cwd=work_dir, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Initializing ray with config: {{'address': '{cluster.address}'" in output
    assert "Connected to Ray cluster" in output

    client = MlflowClient(store_uri)
    runs, [parent] = recorded(store_uri, "test-ray")
    assert sorted(r.info.run_name for r in runs) == [
        "moons-cross_entropy-adam-constant-s0", "moons-cross_entropy-adam-constant-s1",
        "moons-mse-adam-constant-s0", "moons-mse-adam-constant-s1",
    ]  # fmt: skip
    assert {r.info.status for r in [*runs, parent]} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    for r in runs:  # every epoch of every run arrived (trainer=smoke: 3 epochs)
        assert epochs(client, r.info.run_id) == [0, 1, 2]
    # Ray's workers run elsewhere: the sweep dir is absolute, under where the sweep started
    [sweep_dir] = (work_dir / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert not (cluster.directory / "multirun").exists()


@pytest.mark.slow
def test_ray_executor_stacks_survive_a_killed_worker_and_ctrl_c_cancels_the_tasks(
    cluster: Cluster, tmp_path: Path, store_uri: str
) -> None:
    """executor=ray, launched from another directory than the cluster's (address from
    $RAY_ADDRESS): 4 runs train as 2 stacked Ray tasks, one per CPU of the cluster. One
    stack's worker process is killed once its runs' curves are live: the stack is submitted
    again, and every run ends FINISHED with every epoch once (lossbench.attempts=2 for the
    killed stack's). Then Ctrl+C on a second sweep marks its runs KILLED and cancels its tasks."""
    before = cluster.tasks()
    log = tmp_path / "kill.log"
    cmd = sweep(tmp_path / "kill", "test-ray-kill", "seed=0,1,2,3",
                "trainer.max_epochs=1000", "tracking.flush_every_s=1")  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "RAY_ADDRESS": cluster.address}
    client = MlflowClient(store_uri)

    def all_live() -> bool:  # every run has epochs in the store while it trains
        runs, _ = recorded(store_uri, "test-ray-kill")
        return len(runs) == 4 and all(
            r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "val/loss")
            for r in runs
        )

    with (
        open(log, "w") as out,
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        ) as process,
    ):
        try:
            wait_for(all_live)
            [victim, *_] = sorted(cluster.tasks() - before)
            os.kill(victim, signal.SIGKILL)
            process.wait(timeout=180)
        finally:
            process.kill()
    output = log.read_text()
    assert process.returncode == 0, output[-4000:]
    assert "A stack of 2 runs was lost (WorkerCrashedError" in output
    assert "submitting it again" in output
    summary = json.loads((tmp_path / "kill" / "sweep" / "lossbench-summary.json").read_text())
    assert summary["executor"] == "ray" and summary["workers"] == 2  # the cluster's 2 CPUs
    assert (summary["runs"], summary["stacks"]) == (4, 2)  # fewer fits than runs
    runs, [parent] = recorded(store_uri, "test-ray-kill")
    assert {r.info.status for r in [*runs, parent]} == {"FINISHED"}
    assert {r.data.tags["lossbench.members"] for r in runs} == {"2"}
    assert not (cluster.directory / "multirun").exists()
    attempts = sorted(r.data.tags.get("lossbench.attempts", "1") for r in runs)
    assert attempts == ["1", "1", "2", "2"]  # the killed stack's runs, trained again
    for r in runs:  # live epochs of the lost attempt are not written twice
        assert epochs(client, r.info.run_id) == list(range(1000))

    before = cluster.tasks()
    address = f"hydra.launcher.ray.address={cluster.address}"
    env.pop("RAY_ADDRESS")
    cmd = sweep(tmp_path / "ctrl-c", "test-ray-ctrl-c", address, "seed=0,1",
                "trainer.max_epochs=100000")  # fmt: skip
    with subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    ) as process:  # fmt: skip
        try:
            wait_for(lambda: len(cluster.tasks() - before) == 2)  # both stacks train
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C sends to the foreground group
            output, _ = process.communicate(timeout=60)
        finally:
            process.kill()
    assert process.returncode == 130, output[-4000:]
    runs, [parent] = recorded(store_uri, "test-ray-ctrl-c")
    assert len(runs) == 2 and {r.info.status for r in [*runs, parent]} == {"KILLED"}
    wait_for(lambda: not cluster.tasks() - before, timeout=10)  # the tasks stopped training


def test_a_task_too_big_for_any_node_is_an_error_before_training(cluster: Cluster) -> None:
    """num_cpus above every node's CPUs would wait forever: the executor refuses it, saying
    why, before any task is submitted (the launcher turns a ConfigError into its message)."""
    with pytest.raises(ConfigError) as refused:
        RayExecutor(address=cluster.address, num_cpus=3)
    assert (
        "hydra.launcher.ray.num_cpus=3 is more than any node of the Ray cluster at "
        f"'{cluster.address}' has (CPUs per node: [2])" in str(refused.value)
    )


def test_ray_executor_options_are_checked_before_connecting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad num_cpus, a missing Ray, an address where no cluster listens, or ``auto`` when
    the latest cluster started here is gone fails at once, saying which and what to do."""
    with pytest.raises(ConfigError, match=r"hydra\.launcher\.ray\.num_cpus=0 must be"):
        RayExecutor(num_cpus=0)
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
        with pytest.raises(
            ConfigError, match=r"executor=ray needs Ray: pip install -e '\.\[ray\]'"
        ):
            RayExecutor()
    address = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(
        ConfigError, match=f"no Ray cluster at hydra.launcher.ray.address='{address}'"
    ):
        RayExecutor(address=address)
    # a cluster killed rather than stopped leaves its address where "auto" looks
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(address)
    with pytest.raises(
        ConfigError, match=f"no Ray cluster at address='auto' \\({address}, the latest"
    ):
        RayExecutor()
    assert time.monotonic() - start < 10  # not Ray's minutes of retries


def test_slurm_launcher_config_composes_for_submitit(make_spec) -> None:  # noqa: ANN001
    """``hydra/launcher=slurm`` is submitit's SLURM launcher with lossbench's defaults."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="no [slurm] extra")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lossbench.config.spec import CONF_DIR

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
