"""``hydra/launcher=lossbench``: check every job first, skip jobs already completed in the
store, stack runs that share their problem into one fit each (by default runs that differ only
in seed, loss, penalty, optimizer and schedule; ``stack_by=seed_loss``: only in seed and loss),
sized so that every worker stays busy to the end, train stacks in parallel worker processes,
and record every job in MLflow.

The work is done by :mod:`lossbench.sweep`; this class adapts it to Hydra's Launcher interface,
so that each job still gets its output directory, callbacks and JobReturn.

(No ``from __future__ import annotations`` here: Hydra loads plugins outside ``sys.modules``,
where dataclasses cannot resolve string annotations.)
"""

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.lossbench_plugins.job_return import PlainHandOver, has_job_hooks
from hydra_plugins.lossbench_plugins.job_return import hand_over as hand_over_job
from lossbench.sweep.audit import AUDIT_MODES
from lossbench.sweep.plan import MAX_MEMBERS, STACK_BY_DEFAULT, SweepPlan
from lossbench.sweep.stacking import STACK_BY

log = logging.getLogger(__name__)

SUMMARY_FILE = "lossbench-summary.json"  # in the sweep dir: counts and where the time went


@dataclass
class RayExecutorConf:
    """``hydra.launcher.ray.*``: stacks as tasks on a running Ray cluster (``executor=ray``)."""

    address: Optional[str] = None  # noqa: UP045 (null: $RAY_ADDRESS if set, else "auto")
    num_cpus: int = 1  # CPUs per stack task: the cluster's CPUs / num_cpus stacks train at once


@dataclass
class SlurmExecutorConf:
    """``hydra.launcher.slurm.*``: stacks as SLURM jobs through submitit (``executor=slurm``)."""

    cluster: str = "slurm"  # "local": submitit's local executor (this machine, for testing)
    partition: Optional[str] = None  # noqa: UP045
    timeout_min: int = 60
    mem_gb: int = 4
    cpus_per_task: int = 1
    array_parallelism: int = 64  # at most this many stacks (jobs) at once
    folder: Optional[str] = None  # noqa: UP045 (null: <sweep dir>/.submitit)


@dataclass
class LossbenchLauncherConf:
    """Options of ``hydra/launcher=lossbench`` (set as ``hydra.launcher.<name>=...``)."""

    _target_: str = "hydra_plugins.lossbench_plugins.launcher.LossbenchLauncher"
    # worker processes; null or -1: all cores; 1: train in this process
    n_jobs: Optional[int] = None  # noqa: UP045 (OmegaConf needs typing.Optional)
    stack: bool = True  # train runs that may stack (see stack_by) as one stacked model
    max_members: int = MAX_MEMBERS  # at most this many runs per stack
    # recipe: runs may differ in seed, loss, penalty, optimizer and schedule; seed_loss: only
    # in seed and loss
    stack_by: str = STACK_BY_DEFAULT
    # where stacks train: local (worker processes here), ray (tasks on a Ray cluster) or
    # slurm (jobs through submitit); this process records every run whichever it is
    executor: str = "local"
    # check one member of each stack against its plain model trained alone: auto (stacks with
    # anything outside lossbench's tested menu: a user's _target_, callbacks), all, or off
    audit: str = "auto"
    ray: RayExecutorConf = field(default_factory=RayExecutorConf)
    slurm: SlurmExecutorConf = field(default_factory=SlurmExecutorConf)


ConfigStore.instance().store(
    group="hydra/launcher", name="lossbench", node=LossbenchLauncherConf, provider="lossbench"
)


