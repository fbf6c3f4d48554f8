"""Writing a stack's runs to a SQL store in a few transactions (the SQL write path, the default
where it is verified: ``tracking.sql_batches``).

MLflow's client creates, fills and closes runs one call at a time, each a transaction of its
own. MLflow has no batch API for runs, so this module writes a stack's runs in one transaction
(runs with their tags, params and dataset inputs) when the stack starts, one per flush of live
curves while it trains (metrics, latest metrics), and one (the remaining metrics, latest
metrics, result tags, statuses) when it ends, through MLflow's own table models and session,
with the values its ``create_run``, ``log_batch`` and ``set_terminated`` would write: the same
validation, the same NaN/inf handling, the same latest-metric rule. It also reads one
metric's history of many runs in a few queries (the SQL store's bulk read, which MLflow's
client does not expose), where the client takes a query per run.

It is the only module of lossbench that touches MLflow's private store modules (the table
models, the client's store, the validation helpers, the artifact repositories), so it runs only
on MLflow versions it was verified against: ``tests/test_tracking.py`` reads back what both
paths write, on SQLite and on PostgreSQL, through MLflow's public API. Any other version
writes through the API instead.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# MLflow versions whose table models and validation this module was checked against.
VERIFIED_MLFLOW = ("3.17.2",)
RUNS_PER_QUERY = 500  # run ids per bulk read (SQLite allows 999 variables in older builds)


def batch_store(client: Any) -> tuple[Any | None, str]:
    """MLflow's SQLAlchemy store behind ``client``, if it is one and the installed MLflow is
    verified, else ``None``; and why."""
    import mlflow
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if mlflow.__version__ not in VERIFIED_MLFLOW:
        return None, (
            f"MLflow {mlflow.__version__} is not a version the SQL path was verified against "
            f"({', '.join(VERIFIED_MLFLOW)})"
        )
    # The client exposes no public accessor for its store.
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    if not isinstance(store, SqlAlchemyStore):
        return None, "the store is not a SQL database MLflow opens itself (an HTTP server, say)"
    dialect = getattr(store, "db_type", "SQL")
    return store, f"a {dialect} store on MLflow {mlflow.__version__}, verified for the SQL path"


def create_runs(
    store: Any,
    experiment_id: str,
    names: Sequence[str],
    tags: Sequence[Mapping[str, str]],
    params: Sequence[Mapping[str, str]],
    inputs: Sequence[Any] = (),
) -> list[tuple[str, str]]:
    """Create RUNNING runs with their tags and params, and the same dataset ``inputs``
    (MLflow ``DatasetInput`` entities) for each; returns (run id, artifact URI) each."""
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_dataset_inputs, _validate_param, _validate_tag
    from sqlalchemy import insert

    experiment = store.get_experiment(experiment_id)
    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        raise MlflowException(f"experiment {experiment.name!r} is deleted")
    now = int(time.time() * 1000)
    created, run_rows, tag_rows, param_rows = [], [], [], []
    for name, run_tags, run_params in zip(names, tags, params, strict=True):
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, "artifacts")
        created.append((run_id, artifact_uri))
        run_rows.append(
            {
                "run_uuid": run_id,
                "name": name,
                "artifact_uri": artifact_uri,
                "experiment_id": int(experiment_id),
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": run_tags.get(MLFLOW_USER, "unknown"),
                "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": now,
                "end_time": None,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            }
        )
        for key, value in {**run_tags, MLFLOW_RUN_NAME: name}.items():
            _validate_tag(key, value)
            tag_rows.append({"run_uuid": run_id, "key": key, "value": value})
        for key, value in run_params.items():
            _validate_param(key, value)
            param_rows.append({"run_uuid": run_id, "key": key, "value": value})
    inputs = list(inputs)
    _validate_dataset_inputs(inputs)
    with store.ManagedSessionMaker(read_only=False) as session:
        session.execute(insert(SqlRun.__table__), run_rows)
        for table, rows in ((SqlTag, tag_rows), (SqlParam, param_rows)):
            if rows:
                session.execute(insert(table.__table__), rows)
        if inputs:
            _insert_inputs(session, int(experiment_id), [run_id for run_id, _ in created], inputs)
    return created


def _insert_inputs(session: Any, experiment_id: int, run_ids: Sequence[str], inputs: Any) -> None:
    """What the store's ``log_inputs`` writes for each of ``run_ids`` (new runs: no input
    edges yet), for all of them at once: the datasets the experiment lacks (one row per name
    and digest), one input edge per run and dataset, and the edges' tags (the context)."""
    from mlflow.store.tracking.dbmodels.models import SqlDataset, SqlInput, SqlInputTag
    from sqlalchemy import insert

    unique: dict[tuple[str, str], Any] = {}  # as the store dedups: the first of a name, digest
    for dataset_input in inputs:
        unique.setdefault((dataset_input.dataset.name, dataset_input.dataset.digest), dataset_input)
    existing = (
        session.query(SqlDataset)
        .filter(SqlDataset.experiment_id == experiment_id)
        .filter(SqlDataset.name.in_([name for name, _ in unique]))
        .filter(SqlDataset.digest.in_([digest for _, digest in unique]))
        .all()
    )
    uuids = {(d.name, d.digest): d.dataset_uuid for d in existing}
    dataset_rows, input_rows, input_tag_rows = [], [], []
    for key, dataset_input in unique.items():
        if key not in uuids:
            uuids[key] = uuid.uuid4().hex
            dataset = dataset_input.dataset
            dataset_rows.append(
                {
                    "dataset_uuid": uuids[key],
                    "experiment_id": experiment_id,
                    "name": dataset.name,
                    "digest": dataset.digest,
                    "dataset_source_type": dataset.source_type,
                    "dataset_source": dataset.source,
                    "dataset_schema": dataset.schema,
                    "dataset_profile": dataset.profile,
                }
            )
    for run_id in run_ids:
        for key, dataset_input in unique.items():
            input_uuid = uuid.uuid4().hex
            input_rows.append(
                {
                    "input_uuid": input_uuid,
                    "source_type": "DATASET",
                    "source_id": uuids[key],
                    "destination_type": "RUN",
                    "destination_id": run_id,
                }
            )
            input_tag_rows.extend(
                {"input_uuid": input_uuid, "name": tag.key, "value": tag.value}
                for tag in dataset_input.tags
            )
    for table, rows in (
        (SqlDataset, dataset_rows),
        (SqlInput, input_rows),
        (SqlInputTag, input_tag_rows),
    ):
        if rows:
            session.execute(insert(table.__table__), rows)


