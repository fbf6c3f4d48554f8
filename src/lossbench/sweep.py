"""Running many runs fast: check them all, stack compatible ones, train stacks in parallel.

Used by lossbench's Hydra launcher (``hydra/launcher=lossbench``, the default):

1. every job's config is composed and checked before anything trains or is written;
2. jobs whose config already has a completed run in the store are not trained again (the run
   is adopted by the sweep), and jobs with the same config train once;
3. runs that differ only in ``seed`` and ``loss`` are grouped into stacks (one Lightning fit
   each, members trained as one batched model);
4. stacks train in worker processes (one torch thread each) while this process, the only MLflow
   writer, records each run: RUNNING when its stack is handed to the workers, metrics and status
   when it ends.

Steps 2 to 4 are :func:`run_sweep`, which ``lossbench-claims`` calls too.

Nothing here imports Lightning: only the workers (or :func:`train_stack` in-process) do.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench.config import ConfigError, RunSpec, check_run, check_seed, config_hash
from lossbench.interrupts import Interrupted
from lossbench.results import RunResult
from lossbench.stacking import stack_key
from lossbench.tracking.records import RunRecord
from lossbench.tracking.sweeps import SweepInfo, mark_interrupted, sweep_parent
from lossbench.tracking.writer import Tracker

log = logging.getLogger(__name__)

MAX_MEMBERS = 64  # default: at most this many runs per stack (hydra.launcher.max_members)


@dataclass
class Stack:
    """Runs that train together as members of one stacked model (one Lightning fit)."""

    jobs: list[int]  # indices into the sweep's job list
    specs: list[RunSpec]
    facts: dict[str, Any]  # of their data: SplitData.summary()
    run_ids: list[str | None] = field(default_factory=list)
    started: float = 0.0

    def label(self) -> str:
        """A short description for progress lines."""
        first = self.specs[0]
        choices = first.choices
        text = "-".join(choices.get(g, "?") for g in ("dataset", "optimizer", "scheduler"))
        losses = sorted({s.choices.get("loss", "?") for s in self.specs})
        seeds = sorted({s.seed for s in self.specs})
        return f"{text} loss={','.join(losses)} seeds={','.join(map(str, seeds))}"


def plan_stacks(
    jobs: Sequence[int],
    specs: Sequence[RunSpec],
    facts: Sequence[dict[str, Any]],
    stack: bool,
    max_members: int,
) -> list[Stack]:
    """Group the given jobs' runs into stacks, keeping the sweep's order of first appearance."""
    stacks: list[Stack] = []
    open_stacks: dict[str, Stack] = {}
    for job in jobs:
        spec, data = specs[job], facts[job]
        key = stack_key(spec, "seed_loss") if stack else None
        current = open_stacks.get(key) if key is not None else None
        if current is None or len(current.specs) >= max_members:
            current = Stack([], [], data)
            stacks.append(current)
            if key is not None:
                open_stacks[key] = current
        current.jobs.append(job)
        current.specs.append(spec)
    return stacks


def _job_error(spec: RunSpec, err: ConfigError) -> ConfigError:
    where = f"job #{spec.job_num}" if spec.job_num is not None else "run"
    return ConfigError(f"{where} ({' '.join(spec.overrides)}): {err}")


def check_specs(specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Check runs (see :func:`lossbench.config.check_run`), building each distinct component
    once; returns the facts of each one's data. The first bad run raises, naming its job and
    overrides."""
    facts = []
    seen: dict[str, Any] = {}
    for spec in specs:
        try:
            facts.append(check_run(spec, seen).summary())
        except ConfigError as err:
            raise _job_error(spec, err) from None
    return facts


def check_all(specs: Sequence[RunSpec], executor: Executor, n_workers: int) -> list[dict[str, Any]]:
    """Check every run before any trains, on the workers (which have torch imported already).

    Runs that differ only in their seed are checked once; each seed is checked here. Returns
    the facts of each run's data; the first bad run raises.
    """
    keys = [
        json.dumps({k: v for k, v in spec.cfg.items() if k != "seed"}, sort_keys=True, default=str)
        for spec in specs
    ]
    first: dict[str, RunSpec] = {}
    for key, spec in zip(keys, specs, strict=True):
        first.setdefault(key, spec)
        try:
            check_seed(spec.cfg)
        except ConfigError as err:
            raise _job_error(spec, err) from None
    distinct = list(first)
    chunks = [chunk for i in range(n_workers) if (chunk := distinct[i::n_workers])]
    futures = [executor.submit(check_specs, [first[k] for k in chunk]) for chunk in chunks]
    facts: dict[str, dict[str, Any]] = {}
    for chunk, future in zip(chunks, futures, strict=True):
        try:
            facts.update(zip(chunk, future.result(), strict=True))
        except ConfigError as err:  # raised on a worker: without the remote traceback
            raise ConfigError(str(err)) from None
    return [facts[key] for key in keys]


