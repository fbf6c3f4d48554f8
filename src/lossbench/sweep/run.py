"""Running a sweep fast: train its stacks in parallel and record every run.

Used by lossbench's Hydra launcher (``hydra/launcher=lossbench``, the default):

1. every job's config is composed and checked before anything trains or is written;
2. jobs whose config already has a completed run in the store are not trained again (the run
   is adopted by the sweep), and jobs with the same config train once;
3. runs that may train together (:func:`lossbench.sweep.stacking.stack_key`: by default runs that
   differ only in their recipe) are grouped into stacks (one Lightning fit each, members
   trained as one batched model), sized so that every worker stays busy to the end
   (:func:`plan_stacks`);
4. stacks train on an executor's workers (:mod:`lossbench.sweep.executors`: local processes, Ray
   tasks or SLURM jobs; one torch thread each) while this process, the only MLflow writer,
   records each run: RUNNING when its stack is handed to the workers, its curves as they
   arrive (:mod:`lossbench.sweep.live`), the rest and its status when it ends; a lost stack is
   submitted again as often as its executor says.

Steps 2 to 4 are :func:`run_sweep`, which ``lossbench-claims`` calls too.

Nothing here imports Lightning: only the workers (or :func:`train_stack` in-process) do.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import Any

from lossbench.config.spec import RunSpec
from lossbench.identity import config_hash
from lossbench.interrupts import Interrupted
from lossbench.results import RunResult
from lossbench.sweep.audit import TAG as AUDIT_TAG
from lossbench.sweep.audit import audit_stack, wants_audit
from lossbench.sweep.live import LiveCurves, LiveSender, LiveTarget
from lossbench.sweep.plan import MAX_MEMBERS, STACK_BY_DEFAULT, Stack, SweepPlan, plan_stacks
from lossbench.tracking.records import RunRecord
from lossbench.tracking.sweeps import SweepInfo, mark_interrupted, sweep_parent
from lossbench.tracking.writer import Tracker

log = logging.getLogger(__name__)


def train_stack(
    cfgs: list[dict[str, Any]], live: LiveTarget | None = None, audit: str = "off"
) -> list[RunResult]:
    """Worker entry point: train one stack, sending its epochs' rows to ``live`` as it trains
    (see :mod:`lossbench.sweep.live`), then audit one member against its plain model if ``audit``
    (a mode of :mod:`lossbench.sweep.audit`) asks for it. If the stacked fit raises, each member is
    trained alone, so that only the members that fail by themselves are FAILED (with their
    traceback)."""
    from lossbench.fit.training import fit_members

    sender = LiveSender(live) if live is not None else None
    try:
        results = fit_members(cfgs, on_epoch_end=sender)
    except Exception:
        if len(cfgs) == 1:
            return [RunResult.failed(traceback.format_exc())]
        log.warning("A stack of %d runs failed; training its runs one by one", len(cfgs))
    else:
        if wants_audit(cfgs, audit):
            try:
                audit_stack(cfgs, results)
            except Exception as err:  # the runs trained: their results are kept, unaudited
                log.warning("The audit of a stack could not run: %s", _reason(err))
                for result in results:
                    result.tags.update({AUDIT_TAG: "skipped", f"{AUDIT_TAG}_detail": _reason(err)})
        return results
    finally:
        if sender is not None:
            sender.close()
    results = []
    for cfg in cfgs:
        try:
            [result] = fit_members([cfg])
            result.tags["lossbench.trained_alone"] = "true"  # not as its stack_id says
        except Exception:
            result = RunResult.failed(traceback.format_exc())
        results.append(result)
    return results


class StackRunner:
    """Trains stacks on an executor and records each run as its stack starts and ends; the
    only MLflow writer of a sweep run by lossbench's launcher."""

    def __init__(
        self,
        sweep_dir: str | Path,
        on_result: Callable[[int, RunResult], None],
        audit: str = "auto",
    ) -> None:
        self.sweep_dir = sweep_dir
        self.on_result = on_result
        self.audit = audit
        self.audits: Counter[str] = Counter()  # stacks audited: passed, failed, skipped
        self.audit_failures: list[str] = []  # what failed, for the sweep's last message
        self.trackers: dict[tuple[Any, ...], Tracker | None] = {}
        self.sweeps: dict[str, SweepInfo] = {}
        self.done = 0
        self.statuses: Counter[str] = Counter()
        self.lock = threading.Lock()  # one thread at a time writes: this one or live curves'
        self.live: LiveCurves | None = None

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
            return
        sweep = self._sweep(tracker)
        with self.lock:
            run_ids = list(tracker.start_runs(stack.specs, stack.facts, sweep))
            stack.run_ids = list(run_ids)
            if self.live is not None and tracker.flush_every_s is not None:
                self.live.add(id(stack), tracker, run_ids)

    def _record(self, stack: Stack, results: Sequence[RunResult]) -> None:
        tracker = self.tracker(stack.specs[0])
        if tracker is not None:
            with self.lock:  # what live curves wrote of the runs is not written again
                written = self.live.remove(id(stack)) if self.live is not None else None
                tracker.finish_runs([r for r in stack.run_ids if r], results, written)
        self.statuses.update(r.outcome for r in results)

    def _open_live(self, stacks: Sequence[Stack], executor: Executor) -> None:
        """Start live curves if a stack's tracking config asks for them (flush_every_s)."""
        intervals = [
            tracker.flush_every_s
            for stack in stacks
            if (tracker := self.tracker(stack.specs[0])) is not None
            and tracker.flush_every_s is not None
        ]
        if intervals:
            host = getattr(executor, "driver_host", "127.0.0.1")
            self.live = LiveCurves(host, min(intervals), self.lock)

    def _finish(self, stack: Stack, results: Sequence[RunResult], total: int, t0: float) -> None:
        self._record(stack, results)
        outcome = results[0].tags.get(AUDIT_TAG) if results else None
        if outcome is not None:
            self.audits[outcome] += 1
        if outcome == "failed":
            tags = results[0].tags
            member = int(tags[f"{AUDIT_TAG}_member"].split()[0])
            run_id = stack.run_ids[member] if stack.run_ids else None
            message = (
                f"stack {stack.label()}: member {tags[f'{AUDIT_TAG}_member']}"
                f"{f', run {run_id}' if run_id else ''}: {tags[f'{AUDIT_TAG}_detail']}"
            )
            self.audit_failures.append(message)
            log.error("AUDIT FAILED: %s", message)
        for job, result in zip(stack.jobs, results, strict=True):
            self.on_result(job, result)
        # What handing the jobs over kept (their JobReturns) lives as long as the sweep: the
        # garbage it made is collected once, the rest is frozen, out of the collections' walks
        # (which otherwise grow with every stack recorded: 15% of this process's time).
        gc.collect()
        gc.freeze()
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
        starts the next stack at once, while this process records the finished one. A stack
        whose task is lost (its future raises: a worker died, a job was preempted) is
        submitted again ``executor.retries`` times (none locally), then its runs are FAILED
        with the reason; retried runs get the tag ``lossbench.attempts``. On Ctrl+C or
        SIGTERM, the runs of the stacks in flight are recorded KILLED.

        While stacks train, their workers send the rows of each epoch, and the runs' metrics
        are written every ``tracking.flush_every_s`` seconds (see :mod:`lossbench.sweep.live`).
        """
        total = sum(len(s.specs) for s in stacks)
        pending = deque(stacks)
        running: dict[Future, Stack] = {}
        in_flight = n_workers + 1 if n_workers > 1 else 1
        retries = getattr(executor, "retries", 0)
        t0 = time.perf_counter()

        def submit(stack: Stack) -> None:
            stack.attempts += 1
            live = self.live.target(id(stack)) if self.live is not None else None
            cfgs = [s.cfg for s in stack.specs]
            running[executor.submit(train_stack, cfgs, live, self.audit)] = stack

        self._open_live(stacks, executor)
        try:
            while pending or running:
                while pending and len(running) < in_flight:
                    stack = pending.popleft()
                    self._start(stack)
                    submit(stack)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    stack = running.pop(future)
                    try:
                        results = future.result()
                    except Exception as err:  # its worker died, or its task or job was lost
                        if stack.attempts <= retries:
                            log.warning(
                                "A stack of %d runs was lost (%s); submitting it again",
                                len(stack.specs),
                                _reason(err),
                            )
                            submit(stack)
                            continue
                        error = traceback.format_exc()
                        results = [RunResult.failed(error) for _ in stack.specs]
                    if stack.attempts > 1:
                        for result in results:
                            result.tags["lossbench.attempts"] = str(stack.attempts)
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
        finally:
            if self.live is not None:
                self.live.close()


def _reason(err: BaseException) -> str:
    """An exception's first line, with its type."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def run_sweep(
    specs: Sequence[RunSpec],
    facts: Sequence[Mapping[str, Any]],
    sweep_dir: str | Path,
    executor: Executor,
    n_workers: int,
    on_result: Callable[[int, RunResult], None],
    stack: bool = True,
    max_members: int = MAX_MEMBERS,
    stack_by: str = STACK_BY_DEFAULT,
    alone: Collection[int] = (),
    on_plan: Callable[[SweepPlan], None] | None = None,
    audit: str = "auto",
) -> SweepPlan:
    """Run checked jobs (``facts``: see :func:`check_all`) and record them in their stores.

    - A job whose config already has a completed run in its store (see
      :meth:`StackRunner.skip_completed`) is not trained: the sweep adopts that run.
    - Jobs with the same config and store train once; each gets the result.
    - The rest train in stacks (``stack=False``: one run per fit) of at most ``max_members``,
      grouped by ``stack_by`` (one of :data:`lossbench.sweep.stacking.STACK_BY`) and split so that
      the ``n_workers`` workers stay busy to the end (:func:`plan_stacks`).
    - Jobs in ``alone`` train in fits of their own (e.g. for their time per run), and a
      completed run that was trained in a stack does not count as done for them.

    ``on_result(job, result)`` is called for every job: at once for those already done, as
    its stack ends for the others. ``on_plan`` sees the plan before anything trains. ``audit``:
    which stacks check one member against its plain model (:mod:`lossbench.sweep.audit`); the plan
    returned says which failed.
    """
    copies: dict[int, list[int]] = {}

    def deliver(job: int, result: RunResult) -> None:
        on_result(job, result)
        for other in copies.get(job, []):
            on_result(other, result)

    wants_audit([], audit)  # a bad mode fails before anything trains
    runner = StackRunner(sweep_dir, deliver, audit)
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
    stacks = plan_stacks(todo, specs, facts, stack, max_members, n_workers, stack_by, alone)
    plan = SweepPlan(done, copies, stacks, max(1, min(n_workers, len(stacks))))
    if on_plan is not None:
        on_plan(plan)
    runner.adopt(done, specs)
    for job, record in done.items():
        on_result(job, record.result())
    # What exists now (imported modules, composed configs) lives as long as the sweep: the
    # collections while this process records runs need not walk it again and again.
    gc.freeze()
    runner.run(stacks, executor, plan.n_workers)
    plan.statuses = runner.statuses
    plan.audits, plan.audit_failures = runner.audits, runner.audit_failures
    return plan
