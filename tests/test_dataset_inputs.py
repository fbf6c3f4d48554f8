"""MLflow dataset inputs: every run records its data (name, digest, source, schema), one input
per split, the split as MLflow's context; the UI's Dataset column and ``search_runs`` see them."""

from __future__ import annotations

import json

from mlflow import MlflowClient

from conftest import FAST
from lossbench.results import RunResult
from lossbench.sweep.checking import check_specs
from lossbench.tracking.datasets import dataset_facts, dataset_inputs
from lossbench.tracking.writer import Tracker


def test_a_stacks_runs_record_their_data_as_mlflow_datasets(make_spec, store_uri: str) -> None:  # noqa: ANN001
    """What the check step learns of the data (digests where it is loaded) becomes, in the
    recording process, one input per split of each run, on both write paths; the same data
    has the same digests, another data_seed other ones."""
    base = [*FAST, f"tracking.uri={store_uri}"]
    specs = [make_spec([*base, f"seed={s}"]) for s in (0, 1)]
    specs.append(make_spec([*base, "data_seed=1"]))
    facts = check_specs(specs)
    digests = [f["dataset"]["digests"] for f in facts]
    assert digests[0] == digests[1] and digests[0]["train"] != digests[2]["train"]
    assert len(set(digests[0].values())) == 3  # one dataset per split

    client = MlflowClient(store_uri)
    for sql in (False, True):
        tracker = Tracker(store_uri, f"inputs-{sql}", sql_batches=sql)
        run_ids = tracker.start_runs(specs[:2], facts[0])
        tracker.finish_runs(run_ids, [RunResult(final={"test/acc": 0.5})] * 2)
        found = client.search_runs([tracker.experiment_id], "dataset.name = 'moons'")
        assert sorted(r.info.run_id for r in found) == sorted(run_ids)
        assert not client.search_runs([tracker.experiment_id], "dataset.name = 'iris'")
        test_runs = client.search_runs(
            [tracker.experiment_id], f"dataset.digest = '{digests[0]['test']}'"
        )
        assert len(test_runs) == 2
        for run in found:
            inputs = run.inputs.dataset_inputs
            assert [(i.dataset.digest, i.tags[0].value) for i in inputs] == [
                (digests[0][split], split) for split in ("train", "validation", "test")
            ]
            dataset = inputs[0].dataset
            assert dataset.name == "moons" and dataset.source_type == "code"
            source = json.loads(dataset.source)["tags"]["mlflow.source.name"]
            assert source == "lossbench.problem.sources.moons(n_samples=200, noise=0.2, seed=0)"
            columns = json.loads(dataset.schema)["mlflow_colspec"]
            assert [(c["name"], c["type"]) for c in columns] == [
                ("x0", "double"), ("x1", "double"), ("y", "long"),
            ]  # fmt: skip
            assert json.loads(inputs[1].dataset.profile)["num_rows"] == 40


def test_a_file_dataset_records_its_path_and_named_columns(tmp_path) -> None:  # noqa: ANN001
    """A dataset read from a file (``dataset.source.path``) has a ``local`` source, its
    absolute path; named feature and target columns are the schema's."""
    import numpy as np

    from lossbench.problem.data import SplitData

    x, y = np.ones((4, 2)), np.array([0.5, 1.0, 1.5, 2.0])
    data = SplitData("file", "regression", 0, x[:2], y[:2], x[2:3], y[2:3], x[3:], y[3:])
    cfg = {"name": "houses", "source": {"path": str(tmp_path / "h.csv"), "target": "price",
                                        "features": ["rooms", "area"]}}  # fmt: skip
    facts = dataset_facts(cfg, 0, data)
    [train, *_] = dataset_inputs(facts)
    assert (train.dataset.name, train.dataset.source_type) == ("houses", "local")
    assert json.loads(train.dataset.source) == {"uri": str(tmp_path / "h.csv")}
    columns = json.loads(train.dataset.schema)["mlflow_colspec"]
    assert [(c["name"], c["type"]) for c in columns] == [
        ("rooms", "double"), ("area", "double"), ("price", "double"),
    ]  # fmt: skip
    assert dataset_inputs(facts)[0] is train  # built once per distinct dataset