def write_artifacts(artifact_uri: str, files: Mapping[str, str], tracking_uri: str) -> None:
    """Write small text files (name -> text) into the artifact location of a run just created
    here: it is known, so there is no need to read the run back, as ``log_artifacts`` would."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(tmp)


def _metric_rows(
    store: Any, run_ids: Sequence[str], metrics: Sequence[Sequence[tuple[str, float, int, int]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of MLflow's metrics table for runs' metrics (rows of key, value, timestamp, step),
    and of its latest-metrics table: each key's latest value among them, by MLflow's rule."""
    from mlflow.utils.validation import _validate_metric

    metric_rows, latest_rows = [], []
    for run_id, rows in zip(run_ids, metrics, strict=True):
        latest: dict[str, dict[str, Any]] = {}
        for key, value, timestamp, step in rows:
            if key not in latest:  # one check per key: the values are floats we made
                _validate_metric(key, value, timestamp, step)
            is_nan, value = store.sanitize_metric_value(value)
            row = {
                "run_uuid": run_id,
                "key": key,
                "value": value,
                "timestamp": timestamp,
                "step": step,
                "is_nan": is_nan,
            }
            metric_rows.append(row)
            best = latest.get(key)  # MLflow's rule: the largest (step, timestamp, value)
            if best is None or (step, timestamp, value) > (
                best["step"],
                best["timestamp"],
                best["value"],
            ):
                latest[key] = row
        latest_rows.extend(latest.values())
    return metric_rows, latest_rows


