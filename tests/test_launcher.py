"""lossbench's launcher: fast composition gives Hydra's configs; stacks are planned correctly;
the pipeline it shares with the claims resumes and trains each config once."""

from __future__ import annotations

import copy
import itertools
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import initialize_config_dir
from hydra.conf import HydraConf
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from conftest import FAST
from lossbench.config.spec import CONF_DIR, ConfigError, RunSpec
from lossbench.identity import config_hash
from lossbench.results import RunResult
from lossbench.sweep.checking import check_specs
from lossbench.sweep.executors import make_executor
from lossbench.sweep.jobs import compose_jobs
from lossbench.sweep.plan import plan_stacks
from lossbench.sweep.run import run_sweep

JOBS = [
    [f"loss={loss}", f"optimizer={opt}", f"seed={seed}", "trainer.max_epochs=7"]
    for loss, opt, seed in itertools.product(["mse", "focal"], ["sgd", "gd"], [0, 1])
] + [
    ["scheduler=reduce_on_plateau", "seed=0"],
    ["scheduler=reduce_on_plateau", "seed=1"],
    ["model.hidden=[8,4]", "dataset.source={}", "optimizer.lr=1e-3", "seed=2"],
    ["penalty={kind: l2}", "batch_size=full", "seed=3"],
]


