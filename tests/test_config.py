"""Every option of every config group composes and builds; bad choices fail before training."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.types import RunMode
from hydra.utils import instantiate

from conftest import DATASETS, conf_options
from lossbench.config.checks import check_run, losses_of_kind
from lossbench.config.spec import CONF_DIR, GROUPS, ConfigError, RunSpec
from lossbench.hydra_private import BasicSweeper
from lossbench.identity import config_hash
from lossbench.sweep.jobs import compose_jobs
from lossbench.tracking.writer import Tracker

REGRESSION_SETS = {"diabetes", "regression", "friedman1", "linear1", "linear2"}
TINY_SETS = {"xor", "linear1", "linear2"}  # fewer training rows than the default batch of 64


def option_overrides(group: str, option: str) -> list[str]:
    """Overrides selecting one option, with compatible choices for the other groups."""
    overrides = [f"{group}={option}"]
    if group == "dataset" and option in REGRESSION_SETS:
        overrides.append("loss=mse")
    if group == "dataset" and option in TINY_SETS:
        overrides.append("batch_size=full")
    if group == "loss" and option in losses_of_kind("regression"):
        overrides.append("dataset=diabetes")
    return overrides


# dataset=file needs a file of yours: tests/test_datafile.py composes and checks it
CASES = [(g, o) for g in GROUPS for o in conf_options(g) if (g, o) != ("dataset", "file")]


def test_groups_have_the_options_the_articles_need() -> None:
    assert set(conf_options("loss")) >= {
        "mse", "mae", "huber", "smooth_l1", "log_cosh", "bce", "cross_entropy", "focal", "hinge",
        "squared_hinge",
    }  # fmt: skip
    assert set(conf_options("optimizer")) >= {
        "gd", "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "nadam",
    }  # fmt: skip
    assert set(conf_options("scheduler")) >= {
        "constant", "step", "multistep", "multistep_article", "exponential", "cosine",
        "warmup_cosine", "onecycle", "reduce_on_plateau",
    }  # fmt: skip
    assert set(conf_options("model")) == {"mlp", "linear"}
    assert set(conf_options("trainer")) == {"default", "smoke"}
    assert set(conf_options("tracking")) == {"mlflow", "none"}


@pytest.mark.parametrize(("group", "option"), CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_and_builds(make_spec, group: str, option: str) -> None:  # noqa: ANN001
    spec = make_spec(option_overrides(group, option))
    assert spec.choices[group] == option
    data = check_run(spec)  # builds data, model, loss, optimizer and schedule on dummies
    task, n_features, _ = DATASETS[spec.choices["dataset"]]
    assert (data.task, data.n_features) == (task, n_features)
    if group == "trainer":
        trainer = instantiate(spec.cfg["trainer"])
        assert trainer.max_epochs == spec.cfg["trainer"]["max_epochs"]
    if group == "tracking":
        tracker = Tracker.from_config(spec.cfg["tracking"])
        assert (tracker is None) == (option == "none")


def test_gd_trains_on_the_full_batch(make_spec) -> None:  # noqa: ANN001
    assert make_spec(["optimizer=gd"]).cfg["batch_size"] == "full"
    assert make_spec(["optimizer=sgd"]).cfg["batch_size"] == 64


def test_experiment_presets_compose(make_spec) -> None:  # noqa: ANN001
    for name in conf_options("experiment"):
        spec = make_spec([f"experiment={name}"])
        check_run(spec)
        assert spec.cfg["tracking"]["experiment"] == name


def sweep_specs(overrides: list[str]) -> list[RunSpec]:
    """The run specs of every job of a grid sweep, as lossbench's sweeper and launcher make
    them: ``hydra.sweeper.params`` and the command line expanded by Hydra's basic sweeper."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", overrides, run_mode=RunMode.MULTIRUN)
        params = [f"{k}={v}" for k, v in master.hydra.sweeper.params.items()] + overrides
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params)
        [batch] = BasicSweeper.split_arguments(parsed, None)
        jobs = compose_jobs(loader, master, batch, initial_job_idx=0)
    GlobalHydra.instance().clear()
    return [job.spec for job in jobs]


