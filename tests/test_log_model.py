"""tracking.log_model=true: each run's trained member, alone, as an MLflow PyTorch model that
gives the run's recorded test metrics; off by default."""

from __future__ import annotations

import json

import mlflow.pytorch
import numpy as np
import torch
from mlflow import MlflowClient

from conftest import FAST
from lossbench.fit.training import fit_members
from lossbench.problem.data import load_dataset
from lossbench.tracking.writer import Tracker


def test_each_runs_model_loads_and_gives_its_recorded_test_metrics(
    make_spec, store_uri: str
) -> None:  # noqa: ANN001
    """A stack of members with different losses and seeds (members are reordered by loss
    inside the stack), recorded on the SQL path: each run's model is its own member."""
    base = [*FAST, "tracking.log_model=true", "model.hidden=[8,8]", "model.activation=tanh"]
    specs = [
        make_spec([*base, "loss=mse", "seed=0"]),
        make_spec([*base, "loss=cross_entropy", "seed=1"]),
    ]
    results = fit_members([s.cfg for s in specs])
    assert all(r.model_files and "MLmodel" in r.model_files for r in results)
    tracker = Tracker(store_uri, "log-model", sql_batches=True)
    run_ids = tracker.start_runs(specs, {"task": "binary"})
    tracker.finish_runs(run_ids, results)

    data = load_dataset(specs[0].cfg["dataset"], int(specs[0].cfg["data_seed"]))
    client = MlflowClient(store_uri)
    mlflow.set_tracking_uri(store_uri)
    accuracies = []
    for run_id in run_ids:
        run = client.get_run(run_id)
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
        assert isinstance(model, torch.nn.Sequential)
        with torch.no_grad():
            logits = model(torch.from_numpy(data.x_test)).numpy()[:, 0]
        acc = float(np.mean((logits > 0) == data.y_test))
        assert abs(acc - run.data.metrics["test/acc"]) < 1e-5
        accuracies.append(acc)
        [history] = json.loads(run.data.tags["mlflow.log-model.history"])  # the Models column
        assert history["run_id"] == run_id and history["artifact_path"] == "model"
        info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
        assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 2]
        assert info.saved_input_example_info is not None
    assert results[0].model_files is None  # written, then let go


def test_models_are_off_by_default(make_spec) -> None:  # noqa: ANN001
    spec = make_spec(FAST)
    assert spec.cfg["tracking"]["log_model"] is False
    [result] = fit_members([spec.cfg])
    assert result.model_files is None
