"""``hydra.launcher.executor=slurm`` on a real SLURM cluster: one node on localhost
(``tests/slurm_cluster.py``), jobs submitted with ``sbatch`` by submitit. Stacks train as jobs
and send live curves; a job cancelled mid-stack is retried; Ctrl+C scancels the jobs; a job
past its time limit is submitted once more, then its runs are FAILED with the reason."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow import MlflowClient

from slurm_cluster import SlurmCluster, slurm_cluster
from test_cli_reliability import runs, wait_for

pytest.importorskip("submitit", reason="the [slurm] extra is not installed")

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    """One cluster for the module's tests (it starts in about a second)."""
    with slurm_cluster() as running:
        yield running


def start(
    cluster: SlurmCluster, store_uri: str, sweep_dir: Path, *overrides: str
) -> subprocess.Popen:
    """A multirun with executor=slurm on ``cluster``, in a session of its own (as a terminal's
    foreground job), its output in ``sweep_dir``'s ``sweep.log``."""
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m", "hydra.launcher.executor=slurm",
        "hydra.launcher.slurm.mem_gb=1", f"hydra.sweep.dir={sweep_dir}",
        "dataset.source.n_samples=200", *overrides,
    ]  # fmt: skip
    env = {**cluster.env, "MLFLOW_TRACKING_URI": store_uri, "PYTHONPATH": str(TESTS)}
    sweep_dir.mkdir(parents=True)
    with open(sweep_dir / "sweep.log", "w") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM jobs a sweep submitted, in order (submitit's files are named by job id)."""
    ids = {p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_submitted.pkl")}
    return sorted(ids, key=int)


def recorded(store_uri: str, experiment: str) -> tuple[list, list]:
    """The experiment's runs and its sweep runs."""
    return runs(store_uri, experiment), runs(store_uri, experiment, "sweep")


def epochs(client: MlflowClient, run_id: str) -> list[int]:
    """The epochs (steps) of a run's val/loss history, in order."""
    return sorted(m.step for m in client.get_metric_history(run_id, "val/loss"))


def kill(process: subprocess.Popen) -> None:
    """End a sweep and everything in its session, if still running (after a failure)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def out_of_time(
    cluster: SlurmCluster, store_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A sweep of one stack that would train for days, with timeout_min=1, started as soon as
    the module's first test asks for it, and checked by its last: SLURM looks at time limits
    every 30 s, and this sweep waits for two of those looks (its stack is submitted twice)
    while the other tests run. Its stack sleeps a second per epoch: it costs them no CPU."""
    sweep_dir = tmp_path_factory.mktemp("slurm-time") / "sweep"
    process = start(cluster, store_uri, sweep_dir, "tracking.experiment=slurm-time-limit",
                    "hydra.launcher.slurm.timeout_min=1", "trainer.max_epochs=100000",
                    "+metrics.sleepy={_target_: slurm_cluster.sleepy, task: classification, "
                    "every_epoch: true}")  # fmt: skip
    try:
        yield process, sweep_dir
    finally:
        kill(process)


def seed_of(run: Any) -> int:
    """A run's seed, from its name (moons-cross_entropy-adam-constant-s3)."""
    return int(run.info.run_name.rsplit("-s", 1)[1])


def stack_seeds(sweep_dir: Path, job: str) -> set[int]:
    """The seeds of the runs a job trains (from the call submitit pickled for it)."""
    with open(sweep_dir / ".submitit" / f"{job}_submitted.pkl", "rb") as file:
        cfgs, *_ = pickle.load(file).args  # train_stack(cfgs, live, audit)
    return {int(cfg["seed"]) for cfg in cfgs}


def test_stacks_train_as_slurm_jobs_with_live_curves_and_a_cancelled_job_is_retried(
    cluster: SlurmCluster,
    store_uri: str,
    tmp_path: Path,
    out_of_time: tuple[subprocess.Popen, Path],
) -> None:
    """4 runs as 2 stacked jobs, submitted with sbatch. A job's runs have their curves in
    MLflow while it trains (live rows from the job, to this machine's network address); that
    job is then scancelled mid-stack: its stack is submitted again, and every run ends
    FINISHED with every epoch once (lossbench.attempts=2 for the cancelled stack's)."""
    sweep_dir = tmp_path / "sweep"
    n_epochs = 300
    process = start(cluster, store_uri, sweep_dir, "tracking.experiment=slurm-cancel",
                    "seed=0,1,2,3", f"trainer.max_epochs={n_epochs}", "tracking.flush_every_s=1",
                    "hydra.launcher.slurm.array_parallelism=2")  # fmt: skip
    client = MlflowClient(store_uri)

    def live_job() -> str | None:
        """A running job whose runs' curves are in the store already."""
        assert process.poll() is None, "the sweep ended before any job's runs were live"
        live = {
            seed_of(r)
            for r in runs(store_uri, "slurm-cancel")
            if r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "val/loss")
        }
        states = cluster.jobs()
        for job in job_ids(sweep_dir):
            if states.get(job) == "RUNNING" and stack_seeds(sweep_dir, job) <= live:
                return job
        return None

    try:
        found: list[str] = []
        wait_for(lambda: found.append(job) is None if (job := live_job()) else False, 120)
        [victim] = found
        cluster.run("scancel", victim)
        process.wait(timeout=180)
    finally:
        kill(process)
    output = (sweep_dir / "sweep.log").read_text()
    assert process.returncode == 0, output[-4000:]
    assert (
        f"A stack of 2 runs was lost (UncompletedJobError: job {victim} ended CANCELLED "
        "without a result" in output
    ), output[-4000:]
    assert "submitting it again" in output
    summary = json.loads((sweep_dir / "lossbench-summary.json").read_text())
    assert (summary["executor"], summary["workers"]) == ("slurm", 2)
    assert (summary["runs"], summary["stacks"]) == (4, 2)
    jobs = job_ids(sweep_dir)
    assert len(jobs) == 3 and jobs[-1] != victim  # the retry is a job of its own
    ended = ["CANCELLED", "COMPLETED", "COMPLETED"]  # a job may still be exiting, after its result
    wait_for(lambda: sorted(cluster.jobs()[job] for job in jobs) == ended, timeout=30)
    assert stack_seeds(sweep_dir, jobs[-1]) == stack_seeds(sweep_dir, victim)
    recorded_runs, [parent] = recorded(store_uri, "slurm-cancel")
    assert {r.info.status for r in [*recorded_runs, parent]} == {"FINISHED"}
    retried = {
        seed_of(r) for r in recorded_runs if r.data.tags.get("lossbench.attempts", "1") == "2"
    }
    assert retried == stack_seeds(sweep_dir, victim)
    for run in recorded_runs:  # live epochs of the cancelled attempt are not written twice
        assert epochs(client, run.info.run_id) == list(range(n_epochs))


def test_ctrl_c_scancels_the_jobs_and_marks_their_runs_killed(
    cluster: SlurmCluster, store_uri: str, tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    process = start(cluster, store_uri, sweep_dir, "tracking.experiment=slurm-ctrl-c",
                    "seed=0,1", "trainer.max_epochs=100000",
                    "hydra.launcher.slurm.array_parallelism=2")  # fmt: skip
    try:
        wait_for(lambda: len(job_ids(sweep_dir)) == 2, timeout=120)
        jobs = job_ids(sweep_dir)
        wait_for(lambda: all(cluster.jobs()[job] == "RUNNING" for job in jobs), timeout=60)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C sends to the foreground group
        process.wait(timeout=60)
    finally:
        kill(process)
    output = (sweep_dir / "sweep.log").read_text()
    assert process.returncode == 130, output[-4000:]
    runs, [parent] = recorded(store_uri, "slurm-ctrl-c")
    assert len(runs) == 2 and {r.info.status for r in [*runs, parent]} == {"KILLED"}
    wait_for(lambda: {cluster.jobs()[job] for job in jobs} == {"CANCELLED"}, timeout=30)

    def trains() -> list[str]:  # the jobs' processes: python -m submitit.core._submit <folder>
        folder = str(sweep_dir / ".submitit")
        return [
            " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
            if folder in " ".join(p.info["cmdline"] or [])
        ]

    wait_for(lambda: not trains(), timeout=30)


def test_squeue_reports_ended_and_forgotten_jobs(
    cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the executor's watcher reads: each job's state, GONE for a job squeue no longer
    lists (alone, squeue refuses it), None when the controller cannot be asked."""
    from lossbench.sweep.executors import squeue

    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    # a small job: without --mem it asks for the whole node and waits for the time-limit sweep
    job = cluster.run(
        "sbatch",
        "--parsable",
        "--output=/dev/null",
        "--mem=64M",
        "--cpus-per-task=1",
        "--wrap=true",
    ).strip()
    wait_for(lambda: cluster.jobs()[job] == "COMPLETED", timeout=30)  # listed for a while
    assert squeue.job_states([job, "999999"]) == {job: "COMPLETED", "999999": squeue.GONE}
    assert squeue.job_states(["999999"]) == {"999999": squeue.GONE}
    monkeypatch.setenv("SLURM_CONF", str(cluster.directory / "no-such.conf"))
    monkeypatch.setattr(squeue, "TIMEOUT_S", 2.0)  # squeue looks for a controller for longer
    assert squeue.job_states(["1"]) is None


def test_a_job_past_its_time_limit_is_submitted_again_then_its_runs_fail_with_the_reason(
    store_uri: str, out_of_time: tuple[subprocess.Popen, Path]
) -> None:
    """README: a job that times out is submitted once more, then its runs are FAILED with the
    reason. SLURM signals a job before its time limit (submitit asks for USR2 90 s before);
    the job stops training at once and is not requeued."""
    process, sweep_dir = out_of_time
    process.wait(timeout=240)
    output = (sweep_dir / "sweep.log").read_text()
    assert process.returncode == 1, output[-4000:]  # a run FAILED
    first, retry = job_ids(sweep_dir)
    assert f"A stack of 1 runs was lost (UncompletedJobError: job {first} " in output
    [run], [parent] = recorded(store_uri, "slurm-time-limit")
    assert run.info.status == "FAILED" and run.data.tags["lossbench.attempts"] == "2"
    reason = run.data.tags["lossbench.error"]
    assert reason.startswith(f"submitit.core.utils.UncompletedJobError: job {retry} "), reason
    # SLURM's signal may come before submitit's handler is set (the job's first ~second): the
    # job then dies FAILED without a result, which is handled the same way; not both times
    assert "reached its time limit (SLURM's signal, USR2); not requeued" in output + reason