BENCH_LR_GRIDS = {
    "sgd": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
    "momentum": [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1],
    **{name: [3e-05, 0.0001, 0.0003, 0.001, 0.003, 0.01] for name in ("rmsprop", "adam", "adamw")},
}


@pytest.mark.slow  # composes 300 jobs (~10 s)
def test_bench_lr_sweeps_each_optimizer_over_its_own_lr_grid() -> None:
    """300 distinct runs: 5 optimizers x 6 lrs around each one's usual lr x 2 schedules x 5
    seeds, on the standard workload's data and model; each run's config holds its lr."""
    specs = sweep_specs(["experiment=bench_lr"])
    assert len(specs) == 300
    assert len({config_hash(s.cfg) for s in specs}) == 300
    runs: dict[str, dict[float, set[tuple[str, int]]]] = {}
    for spec in specs:
        lr = spec.cfg["optimizer"]["lr"]
        assert isinstance(lr, float)
        by_lr = runs.setdefault(spec.choices["optimizer"], {})
        by_lr.setdefault(lr, set()).add((spec.choices["scheduler"], spec.seed))
    assert {name: sorted(by_lr) for name, by_lr in runs.items()} == BENCH_LR_GRIDS
    every = {(sched, seed) for sched in ("constant", "cosine") for seed in range(5)}
    assert all(done == every for by_lr in runs.values() for done in by_lr.values())
    cfg = specs[0].cfg
    assert (
        cfg["dataset"]["source"]["n_samples"] == 2000 and cfg["dataset"]["source"]["noise"] == 0.2
    )
    assert (cfg["model"]["hidden"], cfg["model"]["activation"]) == ([64, 64], "relu")
    assert (cfg["batch_size"], cfg["trainer"]["max_epochs"]) == (64, 50)
    assert (cfg["report"]["scientific"], cfg["report"]["nuisance"]) == ("optimizer", "optimizer.lr")


def test_an_optimizer_without_a_usual_lr_is_named_with_the_ones_there_are() -> None:
    with pytest.raises(ConfigError) as err:
        sweep_specs(["experiment=bench_lr", "hydra.sweeper.params.optimizer=nadam",
                     "hydra.sweeper.params.seed=0"])  # fmt: skip
    assert "optimizer.lr: usual_lr has no entry for optimizer=nadam" in str(err.value)
    assert "sgd, momentum, rmsprop, adam, adamw" in str(err.value)


def test_unknown_group_option_lists_the_valid_ones(make_spec) -> None:  # noqa: ANN001
    with pytest.raises(MissingConfigException) as err:
        make_spec(["loss=nope"])
    message = str(err.value)
    assert "loss/nope" in message
    for option in conf_options("loss"):
        assert option in message


def test_unknown_key_is_refused(make_spec) -> None:  # noqa: ANN001
    with pytest.raises(ConfigCompositionException, match="optimizer.lrr"):
        make_spec(["optimizer.lrr=0.1"])


def test_classification_loss_on_regression_data(make_spec) -> None:  # noqa: ANN001
    spec = make_spec(["dataset=diabetes", "loss=focal"])
    with pytest.raises(ConfigError) as err:
        check_run(spec)
    message = str(err.value)
    assert "loss=focal is a classification loss" in message and "dataset=diabetes" in message
    assert "huber, log_cosh, mae, mse, smooth_l1" in message


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0"),
        (["optimizer.lr=abc"], "optimizer.lr='abc' must be a number > 0"),
        (["batch_size=0"], "batch_size=0 must be a positive integer or 'full'"),
        (["batch_size=100000"], "larger than the 1200 training rows"),
        (
            ["model.hidden=[]"],
            "model.hidden=\\[\\] is empty: an MLP needs at least one hidden layer",
        ),
        (["+trainer.bogus=1"], "unknown key trainer.bogus=1.*Keys under trainer: .*max_epochs"),
        (
            ["trainer.accelerator=tpu"],
            "trainer.accelerator='tpu' cannot be used here .*; usable here: auto, cpu",
        ),
        (["model.hidden=[64,0]"], "model.hidden=\\[64, 0\\] must be a list of positive integers"),
        (["loss=focal", "loss.gamma=-1"], "focal gamma must be >= 0"),
        (["dataset=diabetes", "loss=huber", "loss.delta=0"], "huber delta must be > 0"),
        (["dataset.val_fraction=0.5", "dataset.test_fraction=0.5"], "leaves no training rows"),
        (["seed=-1"], "seed=-1 must be an integer >= 0"),
        (["trainer.max_epochs=0"], "max_epochs=0 must be an integer >= 1"),
        (["penalty.kind=l3"], "penalty.kind='l3' is not one of none, l1, l2"),
        (["loss=focal", "+loss.alpha=[0.5,0.5]"], None),
    ],
)
def test_bad_values_fail_before_training(
    make_spec, overrides: list[str], message: str | None
) -> None:  # noqa: ANN001, E501
    try:
        spec = make_spec(overrides)
    except ConfigCompositionException:  # '+' on an existing key: use a plain override instead
        spec = make_spec([o.lstrip("+") for o in overrides])
    if message is None:
        if "loss.alpha" in " ".join(overrides):  # a per-class list on a binary task
            with pytest.raises(ConfigError, match="binary task is one float"):
                check_run(spec)
        else:
            check_run(spec)
        return
    with pytest.raises(ConfigError, match=message):
        check_run(spec)


