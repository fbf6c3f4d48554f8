"""Planning a sweep's stacks: which runs stack together (``hydra.launcher.stack_by``), and how
groups are split so that every worker stays busy to the end. Pure planning: nothing trains."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import Executor, Future
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode

from lossbench.config.checks import check_run
from lossbench.config.spec import CONF_DIR, RunSpec
from lossbench.results import RunResult
from lossbench.sweep.jobs import compose_jobs
from lossbench.sweep.plan import MAX_MEMBERS, plan_stacks, stack_cost
from lossbench.sweep.run import run_sweep


def compose(
    jobs: Sequence[Sequence[str]], base: Sequence[str] = ("experiment=bench",)
) -> list[RunSpec]:
    """The run specs of a sweep's jobs, composed as lossbench's launcher composes them."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", list(base), run_mode=RunMode.MULTIRUN)
        composed = compose_jobs(loader, master, [list(job) for job in jobs], initial_job_idx=0)
    GlobalHydra.instance().clear()
    return [job.spec for job in composed]


def facts_of(specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """The checked facts of each run's data (runs of one dataset share them)."""
    facts: dict[str, dict[str, Any]] = {}
    out = []
    for spec in specs:
        key = repr(spec.cfg["dataset"])
        if key not in facts:
            facts[key] = check_run(spec).summary()
        out.append(facts[key])
    return out


def plan(specs: Sequence[RunSpec], n_workers: int, **options: Any) -> list[list[int]]:
    """The stacks planned for all jobs, as lists of job indices, in the order workers take them."""
    options = {"stack": True, "max_members": MAX_MEMBERS, **options}
    stacks = plan_stacks(range(len(specs)), specs, facts_of(specs), n_workers=n_workers, **options)
    return [stack.jobs for stack in stacks]


def assert_each_job_once(stacks: list[list[int]], n_jobs: int) -> None:
    assert sorted(itertools.chain(*stacks)) == list(range(n_jobs))


SEEDS_300 = [[f"seed={seed}"] for seed in range(300)]
EARLY_STOPPING = "{_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: val/loss}"


def test_twenty_runs_on_two_workers_train_as_two_stacks_of_ten() -> None:
    """Before, 20 runs were one stack on one worker while the other idled."""
    specs = compose([[f"seed={seed}"] for seed in range(20)])
    assert plan(specs, n_workers=2) == [list(range(10)), list(range(10, 20))]
    assert plan(specs, n_workers=1) == [list(range(20))]  # one worker: one fit is cheapest


@pytest.mark.parametrize(("n_workers", "max_members"), [(2, 64), (4, 64), (2, 16), (3, 64)])
def test_one_big_group_is_split_into_equal_stacks_the_workers_share_evenly(
    n_workers: int, max_members: int
) -> None:
    """300 runs were 64+64+64+64+44: five stacks, so one worker trained three and the other two."""
    specs = compose(SEEDS_300)
    stacks = plan(specs, n_workers=n_workers, max_members=max_members)
    assert_each_job_once(stacks, 300)
    sizes = [len(s) for s in stacks]
    assert max(sizes) <= max_members
    assert max(sizes) - min(sizes) <= 1
    assert len(stacks) % n_workers == 0


def test_groups_that_already_keep_the_workers_busy_are_left_whole() -> None:
    """60 groups of 5 (seed_loss grouping of a 300-run lr sweep): splitting would only add fits."""
    jobs = [[f"optimizer.lr={lr}", f"seed={seed}"] for lr in range(1, 61) for seed in range(5)]
    specs = compose(jobs)
    stacks = plan(specs, n_workers=2, by="seed_loss")
    assert sorted(stacks) == [list(range(i, i + 5)) for i in range(0, 300, 5)]


def test_recipe_stacks_runs_differing_in_optimizer_lr_and_schedule_seed_loss_does_not() -> None:
    jobs = [
        [f"optimizer={opt}", f"optimizer.lr={lr}", f"scheduler={sched}", f"seed={seed}"]
        for opt, lr, sched, seed in itertools.product(
            ["sgd", "adam"], [0.01, 0.1], ["constant", "cosine"], [0, 1]
        )
    ]
    specs = compose(jobs)
    assert plan(specs, n_workers=1, by="recipe") == [list(range(16))]
    by_seed_loss = plan(specs, n_workers=1, by="seed_loss")
    assert sorted(by_seed_loss) == [[i, i + 1] for i in range(0, 16, 2)]  # the seeds only


def test_runs_that_must_train_alone_stay_alone() -> None:
    jobs = [
        *([f"seed={seed}"] for seed in range(6)),
        ["scheduler=reduce_on_plateau", "seed=0"],  # reads the fit's metric
        ["scheduler=reduce_on_plateau", "seed=1"],
        ["+trainer.gradient_clip_val=1.0", "seed=0"],  # global norm over all members
        [f"+trainer.callbacks=[{EARLY_STOPPING}]", "seed=0"],  # would stop every member at once
        [f"+trainer.callbacks=[{EARLY_STOPPING}]", "seed=1"],
    ]
    specs = compose(jobs)
    for n_workers in (1, 2):
        stacks = plan(specs, n_workers=n_workers, alone={5})
        assert_each_job_once(stacks, len(jobs))
        for job in (5, 6, 7, 8, 9, 10):
            assert [job] in stacks, (n_workers, stacks)
    assert plan(specs, n_workers=2, stack=False) == [[job] for job in range(len(jobs))]


def test_stacks_are_handed_out_costliest_first() -> None:
    """A long group's stacks go to the workers before a short group's, so no worker is left
    with a long stack at the end while the other idles."""
    short = [["trainer.max_epochs=5", f"seed={seed}"] for seed in range(30)]
    long = [["trainer.max_epochs=50", f"seed={seed}"] for seed in range(30)]
    specs = compose(short + long)
    facts = facts_of(specs)
    stacks = plan_stacks(range(60), specs, facts, True, MAX_MEMBERS, n_workers=2)
    costs = [stack_cost(s.specs[0], s.facts, len(s.jobs)) for s in stacks]
    assert costs == sorted(costs, reverse=True)
    assert min(stacks[0].jobs) >= 30  # the 50-epoch runs first
    assert_each_job_once([s.jobs for s in stacks], 60)


def test_a_round_of_optuna_trials_is_one_stack_by_recipe() -> None:
    """An Optuna round is one launcher batch; its trials differ in optimizer and lr only, so
    they stack together (by seed and loss, each trial would train alone)."""
    trials = [
        ["optimizer=sgd", "optimizer.lr=0.0123"],
        ["optimizer=sgd", "optimizer.lr=0.51"],
        ["optimizer=adam", "optimizer.lr=0.0009"],
        ["optimizer=adam", "optimizer.lr=0.031"],
    ]
    specs = compose(trials, base=("experiment=hpo",))
    assert plan(specs, n_workers=1) == [[0, 1, 2, 3]]
    assert sorted(plan(specs, n_workers=1, by="seed_loss")) == [[0], [1], [2], [3]]


class _FakeExecutor(Executor):
    """Runs no training: each member's result names its config's seed."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        cfgs = args[0]
        future: Future = Future()
        future.set_result([RunResult(final={"seed": float(cfg["seed"])}) for cfg in cfgs])
        return future


def test_every_job_gets_its_own_result_however_its_stack_is_split_and_ordered() -> None:
    seeds = [*range(25), 3]  # the last job repeats job 3's config: it trains once, both get it
    specs = compose([["tracking=none", f"seed={seed}"] for seed in seeds])
    results: dict[int, RunResult] = {}
    plan_ = run_sweep(specs, facts_of(specs), "unused", _FakeExecutor(), 2, results.__setitem__)
    assert len(plan_.stacks) == 2 and plan_.n_workers == 2
    assert sorted(results) == list(range(len(seeds)))
    assert [results[job].final["seed"] for job in range(len(seeds))] == seeds


class _LosingExecutor(_FakeExecutor):
    """Loses the first ``losses`` tasks submitted, as a remote executor loses a dead worker's."""

    def __init__(self, losses: int, retries: int) -> None:
        self.losses, self.retries, self.submitted = losses, retries, 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        self.submitted += 1
        if self.submitted > self.losses:
            return super().submit(fn, *args, **kwargs)
        future: Future = Future()
        future.set_exception(ConnectionError("worker 1234 died"))
        return future


@pytest.mark.parametrize(
    ("losses", "retries", "outcomes", "attempts"),
    [
        (1, 1, {"finished"}, "2"),  # lost once, retried once: trained
        (2, 1, {"failed"}, "2"),  # lost twice: FAILED with the reason, the sweep goes on
        (1, 0, {"failed"}, None),  # the local pool does not retry
    ],
)
def test_a_lost_stack_is_retried_as_often_as_its_executor_says(
    losses: int, retries: int, outcomes: set[str], attempts: str | None
) -> None:
    specs = compose([["tracking=none", f"seed={seed}"] for seed in range(4)])
    results: dict[int, RunResult] = {}
    executor = _LosingExecutor(losses, retries)
    plan_ = run_sweep(specs, facts_of(specs), "unused", executor, 1, results.__setitem__)
    assert len(plan_.stacks) == 1 and executor.submitted == min(losses, retries + 1) + (
        losses <= retries
    )
    assert {r.outcome for r in results.values()} == outcomes
    assert {r.tags.get("lossbench.attempts") for r in results.values()} == {attempts}
    if "failed" in outcomes:
        assert all("ConnectionError: worker 1234 died" in r.error for r in results.values())