class _Recorded:
    """Task function for run_job: hands over a run that has already trained and been recorded.

    A diverged run completed its job (divergence is a result); other failures fail it."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __call__(self, cfg: DictConfig) -> Any:
        return self.outcome()

    def outcome(self) -> Any:
        """The job's return value, or the run's failure raised."""
        if self.result.status != "FINISHED" and not self.result.diverged:
            raise RuntimeError(f"run {self.result.status}:\n{self.result.error}")
        return self.result.job_return()


class LossbenchLauncher(Launcher):
    """Stacks compatible jobs and trains them in parallel; see the module docstring."""

    checks_jobs = True  # lossbench's sweeper leaves checking every job to this launcher

    def __init__(
        self,
        n_jobs: Optional[int] = None,  # noqa: UP045
        stack: bool = True,
        max_members: int = MAX_MEMBERS,
        stack_by: str = STACK_BY_DEFAULT,
        executor: str = "local",
        audit: str = "auto",
        ray: Optional[Any] = None,  # noqa: UP045
        slurm: Optional[Any] = None,  # noqa: UP045
    ) -> None:
        self.n_jobs = n_jobs
        self.audit = audit
        self.executor = executor
        self.executor_options = {"ray": dict(ray or {}), "slurm": dict(slurm or {})}
        self.stack = stack
        self.max_members = max_members
        self.stack_by = stack_by
        self.config: Optional[DictConfig] = None  # noqa: UP045
        self.hydra_context: Optional[HydraContext] = None  # noqa: UP045
        self.task_function: Optional[TaskFunction] = None  # noqa: UP045

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what launch() needs (Hydra calls this before launching)."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run one batch of jobs; returns their JobReturns in job order. Bad input (any job's)
        exits 2 with its message before anything is written, the sweep's directory included."""
        from lossbench.bad_input import clean_errors

        with clean_errors():
            return self._checked_launch(job_overrides, initial_job_idx)

    def _checked_launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lossbench.config.spec import ConfigError
        from lossbench.interrupts import interrupts
        from lossbench.sweep.executors import open_executor

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if self.max_members < 1:
            raise ConfigError(f"hydra.launcher.max_members={self.max_members} must be >= 1")
        if self.stack_by not in STACK_BY:
            raise ConfigError(
                f"hydra.launcher.stack_by={self.stack_by!r} is not one of: {', '.join(STACK_BY)}"
            )
        if self.audit not in AUDIT_MODES:
            raise ConfigError(
                f"hydra.launcher.audit={self.audit!r} is not one of: {', '.join(AUDIT_MODES)}"
            )

        # Workers start importing torch and Lightning now, while jobs are composed and checked.
        executor = open_executor(
            self.executor, self.n_jobs, len(job_overrides), self.executor_options, sweep_dir
        )
        finished = False
        try:
            with interrupts():
                returns = self._launch(job_overrides, initial_job_idx, sweep_dir, executor)
            finished = True
            return returns
        finally:
            executor.stop(kill=not finished)

    def _launch(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        sweep_dir: Path,
        executor: Any,
    ) -> Sequence[JobReturn]:
        from lossbench.results import RunResult
        from lossbench.sweep.checking import check_all
        from lossbench.sweep.jobs import compose_jobs
        from lossbench.sweep.run import run_sweep
        from lossbench.tracking.store import import_mlflow, mlflow_seconds, tracking_uri

        assert self.config is not None and self.hydra_context is not None
        start = time.perf_counter()
        jobs = compose_jobs(
            self.hydra_context.config_loader, self.config, job_overrides, initial_job_idx
        )
        specs = [job.spec for job in jobs]
        composed = time.perf_counter()
        # While the workers finish their imports, this process imports MLflow (it opens the
        # stores once every job is checked) and makes a new store's schema in a temporary
        # directory: in a thread, so that composing is not slowed.
        stores = {
            tracking_uri(s.cfg["tracking"])
            for s in specs
            if s.cfg.get("tracking", {}).get("enabled", True)
        }
        threading.Thread(
            target=import_mlflow,
            args=(next(iter(stores)) if len(stores) == 1 else None,),
            name="lossbench-import-mlflow",
            daemon=True,
        ).start()
        executor.wait_ready()  # their imports, started before composing
        ready = time.perf_counter()
        checker = executor.checker()
        facts = check_all(specs, checker, checker.n_workers)
        n_workers = executor.n_workers
        checked = time.perf_counter()
        # every job passed: now the sweep's directory, its multirun.yaml and its file
        from hydra_plugins.lossbench_plugins.callback import start_sweep_file

        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not (sweep_dir / "multirun.yaml").exists():
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        start_sweep_file(self.config)

        returns: dict[int, JobReturn] = {}
        plain = None if has_job_hooks(self.config.hydra.callbacks) else PlainHandOver()

        def hand_over(job: int, result: RunResult) -> None:
            # the job's output dir, .hydra/ files, callbacks and JobReturn, as Hydra gives them;
            # no per-job log file: the job's work was done (and logged) by its stack
            handed = plain(jobs[job], _Recorded(result).outcome) if plain is not None else None
            if handed is not None:
                returns[job] = handed
                return
            returns[job] = hand_over_job(self.hydra_context, _Recorded(result), jobs[job].config())
            jobs[job].release()  # the JobReturn holds what it needs of it

        def announce(plan: SweepPlan) -> None:
            log.info(
                "Launching %d jobs: %d already completed in the store, %d to train as %d stacked "
                "fit(s) on %d worker(s)%s (composed in %.1fs, workers ready %.1fs later, checked in "
                "%.1fs); executor %s; sweep dir %s",
                len(specs),
                len(plan.done),
                plan.trained,
                len(plan.stacks),
                plan.n_workers,
                f", {plan.shared} sharing another job's config" if plan.shared else "",
                composed - start,
                ready - composed,
                checked - ready,
                executor.name,
                sweep_dir,
            )
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.debug("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))

        plan = run_sweep(
            specs, facts, sweep_dir, executor, n_workers, hand_over, stack=self.stack,
            max_members=self.max_members, stack_by=self.stack_by, on_plan=announce,
            audit=self.audit,
        )  # fmt: skip

        summary = {
            "runs": len(specs),
            "skipped_finished": len(plan.done),
            "statuses": dict(plan.statuses),
            "stacks": len(plan.stacks),
            "stack_by": self.stack_by if self.stack else None,
            "workers": plan.n_workers,
            "executor": executor.name,
            "compose_seconds": round(composed - start, 3),
            "worker_wait_seconds": round(ready - composed, 3),  # their imports, after composing
            "check_seconds": round(checked - ready, 3),
            "train_seconds": round(time.perf_counter() - checked, 3),
            "mlflow_seconds": round(mlflow_seconds(), 3),
            "audit": self.audit,
            "audits": dict(plan.audits),  # stacks, by outcome
        }
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        log.info(
            "%d runs trained (%s) in %.1fs; MLflow writes took %.1fs",
            plan.trained,
            ", ".join(f"{n} {outcome}" for outcome, n in sorted(plan.statuses.items())) or "none",
            summary["train_seconds"],
            summary["mlflow_seconds"],
        )
        if plan.audits:
            log.info(
                "Audit (%s): %s of %d stack(s) against their plain models",
                self.audit,
                ", ".join(f"{n} {outcome}" for outcome, n in sorted(plan.audits.items())),
                len(plan.stacks),
            )
        if plan.audit_failures:  # every run is recorded; the sweep itself fails
            from lossbench.bad_input import fail

            fail(
                code=1,
                message=f"{len(plan.audit_failures)} stack(s) failed the audit: a stacked member did not "
                "train as its plain model alone, so these runs are not what their configs say "
                "(they are tagged lossbench.audit=failed, and claims refuse them). "
                + " | ".join(plan.audit_failures)
                + " Re-run with hydra.launcher.stack=false to train each run alone, and report "
                "this with the recipe.",
            )
        return [returns[job] for job in range(len(jobs))]