def compose_both(
    master_overrides: list[str], jobs: list[list[str]], conf_dir: Path = CONF_DIR
) -> tuple[list, list]:
    """Each job composed fast (compose_jobs) and by Hydra (load_sweep_config)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        name = "train"
        master = loader.load_configuration(name, master_overrides, run_mode=RunMode.MULTIRUN)
        fast = compose_jobs(loader, master, jobs, initial_job_idx=0)
        slow = [loader.load_sweep_config(master, job) for job in jobs]
        for job, cfg in zip(fast, slow, strict=True):  # resolving needs Hydra's config set
            HydraConfig.instance().set_config(cfg)
            expected = RunSpec.from_hydra_config(cfg)
            expected.job_num = job.idx
            job.expected = expected
    GlobalHydra.instance().clear()
    return fast, slow


def assert_same_configs(fast: list, slow: list, jobs: list[list[str]]) -> None:
    """The same config files would be written (.hydra/config.yaml and hydra.yaml: keys in the
    same order, values exactly), and the same run spec is derived, for every job."""
    for i, (job, cfg) in enumerate(zip(fast, slow, strict=True)):
        texts = []
        for config in (job.config(), cfg):
            container = OmegaConf.to_container(config, resolve=False)
            container["hydra"]["job"].pop("id", None), container["hydra"]["job"].pop("num", None)
            container["hydra"]["runtime"].pop("output_dir", None)
            texts.append(OmegaConf.to_yaml(container))
        assert texts[0] == texts[1], jobs[i]
        assert job.config().hydra.job.num == i
        flags = [  # what Hydra's set_config and the task function see (set_config, which
            # compose_both called on Hydra's, makes the hydra node read-only)
            (OmegaConf.get_type(c, "hydra"), OmegaConf.is_struct(c), OmegaConf.is_readonly(c),
             OmegaConf.is_struct(c.hydra))
            for c in (job.config(), cfg)
        ]  # fmt: skip
        assert flags[0] == flags[1] and flags[0][0] is HydraConf, flags
        assert job.spec == job.expected, jobs[i]


@pytest.fixture
def composed():  # noqa: ANN201
    return compose_both(["dataset=iris"], JOBS)


def test_fast_composition_equals_hydras(composed) -> None:  # noqa: ANN001
    assert_same_configs(*composed, JOBS)


def test_interpolated_values_resolve_as_in_hydras_configs() -> None:
    """Values that are interpolations (the lr workload's ``${usual_lr_times:...}``, resolved
    on each job's task config) give the run specs of Hydra's configs; one that reads the job's
    own hydra node is resolved on the job's full config."""
    fast, slow = compose_both(["experiment=bench_lr"], LR_JOBS)
    assert all(job._config is None for job in fast)  # no full config was built for them
    assert_same_configs(fast, slow, LR_JOBS)
    assert [job.spec.cfg["optimizer"]["lr"] for job in fast] == [0.0003, 0.3]
    reads_hydra = [["optimizer=adamw", "seed=1", "experiment=bench_lr"],
                   ["optimizer=adamw", "seed=${hydra:job.num}", "experiment=bench_lr"]]  # fmt: skip
    fast, _ = compose_both(["experiment=bench_lr"], reads_hydra)
    assert fast[1].spec.cfg["seed"] == 1  # its job number, as Hydra's launcher numbers it


def test_combinations_assembled_from_single_group_compositions_equal_hydras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A grid over groups, one of whose options is `# @package _global_` (gd also sets
    batch_size), under an experiment preset that overrides group values (bench: the dataset's
    and the model's), with value overrides: every job's config is Hydra's, although only the
    base and its single-group changes are composed by Hydra."""
    grid = itertools.product(
        ["cross_entropy", "mse"], ["sgd", "gd", "adam"], ["constant", "cosine"]
    )
    jobs = [
        [f"loss={loss}", f"optimizer={optimizer}", f"scheduler={scheduler}", f"seed={seed}",
         "optimizer.lr=0.05", "experiment=bench"]
        for (loss, optimizer, scheduler), seed in zip(grid, itertools.cycle([0, 1]))
    ]  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="lossbench.sweep.jobs"):
        fast, slow = compose_both(["experiment=bench"], jobs)
    assert_same_configs(fast, slow, jobs)
    assert "12 jobs: 12 configs, 5 composed by Hydra" in caplog.text  # 1 + 1 + 2 + 1
    gd = next(job for job in fast if "optimizer=gd" in job.spec.overrides)
    assert gd.spec.cfg["optimizer"]["momentum"] == 0.0 and gd.spec.cfg["optimizer"]["lr"] == 0.05
    assert gd.spec.cfg["batch_size"] == 64  # the preset, merged last, overrides gd's "full"


def test_options_writing_the_same_keys_are_composed_by_hydra(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Group b's base option hides what a1 writes (x.y); b1 writes something else. Taking
    each group's changes from the base would give a1+b1 a's old x.y: such combinations are
    composed by Hydra."""
    files = {
        "train.yaml": "defaults:\n  - _self_\n  - a: a0\n  - b: b0\nx:\n  y: 0\nw: 0\n",
        "a/a0.yaml": "# @package _global_\nx:\n  y: 1\n",
        "a/a1.yaml": "# @package _global_\nx:\n  y: 2\n",
        "b/b0.yaml": "# @package _global_\nx:\n  y: 5\n",
        "b/b1.yaml": "# @package _global_\nw: 1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    jobs = [[f"a={a}", f"b={b}"] for a, b in itertools.product(["a0", "a1"], ["b0", "b1"])]
    with caplog.at_level(logging.DEBUG, logger="lossbench.sweep.jobs"):
        fast, slow = compose_both([], jobs, tmp_path)
    assert_same_configs(fast, slow, jobs)
    assert fast[3].spec.cfg == {"x": {"y": 2}, "w": 1}
    assert "4 jobs: 4 configs, 4 composed by Hydra" in caplog.text


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


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["optimizer.momentum=-1"], "optimizer=sgd: .*momentum"),
        (
            ["scheduler=step", "scheduler.step_size=0"],
            "scheduler=step: scheduler.step_size=0 must be > 0",
        ),
        (["loss=focal", "loss.gamma=-1"], "loss=focal: focal gamma must be >= 0"),
        (["trainer.accelerator=tpu"], "trainer=default: trainer.accelerator='tpu' cannot be"),
    ],
)
def test_a_sweeps_checks_find_a_bad_value_of_one_run(
    make_spec, bad: list[str], message: str
) -> None:  # noqa: ANN001
    """A sweep's runs share their checked components (data, model, trainer, ...): a value only
    the last run has is still found, naming that job, before anything trains."""
    jobs = [[f"seed={seed}"] for seed in range(3)] + [bad]
    specs = [make_spec([*FAST, "optimizer=sgd", *job]) for job in jobs]
    for num, spec in enumerate(specs):
        spec.job_num = num
    check_specs(specs[:3])
    with pytest.raises(ConfigError, match=rf"job #3 \(.*{bad[-1]}\): {message}"):
        check_specs(specs)


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


