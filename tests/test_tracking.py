"""MLflow records: the batched writer gives exactly what MLflow's own API would."""

from __future__ import annotations

from pathlib import Path

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


def record(tracker: Tracker, flush_first: bool = False, error: str | None = None) -> str:
    run_id = tracker.start_run(spec(), {"task": "binary", "n_train": 10})
    written = 0
    if flush_first:  # the in-process path: some epochs written live, the rest at the end
        tracker.log_epochs(run_id, {k: v[:2] for k, v in RESULT.series.items()})
        written = 2
    result = RESULT if error is None else RunResult(RESULT.series, RESULT.final, 0, "FAILED", error)
    tracker.finish_run(run_id, result, written_epochs=written)
    return run_id


def readback(client: MlflowClient, run_id: str) -> dict:
    """Everything MLflow's API shows of a run, minus what differs between any two runs."""
    run = client.get_run(run_id)
    info = {k: v for k, v in run.info.to_proto().ListFields()}
    return {
        "info": {
            f.name: value
            for f, value in info.items()
            if f.name not in ("run_id", "run_uuid", "start_time", "end_time", "artifact_uri")
        },
        "artifact_dir": run.info.artifact_uri.rsplit("/", 2)[-1],
        "tags": {k: v for k, v in run.data.tags.items() if k != "lossbench.stack_id"},
        "params": run.data.params,
        "latest": {k: str(v) for k, v in run.data.metrics.items()},  # str(): nan == nan
        "history": {
            key: str([(m.step, m.value) for m in client.get_metric_history(run_id, key)])
            for key in run.data.metrics
        },
        "artifacts": sorted(f.path for f in client.list_artifacts(run_id)),
    }


@pytest.mark.parametrize("error", [None, "Traceback: boom"])
def test_batched_sql_writes_equal_mlflow_api_writes(store_uri: str, error: str | None) -> None:
    client = MlflowClient(store_uri)
    batched = record(Tracker(store_uri, "writer"), error=error)
    api = record(Tracker(store_uri, "writer", sql_batches=False), error=error)
    live = record(Tracker(store_uri, "writer"), flush_first=True, error=error)
    a, b, c = (readback(client, r) for r in (batched, api, live))
    assert a == b == c
    assert a["info"]["status"] == (3 if error is None else 4)  # FINISHED, FAILED
    assert a["tags"]["mlflow.runName"] == "moons-focal-sgd-cosine-s3"
    assert (a["tags"].get("lossbench.error") == error) or error is None
    assert set(a["latest"]) == {"train/loss", "val/acc", "test/acc", "time/seconds"}
    assert a["history"]["val/acc"] == str([(0, 0.5), (1, 0.75), (2, 0.8)])
    expected = ["config.yaml", "overrides.yaml"] + ([] if error is None else ["traceback.txt"])
    assert a["artifacts"] == expected
    if error is not None:
        assert Path(client.download_artifacts(batched, "traceback.txt")).read_text() == error


def test_params_are_the_flat_config_without_store_paths(store_uri: str) -> None:
    run_id = record(Tracker(store_uri, "params"))
    params = MlflowClient(store_uri).get_run(run_id).data.params
    assert params == {
        "data.task": "binary",
        "data.n_train": "10",
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
