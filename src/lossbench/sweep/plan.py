"""Planning a sweep: which runs train together as one stacked fit (:func:`plan_stacks`), sized
so that every worker stays busy to the end, and what the sweep will do (:class:`SweepPlan`).

Light: no torch, Lightning or MLflow (the sweep's main process plans).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lossbench.config.spec import RunSpec
from lossbench.sweep.checking import MEMBER_SAFE_FACT
from lossbench.sweep.stacking import STACK_BY, stack_key
from lossbench.tracking.records import RunRecord

MAX_MEMBERS = 64  # default: at most this many runs per stack (hydra.launcher.max_members)
STACK_BY_DEFAULT = STACK_BY[0]  # "recipe" (hydra.launcher.stack_by)
# A training step's fixed cost (Lightning's hooks, the optimizer call, slicing the batch) in
# members' work: a step of a stack of m members costs about as much as m + 16 members' share.
# Measured here on the standard workload's model (MLP 2x64, batch 64, one thread, a busy
# machine): fits of 1, 20 and 64 members took 1.0, 1.8 and 3.5 s over 500 steps (a ratio of
# 24) and 0.39, 0.84 and 2.47 s over 250 (11). It only decides whether splitting a group once
# more pays; 20 runs -> 2 x 10 and 300 -> 6 x 50 on two workers hold for any value.
STEP_COST_IN_MEMBERS = 16


@dataclass
class Stack:
    """Runs that train together as members of one stacked model (one Lightning fit)."""

    jobs: list[int]  # indices into the sweep's job list
    specs: list[RunSpec]
    facts: dict[str, Any]  # of their data: SplitData.summary()
    run_ids: list[str | None] = field(default_factory=list)
    started: float = 0.0
    attempts: int = 0  # times submitted: more than once when its task was lost

    def label(self) -> str:
        """A short description for progress lines."""

        def values(group: str) -> str:
            return ",".join(sorted({s.choices.get(group, "?") for s in self.specs}))

        text = "-".join(values(g) for g in ("dataset", "optimizer", "scheduler"))
        seeds = ",".join(map(str, sorted({s.seed for s in self.specs})))
        return f"{text} loss={values('loss')} seeds={seeds}"


def stack_cost(spec: RunSpec, facts: Mapping[str, Any], members: int) -> float:
    """A stack's rough cost, in members' steps: epochs x steps per epoch x (the fixed cost of a
    step, :data:`STEP_COST_IN_MEMBERS`, + one per member). Rows per step are left out: members
    of one stack share them, and the sweeps this plans rarely mix batch sizes."""
    cfg = spec.cfg
    n_train = max(1, int(facts["n_train"]))
    batch = n_train if cfg["batch_size"] == "full" else min(int(cfg["batch_size"]), n_train)
    steps = math.ceil(n_train / batch) * int(cfg["trainer"]["max_epochs"])
    return steps * (STEP_COST_IN_MEMBERS + members)


def makespan(costs: Sequence[float], n_workers: int) -> float:
    """The time until the last of ``n_workers`` workers is done, when each takes the next task,
    costliest first, as it finishes the previous one."""
    loads = [0.0] * max(1, n_workers)
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(loads, loads[0] + cost)
    return max(loads)


def _split(jobs: Sequence[int], parts: int) -> list[list[int]]:
    """``jobs`` in ``parts`` runs of consecutive jobs, their sizes differing by at most one."""
    size, extra = divmod(len(jobs), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        chunks.append(list(jobs[start:end]))
        start = end
    return chunks


def plan_stacks(
    jobs: Sequence[int],
    specs: Sequence[RunSpec],
    facts: Sequence[Mapping[str, Any]],
    stack: bool,
    max_members: int,
    n_workers: int = 1,
    by: str = STACK_BY_DEFAULT,
    alone: Collection[int] = (),
) -> list[Stack]:
    """Group the given jobs' runs into stacks for ``n_workers`` workers, costliest first.

    Runs with the same :func:`lossbench.sweep.stacking.stack_key` (``by``) form a group; a run that
    must train alone, a job in ``alone`` and, with ``stack=False``, every run is a group of its
    own. Each group is split into stacks of consecutive jobs whose sizes differ by at most one:
    first into as few as ``max_members`` allows; then, as long as that shortens the estimated
    time of the whole sweep on the workers (:func:`makespan` of the :func:`stack_cost` of every
    stack), the group holding the costliest stack is split into one stack more. So 20 runs on
    2 workers train as 2 stacks of 10, and 300 as 6 stacks of 50, not 64+64+64+64+44; many
    groups that already keep the workers busy are left whole. The workers take the stacks in
    the returned order; each job still gets its own result.
    """
    groups: list[list[int]] = []
    keyed: dict[str, list[int]] = {}
    for job in jobs:
        safe = bool(facts[job].get(MEMBER_SAFE_FACT))
        key = stack_key(specs[job], by, safe) if stack and job not in alone else None
        if key is None:
            groups.append([job])
        elif key in keyed:
            keyed[key].append(job)
        else:
            keyed[key] = [job]
            groups.append(keyed[key])
    parts = [math.ceil(len(group) / max_members) for group in groups]

    def largest(g: int) -> float:  # the cost of group g's largest stack
        return stack_cost(
            specs[groups[g][0]], facts[groups[g][0]], math.ceil(len(groups[g]) / parts[g])
        )

    def costs() -> list[float]:
        return [
            stack_cost(specs[group[0]], facts[group[0]], len(chunk))
            for group, k in zip(groups, parts, strict=True)
            for chunk in _split(group, k)
        ]

    best = makespan(costs(), n_workers)
    while n_workers > 1:
        splittable = [g for g in range(len(groups)) if parts[g] < len(groups[g])]
        if not splittable:
            break
        g = max(splittable, key=largest)
        parts[g] += 1
        estimate = makespan(costs(), n_workers)
        if estimate >= best:
            parts[g] -= 1
            break
        best = estimate

    stacks = [
        Stack(chunk, [specs[j] for j in chunk], dict(facts[chunk[0]]))
        for group, k in zip(groups, parts, strict=True)
        for chunk in _split(group, k)
    ]
    # costliest first; sorted() is stable, so equal stacks keep the sweep's order
    return sorted(stacks, key=lambda s: -stack_cost(s.specs[0], s.facts, len(s.specs)))


@dataclass
class SweepPlan:
    """What :func:`run_sweep` does with a sweep's jobs (indices into its job list)."""

    done: dict[int, RunRecord]  # already completed in the store: adopted, not trained
    copies: dict[int, list[int]]  # a job that trains -> later jobs with its config: its result
    stacks: list[Stack]  # the jobs that train
    n_workers: int
    statuses: Counter[str] = field(default_factory=Counter)  # outcomes of the runs trained
    audits: Counter[str] = field(default_factory=Counter)  # stacks audited, by outcome
    audit_failures: list[str] = field(default_factory=list)  # what failed, stack by stack

    @property
    def trained(self) -> int:
        """How many runs train."""
        return sum(len(stack.jobs) for stack in self.stacks)

    @property
    def shared(self) -> int:
        """How many jobs take the result of another job with the same config."""
        return sum(len(jobs) for jobs in self.copies.values())
