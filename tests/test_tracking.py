"""MLflow records: the batched writer gives exactly what MLflow's own API would."""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from lossbench.config import RunSpec
from lossbench.results import RunResult
from lossbench.tracking import Tracker, flatten, run_name, tracking_uri

RESULT = RunResult(
    series={"train/loss": [0.9, 0.5, float("nan")], "val/acc": [0.5, 0.75, 0.8]},
    final={"train/loss": float("nan"), "val/acc": 0.8, "test/acc": 0.78, "time/seconds": 1.5},
)


def spec() -> RunSpec:
    cfg = {
        "seed": 3,
        "dataset": {"name": "moons"},
        "optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        "model": {"hidden": [8, 8]},
        "tracking": {"root": "/somewhere/private"},
    }
    choices = {"dataset": "moons", "loss": "focal", "optimizer": "sgd", "scheduler": "cosine"}
    return RunSpec(cfg, choices, ["loss=focal", "seed=3"])


def record(tracker: Tracker, flush_first: bool) -> str:
    run_id = tracker.start_run(spec())
    written = 0
    if flush_first:  # the in-process path: some epochs written live, the rest at the end
        tracker.log_epochs(run_id, {k: v[:2] for k, v in RESULT.series.items()})
        written = 2
    tracker.finish_run(run_id, RESULT, written_epochs=written)
    return run_id


def test_batched_writes_equal_mlflow_api_writes(store_uri: str) -> None:
    tracker = Tracker(store_uri, "writer")
    fast, slow = record(tracker, flush_first=False), record(tracker, flush_first=True)
    client = MlflowClient(store_uri)
    a, b = client.get_run(fast), client.get_run(slow)
    assert a.data.params == b.data.params
    assert {k: v for k, v in a.data.tags.items() if k != "mlflow.runName"} == {
        k: v for k, v in b.data.tags.items() if k != "mlflow.runName"
    }
    assert a.info.status == b.info.status == "FINISHED"
    assert (
        a.data.metrics.keys()
        == b.data.metrics.keys()
        == {"train/loss", "val/acc", "test/acc", "time/seconds"}
    )
    for key in a.data.metrics:
        fa, fb = a.data.metrics[key], b.data.metrics[key]
        assert (math.isnan(fa) and math.isnan(fb)) or fa == fb, key
        steps_a = [(m.step, m.value) for m in client.get_metric_history(fast, key)]
        steps_b = [(m.step, m.value) for m in client.get_metric_history(slow, key)]
        assert str(steps_a) == str(steps_b), key  # str(): nan == nan
    assert [m.step for m in client.get_metric_history(fast, "val/acc")] == [0, 1, 2]
    assert {f.path for f in client.list_artifacts(fast)} == {"config.yaml", "overrides.yaml"}


def test_params_are_the_flat_config_without_store_paths(store_uri: str) -> None:
    run_id = record(Tracker(store_uri, "params"), flush_first=False)
    params = MlflowClient(store_uri).get_run(run_id).data.params
    assert params == {
        "seed": "3",
        "dataset.name": "moons",
        "optimizer._target_": "torch.optim.SGD",
        "optimizer.lr": "0.1",
        "model.hidden": "[8, 8]",
    }


def test_names_and_flattening() -> None:
    assert run_name(spec()) == "moons-focal-sgd-cosine-s3"
    assert flatten({"a": {"b": 1, "_partial_": True, "c": [1, 2]}}) == {"a.b": "1", "a.c": "[1, 2]"}


def test_store_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri({"root": "mlruns"}) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert tracking_uri({"root": "mlruns"}) == "sqlite:////elsewhere/mlflow.db"
    assert (
        tracking_uri({"uri": "http://127.0.0.1:5000", "root": "mlruns"}) == "http://127.0.0.1:5000"
    )
