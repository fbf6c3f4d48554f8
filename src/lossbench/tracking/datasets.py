"""A run's data as MLflow dataset inputs (the UI's Dataset column; ``dataset.name = 'moons'``
in ``search_runs``).

Two halves, so that the process that records runs never loads data (nor imports torch):

- where the data is loaded (the check step, on the workers; or a single run's process),
  :func:`dataset_facts` describes it in plain, picklable values: its name, the source it was
  drawn or read from, the feature columns and target, and a digest of each split;
- the recording process turns those facts into MLflow ``DatasetInput`` entities once per
  distinct dataset (:func:`dataset_inputs`, cached) and logs them for each run of a stack.

Each run has three inputs, one per split, all named after the dataset, each with its own
digest (a SHA-256 of the split's name and its X and y bytes, after standardization: what the
model saw) and the split as MLflow's context tag ``mlflow.data.context``: ``train``,
``validation``, ``test``. The split's name is part of its digest, so that a set whose val and
test splits are its training points (``xor``) still records three inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput

    from lossbench.problem.data import SplitData

CONTEXT_TAG = "mlflow.data.context"  # mlflow.utils.mlflow_tags.MLFLOW_DATASET_CONTEXT
SPLITS = ("train", "validation", "test")
DIGEST_CHARS = 16  # MLflow stores up to 36


def split_digest(split: str, x: Any, y: Any) -> str:
    """The digest of one split: SHA-256 of its name, shapes, dtypes and X, y bytes."""
    sha = hashlib.sha256(split.encode())
    for array in (x, y):
        sha.update(f"{array.dtype.str}{array.shape}".encode())
        sha.update(memoryview(array.tobytes()))
    return sha.hexdigest()[:DIGEST_CHARS]


def _source(dataset_cfg: Mapping[str, Any], data_seed: int) -> tuple[str, dict[str, Any]]:
    """MLflow source type and source dict: a file's path (``local``), else the call that
    generated or loaded the data (``code``, as ``mlflow.data.code_dataset_source``)."""
    source = dataset_cfg.get("source") or {}
    path = source.get("path") if isinstance(source, Mapping) else None
    if path:
        from pathlib import Path

        return "local", {"uri": str(Path(str(path)).expanduser().resolve())}
    target = str(source.get("_target_", "?")) if isinstance(source, Mapping) else str(source)
    kwargs = {k: v for k, v in source.items() if not k.startswith("_")}
    call = ", ".join([*(f"{k}={v!r}" for k, v in kwargs.items()), f"seed={data_seed}"])
    return "code", {"tags": {"mlflow.source.name": f"{target}({call})"}}


def _columns(dataset_cfg: Mapping[str, Any], n_features: int) -> tuple[list[str], str]:
    """Feature column names (the config's ``source.features`` if it names them all, else
    ``x0``, ``x1``, ...) and the target's (``source.target``, else ``y``)."""
    source = dataset_cfg.get("source") or {}
    source = source if isinstance(source, Mapping) else {}
    named = source.get("features")
    features = (
        [str(f) for f in named]
        if isinstance(named, list | tuple) and len(named) == n_features
        else [f"x{i}" for i in range(n_features)]
    )
    return features, str(source.get("target") or "y")


def dataset_facts(dataset_cfg: Mapping[str, Any], data_seed: int, data: SplitData) -> dict:
    """What the recording process needs to log ``data`` as MLflow dataset inputs, in plain
    values: name, source, columns, task, rows and digest of each split."""
    splits = {
        "train": (data.x_train, data.y_train),
        "validation": (data.x_val, data.y_val),
        "test": (data.x_test, data.y_test),
    }
    source_type, source = _source(dataset_cfg, data_seed)
    features, target = _columns(dataset_cfg, data.n_features)
    return {
        "name": str(dataset_cfg.get("name") or data.name),
        "source_type": source_type,
        "source": source,
        "features": features,
        "target": target,
        "task": data.task,
        "n_classes": int(data.n_classes),
        "digests": {split: split_digest(split, x, y) for split, (x, y) in splits.items()},
        "rows": {split: len(y) for split, (_, y) in splits.items()},
    }


def schema_json(facts: Mapping[str, Any]) -> str:
    """The dataset's schema as MLflow's dataset schema JSON (``mlflow_colspec``): the
    features as doubles, the target as long (classification) or double (regression)."""
    from mlflow.types import ColSpec, Schema

    target_type = "double" if facts["task"] == "regression" else "long"
    columns = [ColSpec("double", name) for name in facts["features"]]
    columns.append(ColSpec(target_type, facts["target"]))
    return json.dumps({"mlflow_colspec": Schema(columns).to_dict()})


@functools.lru_cache(maxsize=256)
def _inputs(key: str) -> tuple[DatasetInput, ...]:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    facts = json.loads(key)
    schema = schema_json(facts)
    source = json.dumps(facts["source"])
    inputs = []
    for split in SPLITS:
        profile = {
            "num_rows": facts["rows"][split],
            "num_features": len(facts["features"]),
            "task": facts["task"],
        }
        dataset = Dataset(
            name=facts["name"],
            digest=facts["digests"][split],
            source_type=facts["source_type"],
            source=source,
            schema=schema,
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag(CONTEXT_TAG, split)]))
    return tuple(inputs)


def dataset_inputs(facts: Mapping[str, Any]) -> list[DatasetInput]:
    """The MLflow dataset inputs of a run whose data ``facts`` describe (see
    :func:`dataset_facts`): one per split, built once per distinct dataset."""
    return list(_inputs(json.dumps(facts, sort_keys=True)))


def run_facts(dataset_cfg: Mapping[str, Any], data_seed: int, data: SplitData) -> dict[str, Any]:
    """The facts recorded with a run: ``SplitData.summary()`` (params ``data.*``) and, under
    ``dataset``, what its dataset inputs need."""
    return {**data.summary(), "dataset": dataset_facts(dataset_cfg, data_seed, data)}
