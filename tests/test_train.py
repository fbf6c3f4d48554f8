"""End to end in-process: a run trains and lands in MLflow fully recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import FAST, cross_path_approx
from lossbench.config.spec import ConfigError
from lossbench.train import train

METRICS = {
    "train/loss", "train/grad_norm", "lr",
    "val/loss", "val/acc", "val/balanced_acc", "val/f1_macro",
}  # fmt: skip
TESTS = {
    "test/loss",
    "test/acc",
    "test/balanced_acc",
    "test/f1_macro",
    "test/ece",  # conf/train.yaml's metrics: every classification run records them, and on
    "test/brier",  # val the final model's values (not every epoch: every_epoch is off)
    "val/ece",
    "val/brier",
    "time/seconds",
    "time/epoch_seconds",
    "train/final_loss",
}


def run_once(make_spec, store_uri: str, experiment: str, *overrides: str):  # noqa: ANN001, ANN201
    fast = FAST if not any(o.startswith("dataset=") for o in overrides) else FAST[:1]
    spec = make_spec(
        [*fast, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}", *overrides]
    )
    return train(spec.cfg, spec.choices, spec.overrides)


def runs_of(store_uri: str, experiment: str) -> list:
    client = MlflowClient(store_uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


@pytest.mark.slow
def test_run_is_fully_recorded(
    make_spec,
    store_uri: str,
    caplog: pytest.LogCaptureFixture,  # noqa: ANN001
) -> None:
    with caplog.at_level("INFO", logger="lossbench.train"):
        result = run_once(make_spec, store_uri, "e2e", "loss=focal", "optimizer=adamw", "seed=3")
    [run] = runs_of(store_uri, "e2e")
    # the run ends by saying where it went and how to look at it
    assert f"Recorded as run {run.info.run_id} in experiment 'e2e' of {store_uri}" in caplog.text
    assert "lossbench-ui" in caplog.text and f"lossbench-repro {run.info.run_id}" in caplog.text
    client = MlflowClient(store_uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "moons-focal-adamw-constant-s3"
    params = run.data.params
    assert params["optimizer._target_"] == "torch.optim.AdamW"
    assert params["loss.gamma"] == "2.0" and params["seed"] == "3"
    assert params["data.task"] == "binary" and params["data.n_features"] == "2"
    assert not any(k.startswith("tracking") for k in params), "store paths are not params"
    tags = run.data.tags
    assert (
        tags["lossbench.choice.loss"] == "focal" and tags["lossbench.choice.optimizer"] == "adamw"
    )
    for key in (
        "lossbench.sweep_id", "mlflow.source.git.commit", "lossbench.version.torch",
        "lossbench.version.pytorch-lightning", "lossbench.platform", "lossbench.torch_threads",
        "lossbench.config_hash",
    ):  # fmt: skip
        assert tags.get(key), key
    assert set(run.data.metrics) == METRICS | TESTS
    for name in METRICS:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [0, 1, 2], name
    assert run.data.metrics["test/acc"] == pytest.approx(result.final["test/acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "overrides.yaml"}
    config = client.download_artifacts(run.info.run_id, "config.yaml")
    assert "Focal" in Path(config).read_text()


@pytest.mark.slow
def test_same_seed_same_metrics(make_spec, store_uri: str) -> None:  # noqa: ANN001
    overrides = ("dataset=digits", "loss=cross_entropy", "model.dropout=0.2", "seed=7")
    a = run_once(make_spec, store_uri, "repeat", *overrides, "tracking.flush_every_s=0")
    b = run_once(make_spec, store_uri, "repeat", *overrides, "rerun=true")
    assert _same_but_time(a, b)
    c = run_once(make_spec, store_uri, "repeat", *overrides[:-1], "seed=8")
    # another seed: different by more than float rounding
    assert c.series["train/loss"] != cross_path_approx(a.series["train/loss"])
    client = MlflowClient(store_uri)
    for run in runs_of(store_uri, "repeat"):  # live flushing wrote no duplicates
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 3


@pytest.mark.slow
def test_finished_config_is_not_trained_again(make_spec, store_uri: str) -> None:  # noqa: ANN001
    first = run_once(make_spec, store_uri, "no-retrain", "seed=1")
    again = run_once(make_spec, store_uri, "no-retrain", "seed=1")
    assert again.series == {} and again.final == pytest.approx(first.final)
    assert len(runs_of(store_uri, "no-retrain")) == 1
    forced = run_once(make_spec, store_uri, "no-retrain", "seed=1", "rerun=true")
    assert forced.series and len(runs_of(store_uri, "no-retrain")) == 2


def _same_but_time(a, b) -> bool:  # noqa: ANN001
    """Bit for bit: the same config trained twice on one machine takes the same code path
    (flushing epochs to the store live or not changes no arithmetic)."""
    strip = lambda r: {k: v for k, v in r.series.items() if not k.startswith("time/")}  # noqa: E731
    return strip(a) == strip(b) and a.final["test/acc"] == b.final["test/acc"]


@pytest.mark.slow
def test_tracking_none_records_nothing(make_spec, store_uri: str) -> None:  # noqa: ANN001
    spec = make_spec(
        [*FAST, "tracking=none", f"tracking.uri={store_uri}", "tracking.experiment=off"]
    )
    result = train(spec.cfg, spec.choices, spec.overrides)
    assert len(result.series["val/acc"]) == 3
    assert runs_of(store_uri, "off") == []


def test_bad_input_writes_nothing(make_spec, store_uri: str) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="classification loss"):
        run_once(make_spec, store_uri, "bad-input", "dataset=diabetes", "loss=focal")
    assert MlflowClient(store_uri).get_experiment_by_name("bad-input") is None


def test_in_a_slurm_job_lightning_does_not_requeue_it(
    make_spec,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """Lightning would requeue a SLURM job on SIGUSR1 itself; the sweep retries lost stacks,
    so in a SLURM job the fit's SLURM environment has auto_requeue off."""
    from lossbench.fit import training

    for name, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "lossbench", "SLURM_JOB_ID": "7",
                        "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    built = []
    real = training.build_trainer

    def recorded(node, **kwargs):  # noqa: ANN001, ANN003, ANN202
        built.append(dict(node))
        return real(node, **kwargs)

    monkeypatch.setattr(training, "build_trainer", recorded)
    spec = make_spec(["tracking=none", "trainer.max_epochs=1", "dataset.source.n_samples=200"])
    training.fit_members([spec.cfg])
    [plugin] = built[0]["plugins"]
    assert plugin.auto_requeue is False
