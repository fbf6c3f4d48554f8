"""Every recorded number is the trained model's: per-epoch values at the epochs they describe,
finals of the final weights, gradient norms per optimizer step; and options lossbench would not
honour are refused. Each case is checked against the plain model (lossbench.fit.reference) and,
recorded, re-run by lossbench-repro."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError
from lossbench.fit.reference import train_plain
from lossbench.fit.training import fit_members
from lossbench.repro import reproduce
from lossbench.tracking.writer import Tracker
from test_own_recipes import assert_members_match_plain_model, worst_difference

BASE = ["tracking=none", "dataset.source.n_samples=200", "trainer.max_epochs=5", "batch_size=32"]


def record(make_spec, store_uri: str, experiment: str, overrides: list[str], sql: bool) -> str:  # noqa: ANN001
    """Train one run and record it; its run id."""
    spec = make_spec([*BASE[1:], f"tracking.uri={store_uri}", f"tracking.experiment={experiment}",
                      *overrides])  # fmt: skip
    data = check_run(spec)
    tracker = Tracker(store_uri, experiment, sql_batches=sql)
    [run_id] = tracker.start_runs([spec], data.summary())
    tracker.finish_runs([run_id], fit_members([spec.cfg], data))
    return run_id


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "val_epochs"),
    [
        (["+trainer.check_val_every_n_epoch=2"], [1, 3, 4]),  # and once after the last step
        # 120 rows in batches of 25: validations after batches 2 and 4 of 5, never after the
        # epoch's last: only the final weights' validation is an epoch's
        (["batch_size=25", "+trainer.val_check_interval=0.5"], [4]),
        (["+trainer.max_steps=10"], [0, 1, 2]),  # 4 steps an epoch: stops in epoch 2
    ],
)
@pytest.mark.parametrize("sql", [False, True], ids=["api", "sql"])
def test_val_values_sit_at_the_epochs_they_describe_and_the_final_is_the_final_models(
    make_spec,
    store_uri: str,
    overrides: list[str],
    val_epochs: list[int],
    sql: bool,  # noqa: ANN001
) -> None:
    overrides = [o.replace("+trainer", "trainer") if "check_val" in o else o for o in overrides]
    spec = make_spec([*BASE, *overrides])
    [result] = fit_members([spec.cfg], check_run(spec))
    assert [epoch for epoch, _ in result.points("val/loss")] == val_epochs
    plain = train_plain(spec.cfg)
    worst, where = worst_difference(result, plain)
    assert worst <= 1e-5, where
    assert result.final["val/loss"] == result.series["val/loss"][-1]
    experiment = f"val-epochs-{len(val_epochs)}-{val_epochs[-1]}-{sql}"
    run_id = record(make_spec, store_uri, experiment, overrides, sql)
    client = MlflowClient(store_uri)
    history = client.get_metric_history(run_id, "val/loss")
    assert [m.step for m in history] == val_epochs
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == list(
        range(val_epochs[-1] + 1)
    )
    assert client.get_run(run_id).data.metrics["val/loss"] == history[-1].value
    assert reproduce(run_id, store_uri, record=False).verdict().startswith("IDENTICAL")


@pytest.mark.slow
def test_grad_norm_is_per_optimizer_step_under_accumulation(make_spec) -> None:  # noqa: ANN001
    """Batches of 32 accumulated by 2 train as batches of 64 (192 rows: 3 windows of 64):
    the same gradient norm (it was halved: averaged over batches), matched to the plain model."""
    base = ["tracking=none", "dataset.source.n_samples=320", "trainer.max_epochs=3",
            "diagnostics.layer_grad_norms=true", "diagnostics.update_size=true"]  # fmt: skip
    [whole] = fit_members([make_spec([*base, "batch_size=64"]).cfg])
    spec = make_spec([*base, "batch_size=32", "+trainer.accumulate_grad_batches=2"])
    [accumulated] = fit_members([spec.cfg])
    for name in ("train/grad_norm", "grad_norm/layer0", "update/size", "train/loss", "val/loss"):
        assert accumulated.series[name] == pytest.approx(whole.series[name], rel=1e-5), name
    assert_members_match_plain_model([spec])


@pytest.mark.slow
def test_gradient_clipping_and_accumulation_match_the_plain_model(make_spec) -> None:  # noqa: ANN001
    specs = [
        make_spec([*BASE, "+trainer.gradient_clip_val=0.05", "optimizer=sgd", "optimizer.lr=0.5"]),
        make_spec([*BASE, "+trainer.gradient_clip_val=0.01", "+trainer.gradient_clip_algorithm=value"]),
        make_spec([*BASE, "+trainer.accumulate_grad_batches=3"]),  # 4 batches: windows of 3 and 1
    ]  # fmt: skip
    for spec in specs:
        assert_members_match_plain_model([spec])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["penalty.strength=0.1"], "penalty.strength=0.1 with penalty.kind=none: no penalty"),
        (["+trainer.reload_dataloaders_every_n_epochs=1"],
         "trainer.reload_dataloaders_every_n_epochs=1 is not supported here: use 0"),
        (["+trainer.overfit_batches=1"], "trainer.overfit_batches=1 is not supported here"),
        (["+trainer.limit_train_batches=0.5"], "limit_train_batches=0.5 .*every batch"),
        (["+trainer.max_time=00:00:01:00"], "max_time=.*irreproducible"),
        (["trainer.devices=2"], "trainer.devices=2 is not supported here: use 1"),
        (["+trainer.precision=bf16-mixed"], "precision='bf16-mixed' .*float32"),
        (["trainer.logger=true"], "trainer.logger=True .*records to MLflow itself"),
        (["+trainer.min_epochs=3"], "trainer.min_epochs=3 is not supported here: use null"),
    ],
)  # fmt: skip
def test_options_lossbench_would_not_honour_are_refused(
    make_spec,
    overrides: list[str],
    message: str,  # noqa: ANN001
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_run(make_spec([*BASE, *overrides]))


def test_a_trainer_option_not_in_the_list_is_refused_naming_the_supported_ones(make_spec) -> None:  # noqa: ANN001
    from lossbench.config import trainer_options

    spec = make_spec(BASE)
    spec.cfg["trainer"]["limit_predict_batches"] = 1.0
    check_run(spec)  # listed: it changes nothing here
    del trainer_options.OPTIONS["limit_predict_batches"]
    try:
        with pytest.raises(ConfigError, match="limit_predict_batches=1.0 is not an option "
                                              "lossbench follows.*supported: max_epochs"):  # fmt: skip
            check_run(spec)
    finally:
        trainer_options.OPTIONS["limit_predict_batches"] = ("anything", lambda v: True)