class _RecordingCallbacks:
    """Stands in for Hydra's callbacks: records each call's job config and JobReturn."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def on_job_start(self, config: Any, task_function: Any) -> None:
        self.calls.append(("start", OmegaConf.to_container(config.hydra.job)))

    def on_job_end(self, config: Any, job_return: Any) -> None:
        self.calls.append(("end", job_return.status))


def test_handing_over_a_job_gives_what_hydras_run_job_gives(composed, tmp_path: Path) -> None:  # noqa: ANN001
    """The launcher's lean hand-over writes the same .hydra/ files (as YAML read back), calls
    the same callbacks and returns the same JobReturn as Hydra's run_job, for passing and
    failing jobs."""
    from hydra.core.utils import JobStatus, run_job
    from hydra.types import HydraContext

    from hydra_plugins.lossbench_plugins.job_return import hand_over

    fast, _ = composed

    def task(cfg: Any) -> Any:
        if cfg.seed == 1:
            raise RuntimeError("run FAILED")
        return {"val/acc": 0.5}

    for i, cfg in enumerate(job.config() for job in fast[:4]):
        outs = {}
        for how, fn in (("hydra", run_job), ("lossbench", hand_over)):
            job_cfg = copy.deepcopy(cfg)
            with read_write(job_cfg.hydra), open_dict(job_cfg.hydra):
                job_cfg.hydra.sweep.dir = str(tmp_path / how)
            callbacks = _RecordingCallbacks()
            context = HydraContext(config_loader=None, callbacks=callbacks)  # type: ignore[arg-type]
            ret = fn(
                hydra_context=context, task_function=task, config=job_cfg,
                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
            )  # fmt: skip
            files = {
                p.name: yaml.safe_load(p.read_text().replace(str(tmp_path / how), "<dir>"))
                for p in (tmp_path / how / str(i) / ".hydra").iterdir()
            }
            hydra_cfg = OmegaConf.to_container(ret.hydra_cfg, resolve=False)
            outs[how] = (files, callbacks.calls, ret, hydra_cfg)
        (files, calls, ret, _), (files2, calls2, ret2, _) = outs["hydra"], outs["lossbench"]
        assert set(files) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
        assert files2 == files
        assert calls2 == calls and [c for c, _ in calls] == ["start", "end"]
        assert (
            ret2.status
            == ret.status
            == (JobStatus.FAILED if cfg.seed == 1 else JobStatus.COMPLETED)
        )
        if cfg.seed == 1:
            for r in (ret, ret2):
                with pytest.raises(RuntimeError, match="run FAILED"):
                    r.return_value  # noqa: B018 (a failed job's return value raises its error)
        else:
            assert ret2.return_value == ret.return_value == {"val/acc": 0.5}
        assert ret2.cfg == ret.cfg and ret2.overrides == ret.overrides
        assert ret2.task_name == ret.task_name and ret2.working_dir == ret.working_dir
        assert OmegaConf.is_struct(ret2.cfg) == OmegaConf.is_struct(ret.cfg)
        dirs = {"sweep": None, "runtime": None}
        for _, _, _, hydra_cfg in outs.values():
            dirs["sweep"] = hydra_cfg["hydra"]["sweep"].pop("dir")
            dirs["runtime"] = hydra_cfg["hydra"]["runtime"].pop("output_dir")
            assert dirs["runtime"].endswith(f"/{i}")
        assert outs["hydra"][3] == outs["lossbench"][3]


class _NoCallbacks:
    def on_job_start(self, config: Any, task_function: Any) -> None:
        pass

    def on_job_end(self, config: Any, job_return: Any) -> None:
        pass


class _JobEndCallback(Callback):
    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        pass


LR_JOBS = [  # values that stay interpolations in config.yaml (the lr workload's)
    ["optimizer=adam", "optimizer.lr=${usual_lr_times:0.3}", "seed=0", "experiment=bench_lr"],
    [
        "optimizer=sgd",
        "scheduler=cosine",
        "optimizer.lr=${usual_lr_times:3}",
        "seed=1",
        "experiment=bench_lr",
    ],
]


@pytest.mark.parametrize(
    "master, jobs", [(["dataset=iris"], JOBS), (["experiment=bench_lr"], LR_JOBS)]
)
def test_plain_hand_over_gives_what_the_full_hand_over_gives(
    master: list[str], jobs: list[list[str]], tmp_path: Path
) -> None:
    """Without job callbacks the launcher hands jobs over from plain containers: the same
    .hydra/ files (byte for byte), output dirs and JobReturn (its configs built when read) as
    the hand-over on each job's full config, for passing and failing jobs."""
    from hydra.core.utils import JobStatus
    from hydra.types import HydraContext

    from hydra_plugins.lossbench_plugins.job_return import PlainHandOver, hand_over

    sweep = tmp_path / "sweep"
    fast, _ = compose_both([*master, f"hydra.sweep.dir={sweep}"], jobs)
    context = HydraContext(config_loader=None, callbacks=_NoCallbacks())  # type: ignore[arg-type]
    plain = PlainHandOver()

    def outcome(job: Any) -> dict[str, float]:
        if job.spec.seed == 1:
            raise RuntimeError("run FAILED")
        return {"val/acc": 0.5}

    for job in fast:
        assert plain.applies(job)
        rets, files = [], []
        for how in ("full", "plain"):
            if how == "full":
                ret = hand_over(context, lambda _, job=job: outcome(job), job.config())
                job.release()
            else:
                ret = plain(job, lambda job=job: outcome(job))
            written = sorted(p for p in sweep.rglob("*") if p.is_file())
            files.append({p.relative_to(sweep): p.read_bytes() for p in written})
            rets.append(ret)
            shutil.rmtree(sweep)
        assert set(files[0]) == {Path(str(job.idx), ".hydra", n) for n in
                                 ("config.yaml", "hydra.yaml", "overrides.yaml")}  # fmt: skip
        assert files[1] == files[0]
        config_yaml = files[0][Path(str(job.idx), ".hydra", "config.yaml")]
        interpolated = any("usual_lr_times" in line for line in job.task_lines())
        assert (b"lr: ${usual_lr_times:" in config_yaml) == interpolated  # kept as written
        full, lean = rets
        failed = job.spec.seed == 1
        assert lean.status == full.status == (JobStatus.FAILED if failed else JobStatus.COMPLETED)
        if not failed:
            assert lean.return_value == full.return_value
        for field in ("overrides", "working_dir", "task_name"):
            assert getattr(lean, field) == getattr(full, field), field
        for field in ("cfg", "hydra_cfg"):
            assert OmegaConf.to_container(getattr(lean, field)) == OmegaConf.to_container(
                getattr(full, field)
            ), field
            assert OmegaConf.is_struct(getattr(lean, field)) == OmegaConf.is_struct(
                getattr(full, field)
            )
    fresh = plain(job, lambda: {})  # a field set as on any JobReturn; the others stay built
    fresh.cfg = None
    assert fresh.cfg is None and fresh.hydra_cfg.hydra.job.num == job.idx