def train_stack(cfgs: list[dict[str, Any]]) -> list[RunResult]:
    """Worker entry point: train one stack. If the stacked fit raises, each member is trained
    alone, so that only the members that fail by themselves are FAILED (with their traceback)."""
    from lossbench.training import fit_members

    try:
        return fit_members(cfgs)
    except Exception:
        if len(cfgs) == 1:
            return [RunResult.failed(traceback.format_exc())]
        log.warning("A stack of %d runs failed; training its runs one by one", len(cfgs))
    results = []
    for cfg in cfgs:
        try:
            [result] = fit_members([cfg])
            result.tags["lossbench.trained_alone"] = "true"  # not as its stack_id says
        except Exception:
            result = RunResult.failed(traceback.format_exc())
        results.append(result)
    return results


def _init_worker() -> None:
    """Workers yield to the main process, which feeds them stacks and records results: on
    two cores, three busy processes would otherwise stall the one that keeps the others busy.
    Ctrl+C is the main process's to handle: it records the runs in flight, then stops us."""
    os.nice(5)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _warm_worker() -> None:
    """Start a worker while the main process is still composing and checking."""
    import lossbench.training  # noqa: F401 (already imported by the fork server)


class _InlineExecutor(Executor):
    """Runs each task at submit time, in this process (one worker, or a single stack)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:
            future.set_exception(err)
        return future


def make_executor(n_workers: int) -> Executor:
    """A pool of ``n_workers`` processes, or in-process execution for one.

    Workers fork from a server process that has imported torch and Lightning, and what loading
    data needs (scikit-learn, which lossbench.data imports only when it loads), once: ~6 s of
    CPU that each spawned worker would otherwise pay again. The pool starts in a background
    thread, so that the imports overlap with composing the jobs.
    """
    if n_workers <= 1:
        return _InlineExecutor()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(
        ["lossbench.training", "sklearn.datasets", "sklearn.model_selection"]
    )
    pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=context, initializer=_init_worker)

    def warm() -> None:
        for _ in range(n_workers):
            pool.submit(_warm_worker)

    threading.Thread(target=warm, name="lossbench-pool-start", daemon=True).start()
    return pool


def wait_for_workers(executor: Executor) -> None:
    """Wait until a worker process can take a task (its imports done); at once in-process."""
    if isinstance(executor, ProcessPoolExecutor):
        executor.submit(_warm_worker).result()


def worker_count(n_jobs: int | None, n_stacks: int) -> int:
    """Worker processes to use: ``n_jobs`` (all cores when ``None`` or -1), at most one per stack."""
    cores = os.cpu_count() or 1
    wanted = cores if n_jobs in (None, -1) else int(n_jobs)
    if wanted < 1:
        raise ConfigError(f"hydra.launcher.n_jobs={n_jobs} must be >= 1, or -1 for all cores")
    return max(1, min(wanted, n_stacks))


def stop_executor(executor: Executor, kill: bool) -> None:
    """Shut the pool down: wait for it, or (after an interrupt) kill its workers at once."""
    if not kill or not isinstance(executor, ProcessPoolExecutor):
        executor.shutdown(wait=True, cancel_futures=True)
        return
    if sys.version_info >= (3, 14):
        executor.kill_workers()  # type: ignore[attr-defined] (new in 3.14; shuts the pool down)
        return
    # Before 3.14 no public API names a pool's workers; they are this process's only
    # multiprocessing children (forkserver's workers are Process objects of ours too).
    workers = multiprocessing.active_children()
    executor.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        process.kill()
    for process in workers:
        process.join(timeout=5)


class StackRunner:
    """Trains stacks on an executor and records each run as its stack starts and ends; the
    only MLflow writer of a sweep run by lossbench's launcher."""

    def __init__(self, sweep_dir: str | Path, on_result: Callable[[int, RunResult], None]) -> None:
        self.sweep_dir = sweep_dir
        self.on_result = on_result
        self.trackers: dict[tuple[Any, ...], Tracker | None] = {}
        self.sweeps: dict[str, SweepInfo] = {}
        self.done = 0
        self.statuses: Counter[str] = Counter()

    @staticmethod
    def tracking_key(spec: RunSpec) -> tuple[Any, ...]:
        """Equal for runs recorded by the same tracker (same ``tracking`` config)."""
        return tuple(sorted((k, str(v)) for k, v in spec.cfg["tracking"].items()))

    def tracker(self, spec: RunSpec) -> Tracker | None:
        """The tracker of a run's ``tracking`` config (shared by runs with the same config)."""
        key = self.tracking_key(spec)
        if key not in self.trackers:
            self.trackers[key] = Tracker.from_config(spec.cfg["tracking"])
        return self.trackers[key]

    def skip_completed(self, specs: Sequence[RunSpec]) -> dict[int, RunRecord]:
        """Jobs whose config already has a completed run in their experiment (same config
        hash; FINISHED, or diverged), unless they say ``rerun=true``: job -> that run. Checks
        first that each store can be reached."""
        done: dict[int, RunRecord] = {}
        completed: dict[int, dict[str, RunRecord]] = {}
        for job, spec in enumerate(specs):
            tracker = self.tracker(spec)
            if tracker is None:
                continue
            if id(tracker) not in completed:
                tracker.check_reachable()
                completed[id(tracker)] = tracker.completed_runs()
            record = completed[id(tracker)].get(config_hash(spec.cfg))
            if record is not None and not spec.cfg.get("rerun", False):
                done[job] = record
        return done

    def adopt(self, records: Mapping[int, RunRecord], specs: Sequence[RunSpec]) -> None:
        """Count completed runs as part of this sweep (the report then shows them too)."""
        by_tracker: dict[int, tuple[Tracker, list[str]]] = {}
        for job, record in records.items():
            tracker = self.tracker(specs[job])
            if tracker is not None:
                by_tracker.setdefault(id(tracker), (tracker, []))[1].append(record.run_id)
        for tracker, run_ids in by_tracker.values():
            tracker.adopt(run_ids, self._sweep(tracker))

    def _sweep(self, tracker: Tracker) -> SweepInfo:
        if tracker.uri not in self.sweeps:
            self.sweeps[tracker.uri] = sweep_parent(self.sweep_dir, tracker)
        return self.sweeps[tracker.uri]

    def _start(self, stack: Stack) -> None:
        stack.started = time.perf_counter()
        tracker = self.tracker(stack.specs[0])  # tracking config is a stack key: shared
        if tracker is None:
            stack.run_ids = [None] * len(stack.specs)
        else:
            sweep = self._sweep(tracker)
            stack.run_ids = list(tracker.start_runs(stack.specs, stack.facts, sweep))

    def _record(self, stack: Stack, results: Sequence[RunResult]) -> None:
        tracker = self.tracker(stack.specs[0])
        if tracker is not None:
            tracker.finish_runs([r for r in stack.run_ids if r], results)
        self.statuses.update(r.outcome for r in results)

    def _finish(self, stack: Stack, results: Sequence[RunResult], total: int, t0: float) -> None:
        self._record(stack, results)
        for job, result in zip(stack.jobs, results, strict=True):
            self.on_result(job, result)
        self.done += len(results)
        elapsed = time.perf_counter() - t0
        rate = self.done / elapsed * 60 if elapsed else 0.0
        eta = (total - self.done) / rate * 60 if rate else 0.0
        outcomes = Counter(r.outcome for r in results if r.outcome != "finished")
        log.info(
            "[%d/%d] %d run(s) in %.1fs%s: %s | %.0f runs/min, ETA %.0fs",
            self.done,
            total,
            len(results),
            time.perf_counter() - stack.started,
            "".join(f", {n} {o}" for o, n in sorted(outcomes.items())),
            stack.label(),
            rate,
            eta,
        )

    def run(self, stacks: Sequence[Stack], executor: Executor, n_workers: int) -> None:
        """Train all stacks on ``n_workers`` workers.

        One stack more than there are workers is kept queued, so that a worker that finishes
        starts the next stack at once, while this process records the finished one. On
        Ctrl+C or SIGTERM, the runs of the stacks in flight are recorded KILLED.
        """
        total = sum(len(s.specs) for s in stacks)
        pending = deque(stacks)
        running: dict[Future, Stack] = {}
        in_flight = n_workers + 1 if n_workers > 1 else 1
        t0 = time.perf_counter()
        try:
            while pending or running:
                while pending and len(running) < in_flight:
                    stack = pending.popleft()
                    self._start(stack)
                    running[executor.submit(train_stack, [s.cfg for s in stack.specs])] = stack
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stack = running.pop(future)
                    try:
                        results = future.result()
                    except Exception:  # a worker died (e.g. killed): its members failed
                        error = traceback.format_exc()
                        results = [RunResult.failed(error) for _ in stack.specs]
                    self._finish(stack, results, total, t0)
        except Interrupted as interrupt:
            mark_interrupted()
            for stack in running.values():
                if stack.run_ids:
                    self._record(
                        stack, [RunResult.failed(str(interrupt), "KILLED") for _ in stack.specs]
                    )
            log.error(
                "%s: %d runs finished, %d marked KILLED, %d not started",
                interrupt,
                self.done,
                sum(len(s.specs) for s in running.values() if s.run_ids),
                sum(len(s.specs) for s in pending),
            )
            raise


