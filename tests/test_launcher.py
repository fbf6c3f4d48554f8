"""lossbench's launcher: fast composition gives Hydra's configs; stacks are planned correctly;
the pipeline it shares with the claims resumes and trains each config once."""

from __future__ import annotations

import itertools

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import FAST
from lossbench.config import CONF_DIR, RunSpec, config_hash
from lossbench.jobs import compose_jobs
from lossbench.results import RunResult
from lossbench.sweep import check_specs, make_executor, plan_stacks, run_sweep

JOBS = [
    [f"loss={loss}", f"optimizer={opt}", f"seed={seed}", "trainer.max_epochs=7"]
    for loss, opt, seed in itertools.product(["mse", "focal"], ["sgd", "gd"], [0, 1])
] + [
    ["scheduler=reduce_on_plateau", "seed=0"],
    ["scheduler=reduce_on_plateau", "seed=1"],
    ["model.hidden=[8,4]", "dataset.source={}", "optimizer.lr=1e-3", "seed=2"],
    ["penalty={kind: l2}", "batch_size=full", "seed=3"],
]


@pytest.fixture
def composed():  # noqa: ANN201
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", ["dataset=iris"], run_mode=RunMode.MULTIRUN)
        fast = compose_jobs(loader, master, JOBS, initial_job_idx=0)
        slow = [loader.load_sweep_config(master, job) for job in JOBS]
    GlobalHydra.instance().clear()
    return fast, slow


def test_fast_composition_equals_hydras(composed) -> None:  # noqa: ANN001
    jobs, slow = composed
    fast = [job.config() for job in jobs]
    for job, (a, b) in enumerate(zip(fast, slow, strict=True)):
        a_task = OmegaConf.to_container(a, resolve=False)
        b_task = OmegaConf.to_container(b, resolve=False)
        for cfg in (a_task, b_task):
            cfg["hydra"]["job"].pop("id", None), cfg["hydra"]["job"].pop("num", None)
            cfg["hydra"]["runtime"].pop("output_dir", None)
        # exact: values parsed from the same override strings and YAML files, no arithmetic
        assert a_task == b_task, JOBS[job]
        assert a.hydra.job.num == job
        # the spec derived without OmegaConf equals the one resolved from Hydra's config
        expected = RunSpec.from_hydra_config(b)
        expected.job_num = job
        assert jobs[job].spec == expected, JOBS[job]


def test_stacks_group_seeds_and_losses_only(composed) -> None:  # noqa: ANN001
    composed_jobs, _ = composed
    specs = [job.spec for job in composed_jobs]
    jobs = range(len(specs))
    for by in ("seed_loss", "recipe"):
        stacks = plan_stacks(jobs, specs, check_specs(specs), stack=True, max_members=64, by=by)
        groups = sorted(sorted(s.jobs) for s in stacks)
        # sgd: 2 losses x 2 seeds; gd (full batch): the same; reduce_on_plateau runs alone
        assert groups == [[0, 1, 4, 5], [2, 3, 6, 7], [8], [9], [10], [11]], by
    small = plan_stacks(jobs, specs, check_specs(specs), stack=True, max_members=3)
    assert sorted(len(s.jobs) for s in small) == [1, 1, 1, 1, 2, 2, 2, 2]  # 4 -> 2 + 2, not 3 + 1
    alone = plan_stacks(jobs, specs, check_specs(specs), stack=False, max_members=64)
    assert len(alone) == len(specs)


@pytest.mark.parametrize("found", ["1.4.0", "1.3.1", "2.0.0.dev1"])
def test_other_hydra_versions_are_refused_naming_the_supported_range(
    monkeypatch: pytest.MonkeyPatch, found: str
) -> None:
    """lossbench uses Hydra internals checked against 1.3.x only: elsewhere it says so."""
    from lossbench import hydra_private

    monkeypatch.setattr(hydra_private, "version", lambda package: found)
    with pytest.raises(RuntimeError, match=rf"needs hydra-core >=1.3.2,<1.4 .* hydra-core {found}"):
        hydra_private._check_version()


@pytest.mark.slow
def test_run_sweep_trains_each_config_once_and_resumes(make_spec, store_uri: str, tmp_path) -> None:  # noqa: ANN001
    """The pipeline the launcher and the claims share: the same config twice trains once and
    both jobs get its result; a rerun adopts completed runs and hands them over too; a job
    that must train alone does not count a run trained in a stack as done."""
    from lossbench.tracking.records import load_sweep
    from lossbench.tracking.writer import Tracker

    base = [*FAST, f"tracking.uri={store_uri}", "tracking.experiment=run-sweep"]
    specs = [make_spec([*base, f"seed={seed}"]) for seed in (0, 1, 0)]  # job 2 repeats job 0
    facts = check_specs(specs)
    executor = make_executor(1)

    results: dict[int, RunResult] = {}
    plan = run_sweep(specs, facts, tmp_path / "first", executor, 1, results.__setitem__)
    assert (plan.done, plan.copies, [s.jobs for s in plan.stacks]) == ({}, {0: [2]}, [[0, 1]])
    assert sorted(results) == [0, 1, 2] and results[2] is results[0]
    assert plan.statuses == {"finished": 2}
    stored = Tracker(store_uri, "run-sweep").completed_runs()
    assert len(stored) == 2 and {r.tags["lossbench.members"] for r in stored.values()} == {"2"}

    specs.append(make_spec([*base, "seed=1"]))  # job 3: job 1's config, to be trained alone
    results.clear()
    plan = run_sweep(specs, check_specs(specs), tmp_path / "second", executor, 1,
                     results.__setitem__, alone={3})  # fmt: skip
    assert sorted(plan.done) == [0, 1, 2] and [s.jobs for s in plan.stacks] == [[3]]
    assert sorted(results) == [0, 1, 2, 3]
    assert results[0].final == pytest.approx(stored[config_hash(specs[0].cfg)].metrics)
    alone = Tracker(store_uri, "run-sweep").completed_runs()[config_hash(specs[3].cfg)]
    assert alone.tags["lossbench.members"] == "1"
    assert len(load_sweep(store_uri, "run-sweep").runs) == 3  # 2 adopted, 1 trained

    plan = run_sweep(specs, check_specs(specs), tmp_path / "third", executor, 1,
                     results.__setitem__, alone={3})  # fmt: skip
    assert sorted(plan.done) == [0, 1, 2, 3] and plan.trained == 0