def test_plain_hand_over_is_used_only_where_it_gives_the_same(tmp_path: Path) -> None:
    """A sweep subdir named from anything but the job's number, a sweep dir named from the
    job, or a Hydra callback with a job hook, take the hand-over on each job's full config."""
    from hydra_plugins.lossbench_plugins.job_return import PlainHandOver, has_job_hooks

    fast, _ = compose_both(
        ["dataset=iris", "hydra.sweep.subdir=${hydra.job.override_dirname}"], JOBS[:2]
    )
    assert not PlainHandOver().applies(fast[0])
    fast, _ = compose_both(
        ["dataset=iris", "hydra.sweep.dir=out/${hydra.job.override_dirname}"], JOBS[:2]
    )
    assert not PlainHandOver().applies(fast[0])
    fast, _ = compose_both(["dataset=iris", "hydra.sweep.dir=out/${now:%Y}"], JOBS[:2])
    assert PlainHandOver().applies(fast[0])
    ours = {
        "lossbench_sweep": {"_target_": "hydra_plugins.lossbench_plugins.callback.SweepCallback"}
    }
    assert not has_job_hooks(ours) and not has_job_hooks(None)
    assert has_job_hooks({**ours, "user": {"_target_": f"{__name__}._JobEndCallback"}})


def test_equal_numbers_are_one_config(make_spec, store_uri: str, tmp_path) -> None:  # noqa: ANN001
    """optimizer.lr=1 and optimizer.lr=1.0 are one value: one config hash, and the second
    sweep adopts the first's run instead of training it again."""
    base = [*FAST, f"tracking.uri={store_uri}", "tracking.experiment=equal-numbers"]
    one = make_spec([*base, "optimizer=sgd", "optimizer.lr=1"])
    one_point_oh = make_spec([*base, "optimizer=sgd", "optimizer.lr=1.0"])
    assert one.cfg["optimizer"]["lr"] == 1 and isinstance(one.cfg["optimizer"]["lr"], int)
    assert config_hash(one.cfg) == config_hash(one_point_oh.cfg)
    assert config_hash(one.cfg) != config_hash(make_spec([*base, "optimizer.lr='1'"]).cfg)
    results: dict[int, RunResult] = {}
    first = run_sweep([one], check_specs([one]), tmp_path / "a", make_executor(1), 1,
                      results.__setitem__)  # fmt: skip
    assert first.trained == 1
    second = run_sweep([one_point_oh], check_specs([one_point_oh]), tmp_path / "b",
                       make_executor(1), 1, results.__setitem__)  # fmt: skip
    assert second.trained == 0 and list(second.done) == [0]


def test_a_template_that_cannot_be_pickled_is_deep_copied() -> None:
    """Job configs are unpickled copies of their template; a config pickle refuses (a
    structured config class defined in a function) is deep-copied instead, the same config."""
    from dataclasses import dataclass

    from lossbench.sweep.assembly import Template

    @dataclass
    class Local:
        width: int = 64

    base = OmegaConf.create({"hydra": {"runtime": {"choices": {}}}, "model": Local})
    template = Template(base, {"model": {"width": 64}}, {})
    first, second = template.config(), template.config()
    assert first == base and first is not second and OmegaConf.get_type(first, "model") is Local
    first.model.width = 8
    assert second.model.width == 64 and base.model.width == 64
