"""lossbench's launcher: fast composition gives Hydra's configs; stacks are planned correctly."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

from lossbench.config import CONF_DIR, RunSpec
from lossbench.sweep import check_specs, plan_stacks


def launcher_module():  # noqa: ANN201
    path = CONF_DIR.parent / "src" / "hydra_plugins" / "lossbench_plugins" / "launcher.py"
    spec = importlib.util.spec_from_file_location("lossbench_test_launcher", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
        fast = launcher_module().compose_jobs(loader, master, JOBS, initial_job_idx=0)
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
        assert a_task == b_task, JOBS[job]
        assert a.hydra.job.num == job
        # the spec derived without OmegaConf equals the one resolved from Hydra's config
        expected = RunSpec.from_hydra_config(b)
        expected.job_num = job
        assert jobs[job].spec == expected, JOBS[job]


def test_stacks_group_seeds_and_losses_only(composed) -> None:  # noqa: ANN001
    jobs, _ = composed
    specs = [job.spec for job in jobs]
    stacks = plan_stacks(specs, check_specs(specs), stack=True, max_members=64)
    groups = sorted(sorted(s.jobs) for s in stacks)
    # sgd: 2 losses x 2 seeds; gd: the same; reduce_on_plateau runs alone
    assert groups == [[0, 1, 4, 5], [2, 3, 6, 7], [8], [9], [10], [11]]
    small = plan_stacks(specs, check_specs(specs), stack=True, max_members=3)
    assert max(len(s.jobs) for s in small) == 3
    alone = plan_stacks(specs, check_specs(specs), stack=False, max_members=64)
    assert len(alone) == len(specs)
