"""``hydra.launcher.executor=slurm``: each stack is one SLURM job, submitted through submitit.

The sweep's process plans the stacks, submits them as jobs, and records every run (the only
MLflow writer, as with every executor): a job only trains its stack and returns its per-member
results through submitit's result pickle. lossbench must be importable on the nodes, from the
same path or environment (submitit pickles ``train_stack`` by reference).

The watcher learns that a job has ended from its result file, or from ``squeue``
(:mod:`lossbench.sweep.executors.squeue`): submitit's ``sacct`` needs SLURM's accounting database,
without which a job that ended without a result would be waited for forever.

``cluster=local`` runs real submitit jobs on this machine (submitit's local executor): the same
submission, pickles and logs, without SLURM. The tests use both: ``tests/test_slurm.py`` runs a
one-node SLURM cluster on localhost (``tests/slurm_cluster.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import submitit
from submitit.core.utils import UncompletedJobError

from lossbench.config.spec import ConfigError
from lossbench.sweep.executors import InlineExecutor, StackExecutor, squeue

log = logging.getLogger(__name__)

CLUSTERS = ("slurm", "local")
POLL_SECONDS = {"local": 0.2, "slurm": 2.0}  # how often the watcher looks at unfinished jobs
# A SLURM job that ran to its end (COMPLETED, FAILED) wrote its result file; on a shared file
# system that file may show up here a little later: it is waited for this long.
RESULT_GRACE_S = 30.0


class Preempted(BaseException):
    """Raised in a job on submitit's preemption/timeout signal: a BaseException, so that neither
    Lightning nor ``train_stack``'s fallback (training members one by one) catches it."""


@dataclass(frozen=True)
class Stopped:
    """What a job returns when SLURM stopped it (preempted, or out of time): the reason. The
    executor raises it as :class:`UncompletedJobError` (submitit would wrap a job's error in
    its traceback and log paths: the sweep's reason would be a path)."""

    reason: str


class StackJob:
    """What a job runs: ``fn(*args)``, ended at once when SLURM preempts it or its time runs
    out.

    submitit calls ``checkpoint`` on the signal SLURM sends then (USR2). By default submitit
    would requeue a preempted job without limit, and on a timeout raise inside the fit, where
    ``train_stack`` would catch it and go on training members one by one. Here the job ends
    at once, returning :class:`Stopped`; the executor turns that into an error naming the
    signal, the sweep submits the stack again (``SlurmExecutor.retries``), then marks its runs
    FAILED with that reason.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        try:
            return self.fn(*args)
        except Preempted as stopped:
            return Stopped(str(stopped))

    def checkpoint(self, *args: Any) -> None:
        """submitit's hook on the preemption/timeout signal: stop training, no requeue."""
        raise Preempted(
            f"job {submitit.JobEnvironment().job_id} was preempted or reached its time limit "
            "(SLURM's signal, USR2); not requeued"
        )


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"hydra.launcher.slurm.{name}={value!r} must be an integer >= 1")
    return value


def reachable_host() -> str:
    """An address of this machine for other machines to reach: its name's address, unless that
    is loopback; then the address of the interface that routes outwards (a UDP connect sends
    nothing)."""
    try:
        address = socket.gethostbyname(socket.getfqdn())
    except OSError:
        address = "127.0.0.1"
    if not address.startswith("127."):
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return address