@dataclass
class SweepPlan:
    """What :func:`run_sweep` does with a sweep's jobs (indices into its job list)."""

    done: dict[int, RunRecord]  # already completed in the store: adopted, not trained
    copies: dict[int, list[int]]  # a job that trains -> later jobs with its config: its result
    stacks: list[Stack]  # the jobs that train
    n_workers: int
    statuses: Counter[str] = field(default_factory=Counter)  # outcomes of the runs trained

    @property
    def trained(self) -> int:
        """How many runs train."""
        return sum(len(stack.jobs) for stack in self.stacks)

    @property
    def shared(self) -> int:
        """How many jobs take the result of another job with the same config."""
        return sum(len(jobs) for jobs in self.copies.values())


def run_sweep(
    specs: Sequence[RunSpec],
    facts: Sequence[Mapping[str, Any]],
    sweep_dir: str | Path,
    executor: Executor,
    n_workers: int,
    on_result: Callable[[int, RunResult], None],
    stack: bool = True,
    max_members: int = MAX_MEMBERS,
    alone: Collection[int] = (),
    on_plan: Callable[[SweepPlan], None] | None = None,
) -> SweepPlan:
    """Run checked jobs (``facts``: see :func:`check_all`) and record them in their stores.

    - A job whose config already has a completed run in its store (see
      :meth:`StackRunner.skip_completed`) is not trained: the sweep adopts that run.
    - Jobs with the same config and store train once; each gets the result.
    - The rest train in stacks (``stack=False``: one run per fit) of at most ``max_members``.
    - Jobs in ``alone`` train in fits of their own (e.g. for their time per run), and a
      completed run that was trained in a stack does not count as done for them.

    ``on_result(job, result)`` is called for every job: at once for those already done, as
    its stack ends for the others. ``on_plan`` sees the plan before anything trains.
    """
    copies: dict[int, list[int]] = {}

    def deliver(job: int, result: RunResult) -> None:
        on_result(job, result)
        for other in copies.get(job, []):
            on_result(other, result)

    runner = StackRunner(sweep_dir, deliver)
    done = runner.skip_completed(specs)
    for job in set(alone) & set(done):  # a run trained in a stack does not time a run alone
        if done[job].tags.get("lossbench.members", "1") != "1":
            del done[job]
    first: dict[tuple[Any, ...], int] = {}  # the same config into the same store trains once
    for job, spec in enumerate(specs):
        if job not in done:
            key = (config_hash(spec.cfg), runner.tracking_key(spec), job in alone)
            if first.setdefault(key, job) != job:
                copies.setdefault(first[key], []).append(job)
    todo = sorted(first.values())
    stacks = plan_stacks([j for j in todo if j not in alone], specs, facts, stack, max_members)
    stacks += plan_stacks([j for j in todo if j in alone], specs, facts, False, 1)
    plan = SweepPlan(done, copies, stacks, max(1, min(n_workers, len(stacks))))
    if on_plan is not None:
        on_plan(plan)
    runner.adopt(done, specs)
    for job, record in done.items():
        on_result(job, record.result())
    runner.run(stacks, executor, plan.n_workers)
    plan.statuses = runner.statuses
    return plan