def _write_metrics(
    session: Any,
    metric_rows: list[dict[str, Any]],
    latest_rows: list[dict[str, Any]],
    replace: bool,
) -> None:
    """Insert metric rows and latest values. With ``replace``, the runs may have metrics
    already (written live): their latest values of these keys are replaced. Rows come in
    epoch order, so the new ones are later by MLflow's rule."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    from sqlalchemy import delete, insert, tuple_

    if replace and latest_rows:
        table = SqlLatestMetric.__table__
        pairs = [(row["run_uuid"], row["key"]) for row in latest_rows]
        session.execute(delete(table).where(tuple_(table.c.run_uuid, table.c.key).in_(pairs)))
    for table, rows in ((SqlMetric, metric_rows), (SqlLatestMetric, latest_rows)):
        if rows:
            session.execute(insert(table.__table__), rows)


def log_metrics(
    store: Any, run_ids: Sequence[str], metrics: Sequence[Sequence[tuple[str, float, int, int]]]
) -> None:
    """Write more metrics of RUNNING runs (rows of key, value, timestamp, step, later than
    any they have) in one transaction, with their latest values."""
    metric_rows, latest_rows = _metric_rows(store, run_ids, metrics)
    if not metric_rows:
        return
    with store.ManagedSessionMaker(read_only=False) as session:
        _write_metrics(session, metric_rows, latest_rows, replace=True)


def finish_runs(
    store: Any,
    run_ids: Sequence[str],
    metrics: Sequence[Sequence[tuple[str, float, int, int]]],
    tags: Sequence[Mapping[str, str]],
    statuses: Sequence[str],
    replace_latest: bool = False,
) -> None:
    """Write the metrics of runs (rows of key, value, timestamp, step) and their latest values,
    their result tags, and their end statuses. ``replace_latest``: some of them have metrics
    already (see :func:`log_metrics`)."""
    from mlflow.entities import RunStatus
    from mlflow.store.tracking.dbmodels.models import SqlRun, SqlTag
    from mlflow.utils.validation import _validate_tag
    from sqlalchemy import bindparam, insert, update

    metric_rows, latest_rows = _metric_rows(store, run_ids, metrics)
    tag_rows, status_rows = [], []
    now = int(time.time() * 1000)
    for run_id, run_tags, status in zip(run_ids, tags, statuses, strict=True):
        for key, value in run_tags.items():
            _validate_tag(key, value)
            tag_rows.append({"run_uuid": run_id, "key": key, "value": value})
        status_name = RunStatus.to_string(RunStatus.from_string(status))
        status_rows.append({"id": run_id, "status": status_name, "end_time": now})
    set_status = (
        update(SqlRun.__table__)
        .where(SqlRun.__table__.c.run_uuid == bindparam("id"))
        .values(status=bindparam("status"), end_time=bindparam("end_time"))
    )
    with store.ManagedSessionMaker(read_only=False) as session:
        _write_metrics(session, metric_rows, latest_rows, replace_latest)
        if tag_rows:
            session.execute(insert(SqlTag.__table__), tag_rows)
        session.connection().execute(set_status, status_rows)


def metric_histories(store: Any, run_ids: Sequence[str], key: str) -> dict[str, list[Any]]:
    """Every logged value of metric ``key`` of each run (MLflow ``Metric`` entities, as its
    client's ``get_metric_history`` returns them), a few hundred runs per query."""
    found: dict[str, list[Any]] = {run_id: [] for run_id in run_ids}
    ids = list(found)
    for start in range(0, len(ids), RUNS_PER_QUERY):
        chunk = ids[start : start + RUNS_PER_QUERY]
        for metric in store.get_metric_history_bulk(chunk, key, max_results=2**62):
            found[metric.run_id].append(metric)
    return found