class SlurmExecutor(StackExecutor):
    """Stacks as submitit jobs on SLURM (``cluster="slurm"``) or on this machine
    (``cluster="local"``), one stack per job with ``cpus_per_task`` CPUs; at most
    ``array_parallelism`` jobs at once (on this machine, at most one per core). submitit's
    logs go to ``folder`` (default ``<sweep_dir>/.submitit``)."""

    name = "slurm"
    retries = 1  # a preempted, timed-out or killed job: its stack is submitted once more

    def __init__(
        self,
        sweep_dir: str | Path,
        cluster: str = "slurm",
        partition: str | None = None,
        timeout_min: int = 60,
        mem_gb: int = 4,
        cpus_per_task: int = 1,
        array_parallelism: int = 64,
        folder: str | Path | None = None,
    ) -> None:
        if cluster not in CLUSTERS:
            raise ConfigError(
                f"hydra.launcher.slurm.cluster={cluster!r} is not one of: {', '.join(CLUSTERS)} "
                "(local: submitit's jobs on this machine)"
            )
        for option, value in [
            ("timeout_min", timeout_min),
            ("mem_gb", mem_gb),
            ("cpus_per_task", cpus_per_task),
            ("array_parallelism", array_parallelism),
        ]:
            _check_positive(option, value)
        if cluster == "slurm" and shutil.which("srun") is None:
            raise ConfigError(
                "hydra.launcher.slurm.cluster=slurm: SLURM's srun is not on PATH here; run the "
                "sweep from a SLURM login node, or set hydra.launcher.slurm.cluster=local"
            )
        self.cluster = cluster
        # one folder for all jobs' files (<job id>_...): with submitit's %j (a folder per job),
        # its local executor leaves an empty folder named "%j" behind
        self.folder = Path(folder) if folder else Path(sweep_dir) / ".submitit"
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        self.executor.update_parameters(
            name="lossbench-stack",
            timeout_min=timeout_min,
            mem_gb=mem_gb,
            cpus_per_task=cpus_per_task,
            slurm_partition=partition,  # None: the cluster's default partition
        )
        if cluster == "local":
            cores = os.cpu_count() or 1
            self._n = max(1, min(array_parallelism, cores // cpus_per_task))
            self.driver_host = "127.0.0.1"
        else:
            self._n = array_parallelism
            self.driver_host = reachable_host()
        self._jobs: dict[submitit.Job, Future] = {}
        self._ended_at: dict[str, float] = {}  # SLURM job id -> when squeue first said ended
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="lossbench-jobs", daemon=True)
        self._watcher.start()

    @property
    def n_workers(self) -> int:
        """Jobs at once: ``array_parallelism`` (on this machine, at most its cores)."""
        return self._n

    def checker(self) -> InlineExecutor:
        """Jobs are checked here, in the sweep's process: a few seconds of work that, as jobs,
        would wait in the cluster's queue before a bad config could be reported."""
        return InlineExecutor()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Submit ``fn(*args)`` as a job; its future holds the job's result, or its error
        (``UncompletedJobError`` or a subclass when the job was preempted, timed out, killed
        or cancelled)."""
        if kwargs:
            raise TypeError("jobs take positional arguments only")
        future: Future = Future()
        try:
            job = self.executor.submit(StackJob(fn), *args)
        except Exception as err:  # sbatch refused it (a bad partition, a full queue): lost too
            future.set_exception(err)
            return future
        with self._lock:
            self._jobs[job] = future
        return future

    def _watch(self) -> None:
        """Complete each job's future when the job ends."""
        while not self._stopped.wait(POLL_SECONDS[self.cluster]):
            with self._lock:
                jobs = list(self._jobs.items())
            if not jobs:
                continue
            if self.cluster == "slurm":
                self._watch_slurm(jobs)
                continue
            for job, future in jobs:
                if self._stopped.is_set():
                    return
                try:
                    if not job.done():
                        continue
                    result = self._local_result(job)
                except BaseException as err:  # the job's, or a failure to read its state
                    self._settle(job, future, err)
                else:
                    self._settle(job, future, result=result)

    def _watch_slurm(self, jobs: list[tuple[submitit.Job, Future]]) -> None:
        """One look at SLURM's jobs: a job whose result file exists is done (with its result or
        its error); one that squeue says has ended without one was lost (after a grace for
        the file, if it ran to its end). Job states come from squeue: see
        :mod:`lossbench.sweep.executors.squeue` (submitit's come from sacct, which needs SLURM's
        accounting database)."""
        with contextlib.suppress(OSError):  # on NFS: see files other nodes wrote just now
            self.folder.chmod(self.folder.stat().st_mode)
        states = squeue.job_states(job.job_id for job, _ in jobs)
        now = time.monotonic()
        for job, future in jobs:
            if self._stopped.is_set():
                return
            try:
                if job.paths.result_pickle.exists():
                    result = _unless_stopped(job.result())
                elif states is None or not self._lost(job, states[job.job_id], now):
                    continue
                else:
                    raise self._lost_error(job, states[job.job_id])
            except BaseException as err:  # the job's error, or the job was lost
                self._settle(job, future, err)
            else:
                self._settle(job, future, result=result)

    def _lost(self, job: submitit.Job, state: str, now: float) -> bool:
        """Whether a job without a result file, in ``state``, has ended for good."""
        if state not in squeue.ENDED and state != squeue.GONE:
            return False  # pending, running, completing, requeued, suspended, ...
        if state == "PREEMPTED":  # SLURM may requeue it; the sweep submits its stack instead
            job.cancel(check=False)
        if state in ("COMPLETED", "FAILED", squeue.GONE):  # its result file may be on its way
            first = self._ended_at.setdefault(job.job_id, now)
            return now - first >= RESULT_GRACE_S
        return True  # cancelled, timed out, preempted, its node failed: killed by SLURM

    @staticmethod
    def _lost_error(job: submitit.Job, state: str) -> UncompletedJobError:
        how = "is no longer listed by squeue" if state == squeue.GONE else f"ended {state}"
        tail = (job.stderr() or "").strip().splitlines()[-5:]
        return UncompletedJobError(
            f"job {job.job_id} {how} without a result; logs: {job.paths.stderr}"
            + "".join(f"\n  {line}" for line in tail)
        )

    def _settle(
        self,
        job: submitit.Job,
        future: Future,
        error: BaseException | None = None,
        result: Any = None,
    ) -> None:
        with self._lock:
            self._ended_at.pop(job.job_id, None)
            if self._jobs.pop(job, None) is None:
                return  # stop() took it (a slow result file outlived stop's wait)
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def _local_result(self, job: submitit.Job) -> Any:
        if not job.paths.result_pickle.exists():
            # submitit would wait 15 s for the result file of a shared file system to show
            # up; a local job's is seen at once: the job ended without one
            tail = (job.stderr() or "").strip().splitlines()[-5:]
            raise UncompletedJobError(
                f"job {job.job_id} ended without a result (killed?); logs: {job.paths.stderr}"
                + "".join(f"\n  {line}" for line in tail)
            )
        return _unless_stopped(job.result())

    def stop(self, kill: bool) -> None:
        """Stop watching; with ``kill`` (after an interrupt or an error), cancel the jobs not
        finished. Without it, none is left: the sweep waited for every one."""
        self._stopped.set()
        self._watcher.join(timeout=10)
        with self._lock:
            jobs, self._jobs = dict(self._jobs), {}
        # a local job's task can outlive its controller: one that gets the cancel signal while
        # it is still starting the task does not pass it on (submitit's race)
        tasks = _local_tasks(jobs) if kill and self.cluster == "local" else []
        for job, future in jobs.items():
            if kill:
                try:
                    job.cancel(check=False)
                except OSError as err:  # scancel missing: say so, stop the others
                    log.warning("Could not cancel job %s: %s", job.job_id, err)
            future.cancel()
        # a local job's controller stops its task within a second or so: wait for that, so
        # that no training outlives the sweep's process; then end any task left
        deadline = time.monotonic() + 10
        while self.cluster == "local" and kill and time.monotonic() < deadline:
            if all(job.done() for job in jobs):
                break
            time.sleep(0.1)
        _, alive = psutil.wait_procs(tasks, timeout=2)
        for task in alive:
            with contextlib.suppress(psutil.Error):
                task.kill()


def _unless_stopped(result: Any) -> Any:
    """A job's result; raises if SLURM stopped the job (see :class:`StackJob`)."""
    if isinstance(result, Stopped):
        raise UncompletedJobError(result.reason)
    return result


def _local_tasks(jobs: Any) -> list[psutil.Process]:
    """The processes under local jobs' controllers (a local job's id is its controller's pid)."""
    tasks = []
    for job in jobs:
        with contextlib.suppress(psutil.Error, ValueError):
            tasks += psutil.Process(int(job.job_id)).children(recursive=True)
    return tasks
