"""``hydra.launcher.executor=slurm``: stacks as submitit jobs, tested with submitit's local
executor (real jobs on this machine: their own processes, pickles and logs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from lossbench.config.spec import ConfigError
from lossbench.sweep.executors import open_executor

pytest.importorskip("submitit", reason="the [slurm] extra is not installed")

from submitit.core.utils import UncompletedJobError  # noqa: E402

from lossbench.sweep.executors.submitit_jobs import SlurmExecutor  # noqa: E402


def task_pid(folder: Path, timeout: float = 60) -> int:
    """The pid of the first job's task process in submitit's ``folder``, once it runs. A local
    job's id is its controller's pid; the task is the controller's child."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        controllers = sorted(int(p.name.split("_")[0]) for p in folder.glob("*_submitted.pkl"))
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if controllers and int(fields[1]) == controllers[0]:
                return int(stat.parent.name)
        time.sleep(0.1)
    raise AssertionError(f"no submitit task started under {folder}")


def catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (its SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [mask] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(mask, 16) & (1 << (signum - 1)))


@pytest.mark.slow
def test_sweep_as_local_submitit_jobs_survives_a_killed_job(tmp_path: Path, store_uri: str) -> None:
    """2 losses x 2 seeds as 2 stacked jobs; the first job's process is killed (as a node
    failure or a preemption ends it): its stack is submitted once more, and every run ends
    FINISHED with every epoch, recorded by the sweep's process."""
    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m", "hydra.launcher.executor=slurm",
        "hydra.launcher.slurm.cluster=local", "loss=cross_entropy,mse", "seed=0,1",
        "trainer=smoke", "dataset.source.n_samples=200", "tracking.experiment=test-submitit",
        f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    with subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as sweep:
        try:
            os.kill(task_pid(sweep_dir / ".submitit"), signal.SIGKILL)
            output, _ = sweep.communicate(timeout=300)
        finally:
            sweep.kill()
    assert sweep.returncode == 0, output[-4000:]
    assert "was lost (UncompletedJobError: job" in output and "ended without a result" in output

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("test-submitit")
    records = client.search_runs([experiment.experiment_id])
    runs = [r for r in records if r.data.tags["lossbench.role"] == "run"]
    assert len(runs) == 4
    assert {r.info.status for r in records} == {"FINISHED"}
    for r in runs:  # trainer=smoke: 3 epochs, every one recorded
        assert len(client.get_metric_history(r.info.run_id, "val/loss")) == 3
    assert {r.data.tags["lossbench.members"] for r in runs} == {"2"}  # 2 fits for 4 runs
    attempts = sorted(r.data.tags.get("lossbench.attempts", "1") for r in runs)
    assert attempts == ["1", "1", "2", "2"]  # the killed stack's runs, trained on a 2nd job
    logs = list((sweep_dir / ".submitit").glob("*_log.out"))
    assert len(logs) == 3  # submitit's logs of the 3 jobs, in the sweep dir


def test_a_preempted_job_ends_at_once_and_is_not_requeued(tmp_path: Path) -> None:
    """The signal submitit's jobs get when SLURM preempts them or their time runs out (USR2)
    ends the job with an error naming it, without submitit's requeue: the sweep decides."""
    executor = SlurmExecutor(tmp_path, cluster="local", timeout_min=5)
    try:
        future: Future = executor.submit(time.sleep, 120)
        pid = task_pid(tmp_path / ".submitit")
        deadline = time.monotonic() + 30
        while not catches(pid, signal.SIGUSR2):  # submitit's handler, set as the job starts
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(pid, signal.SIGUSR2)
        with pytest.raises(
            UncompletedJobError,
            match=r"was preempted or reached its time limit \(SLURM.s signal, USR2\); not requeued$",
        ):
            future.result(timeout=30)
    finally:
        executor.stop(kill=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"cluster": "kubernetes"},
            "hydra.launcher.slurm.cluster='kubernetes' is not one of: slurm, local",
        ),
        ({"cluster": "local", "cpus_per_task": 0}, "slurm.cpus_per_task=0 must be an integer >= 1"),
        ({"cluster": "local", "timeout_min": -5}, "slurm.timeout_min=-5 must be an integer >= 1"),
    ],
)
def test_bad_slurm_options_are_named_before_anything_starts(
    tmp_path: Path, options: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        open_executor("slurm", None, 4, {"slurm": options}, tmp_path)
    assert not (tmp_path / ".submitit").exists()  # nothing submitted


def test_slurm_without_slurm_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun here
    with pytest.raises(ConfigError, match="srun is not on PATH.*cluster=local"):
        open_executor("slurm", None, 4, {"slurm": {"cluster": "slurm"}}, tmp_path)


def test_stop_with_kill_cancels_the_jobs_in_flight(tmp_path: Path) -> None:
    """After Ctrl+C or an error, the sweep stops its executor with kill=True: no job trains on."""
    executor = SlurmExecutor(tmp_path, cluster="local")
    future: Future = executor.submit(time.sleep, 120)
    pid = task_pid(tmp_path / ".submitit")
    executor.stop(kill=True)
    assert future.cancelled()

    def ended() -> bool:  # gone, or a zombie its parent (submitit's controller) has to reap
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 10
    while not ended():
        assert time.monotonic() < deadline, "the job's process still runs"
        time.sleep(0.1)


def test_slurm_jobs_ask_for_the_options_and_are_cancelled_on_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SLURM (faked: sbatch records the batch script it is given), each stack's job asks for
    hydra.launcher.slurm's partition, CPUs, memory and time, and stop(kill=True) scancels it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "srun": "exit 0",
        "sbatch": f'cp "$1" {tmp_path}/batch.sh; echo "Submitted batch job 4242"',
        "scancel": f'echo "$@" >> {tmp_path}/scancel.log',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    options = {"partition": "cpu", "cpus_per_task": 2, "mem_gb": 8, "timeout_min": 30}
    executor = open_executor("slurm", None, 4, {"slurm": options}, tmp_path)
    assert executor.n_workers == 64  # array_parallelism's default: not capped by this machine
    future = executor.submit(time.sleep, 1)
    batch = (tmp_path / "batch.sh").read_text()
    for line in ["--partition=cpu", "--cpus-per-task=2", "--mem=8GB", "--time=30"]:
        assert f"#SBATCH {line}\n" in batch
    assert "submitit.core._submit" in batch and str(tmp_path / ".submitit") in batch
    executor.stop(kill=True)
    assert future.cancelled()
    assert (tmp_path / "scancel.log").read_text().split() == ["4242"]
