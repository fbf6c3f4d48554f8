"""Where stacks train (``hydra.launcher.executor``): ``local`` worker processes, tasks on a
``ray`` cluster, or ``slurm`` jobs through submitit.

Every executor is a :class:`concurrent.futures.Executor`: the sweep submits
``train_stack(cfgs, ...)`` and reads each stack's per-member results from its future. The
sweep's process stays the only MLflow writer whichever executor trains; what differs is what
:class:`StackExecutor` adds: how many stacks train at once, where checks run, how many times a
lost stack is submitted again, and where workers reach the driver.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from lossbench.config.spec import ConfigError

EXECUTORS = ("local", "ray", "slurm")


class StackExecutor(Executor):
    """An executor of stacks, with what the sweep needs beyond ``submit``."""

    name = "local"
    # A stack whose task was lost (its worker died, its job was preempted) is submitted again
    # this many times before its runs are marked FAILED with the reason.
    retries = 0
    # Where the workers reach the sweep's process (live rows: see lossbench.sweep.live).
    driver_host = "127.0.0.1"

    @property
    def n_workers(self) -> int:
        """How many stacks can train at once (the stacks are planned for this many)."""
        return 1

    def checker(self) -> Executor:
        """Where every job is checked before any trains (see ``lossbench.sweep.checking.check_all``)."""
        return self

    def wait_ready(self) -> None:
        """Wait until a worker can take a stack."""

    def stop(self, kill: bool) -> None:
        """Release the workers: wait for them, or (after an interrupt) cancel their work."""
        self.shutdown(wait=not kill, cancel_futures=True)


def _init_worker() -> None:
    """Workers yield to the main process, which feeds them stacks and records results: on
    two cores, three busy processes would otherwise stall the one that keeps the others busy.
    Ctrl+C is the main process's to handle: it records the runs in flight, then stops us."""
    os.nice(5)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm_worker() -> None:
    """Start a worker while the main process is still composing and checking."""
    import lossbench.fit.training  # noqa: F401 (already imported by the fork server)


class InlineExecutor(StackExecutor):
    """Runs each task at submit time, in this process (one worker, or a single stack)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn`` now; its result or exception is in the returned future."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future

    def stop(self, kill: bool) -> None:
        """Nothing to release."""


class LocalExecutor(StackExecutor):
    """``n`` worker processes on this machine (``hydra.launcher.executor=local``).

    Workers fork from a server process that has imported torch and Lightning, and what loading
    data needs (scikit-learn, which lossbench.problem.data imports only when it loads), once: ~6 s of
    CPU that each spawned worker would otherwise pay again. The pool starts in a background
    thread, so that the imports overlap with composing the jobs.
    """

    def __init__(self, n: int) -> None:
        self._n = n
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            [
                "lossbench.fit.training",
                "sklearn.datasets",
                "sklearn.model_selection",
                "lossbench.sweep.executors.fork_server",  # a quick exit for the server
            ]
        )
        self.pool = ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_init_worker)
        threading.Thread(target=self._warm, name="lossbench-pool-start", daemon=True).start()

    def _warm(self) -> None:
        for _ in range(self._n):
            self.pool.submit(_warm_worker)

    @property
    def n_workers(self) -> int:
        """The pool's size."""
        return self._n

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn`` in a worker process."""
        return self.pool.submit(fn, *args, **kwargs)

    def wait_ready(self) -> None:
        """Wait until a worker's imports are done."""
        self.pool.submit(_warm_worker).result()

    def stop(self, kill: bool) -> None:
        """Shut the pool down: wait for it, or (after an interrupt) kill its workers at once."""
        if not kill:
            self.pool.shutdown(wait=True, cancel_futures=True)
            return
        if sys.version_info >= (3, 14):
            self.pool.kill_workers()  # type: ignore[attr-defined] (new in 3.14; shuts it down)
            return
        # Before 3.14 no public API names a pool's workers; they are this process's only
        # multiprocessing children (forkserver's workers are Process objects of ours too).
        workers = multiprocessing.active_children()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.kill()
        for process in workers:
            process.join(timeout=5)


def worker_count(n_jobs: int | None, n_stacks: int) -> int:
    """Local worker processes to use: ``n_jobs`` (all cores when ``None`` or -1), at most one
    per stack."""
    cores = os.cpu_count() or 1
    wanted = cores if n_jobs in (None, -1) else int(n_jobs)
    if wanted < 1:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1, or -1 for all cores")
    return max(1, min(wanted, n_stacks))


def make_executor(n_workers: int) -> StackExecutor:
    """A pool of ``n_workers`` local processes, or in-process execution for one."""
    return InlineExecutor() if n_workers <= 1 else LocalExecutor(n_workers)


def open_executor(
    name: str,
    n_jobs: int | None,
    n_runs: int,
    options: Mapping[str, Mapping[str, Any]],
    sweep_dir: str | Path,
) -> StackExecutor:
    """The executor ``hydra.launcher.executor`` names, with its options (``options[name]``:
    ``hydra.launcher.ray``, ``hydra.launcher.slurm``). ``local`` uses ``n_jobs`` processes,
    at most one per run. Bad names and options raise before anything is checked or trained."""
    if name not in EXECUTORS:
        raise ConfigError(f"hydra.launcher.executor={name!r} is not one of: {', '.join(EXECUTORS)}")
    if name == "ray":
        from lossbench.sweep.executors.ray_tasks import RayExecutor

        return RayExecutor(**options.get("ray", {}))
    if name == "slurm":
        from lossbench.sweep.executors.submitit_jobs import SlurmExecutor

        return SlurmExecutor(sweep_dir=sweep_dir, **options.get("slurm", {}))
    return make_executor(worker_count(n_jobs, n_runs))