def test_run_spec_keeps_choices_and_overrides(make_spec) -> None:  # noqa: ANN001
    spec = make_spec(["loss=focal", "seed=3"])
    assert isinstance(spec, RunSpec)
    assert spec.choices["loss"] == "focal" and spec.seed == 3
    assert spec.overrides == ["loss=focal", "seed=3"]
    assert "hydra" not in spec.cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # the hint Hydra gives for `lr=0.1`: nothing reads a top-level lr
        ("+lr=0.1", r"unknown key lr=0.1: nothing reads it.*Did you mean optimizer.lr=0.1\?"),
        ("+optimizer.foo=1", r"unknown key optimizer.foo=1.*Keys under optimizer: amsgrad, .*lr"),
        ("+optimizer.lrr=0.1", r"optimizer.lrr=0.1.*Did you mean optimizer.lr=0.1\?"),
        ("+penalty.strenght=0.1", r"Did you mean penalty.strength=0.1\?"),
        ("+tracking.flush_every=1", r"Did you mean tracking.flush_every_s=1\?"),
        ("+dataset.source.nois=0.1", r"Did you mean dataset.source.noise=0.1\?"),
        ("+scheduler.eta_mn=0.1", r"unknown key scheduler.eta_mn=0.1"),
        ("+report.scientfic=optimizer", r"Did you mean report.scientific=optimizer\?"),
        (
            "+metrics.e={_target_: lossbench.problem.metrics.ece, task: classification, nbins: 3}",
            r"unknown key metrics.e.nbins=3.*Did you mean metrics.e.n_bins=3\?",
        ),
        (
            "+trainer.callbacks=[{_target_: pytorch_lightning.callbacks.EarlyStopping, "
            "monitor: val/loss, patiense: 3}]",
            r"trainer.callbacks\[0\].patiense=3.*Did you mean trainer.callbacks\[0\].patience=3",
        ),
    ],
)
def test_unknown_keys_are_refused_with_the_closest_real_key(
    make_spec, override: str, message: str
) -> None:  # noqa: ANN001
    spec = make_spec(["scheduler=cosine", override] if "scheduler." in override else [override])
    with pytest.raises(ConfigError, match=message):
        check_run(spec)


@pytest.mark.parametrize(
    "overrides",
    [
        ["+metrics.e={_target_: lossbench.problem.metrics.ece, task: classification, n_bins: 3}"],
        ["optimizer=sgd", "+optimizer.nesterov=true", "optimizer.momentum=0.9"],
        ["loss=focal", "+loss.alpha=0.25"],
        ["experiment=demo"],
        ["dataset=regression", "dataset.outlier_fraction=0.1", "loss=mse"],
    ],
)
def test_keys_that_something_reads_are_accepted(make_spec, overrides: list[str]) -> None:  # noqa: ANN001
    try:
        spec = make_spec(overrides)
    except ConfigCompositionException:  # '+' on a key the option already has
        spec = make_spec([o.lstrip("+") for o in overrides])
    check_run(spec)
