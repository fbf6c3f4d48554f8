"""MLflow's SQL tables read straight, without importing MLflow: the report's fast path.

Importing MLflow and opening its SQL store (which imports its migrations and checks the schema)
takes 1.5-2.5 s, more than a 300-run report's own work. Where the store is a SQLite or
PostgreSQL database whose schema is the revision the installed, verified MLflow version
creates, this module reads experiments, runs (info, tags, params, latest metrics) and metric
histories with a few SQLAlchemy Core queries, returning what MLflow's API returns: the same
runs, in the same order, with the same values (``tests/test_tracking.py`` compares the two).
It also writes the report's two small things back as MLflow's client would: a tag on an
active run, and files copied into a run's local (``file:``) artifact directory.

Anything else (another store, MLflow version or schema revision, MLflow's workspaces, an
artifact store that is not a local directory) goes through MLflow's API:
:func:`open_store` then returns ``None`` and why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlparse

from lossbench.tracking.store import sqlite_path

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine

# The schema (alembic revision) each verified MLflow version creates and reads.
VERIFIED_SCHEMA = {"3.17.2": "dc11669786a5"}
DIALECTS = ("sqlite", "postgresql")
RUNS_PER_QUERY = 500  # run ids per query (SQLite allows 999 variables in older builds)
MAX_TAG_VALUE = 8000  # MLflow's limit; a longer value goes through its API (which truncates)
RUN_NAME_TAG = "mlflow.runName"  # MLflow's set_tag also renames the run: left to its API


def open_store(uri: str) -> tuple[Engine | None, str]:
    """An engine on the store's database if it can be read here as MLflow would, else
    ``None``; and why."""
    from importlib.metadata import PackageNotFoundError, version

    dialect = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if dialect not in DIALECTS:
        return None, f"{dialect} stores are read through MLflow's API"
    db = sqlite_path(uri)
    if dialect == "sqlite" and (db is None or not db.is_file()):
        return None, "no SQLite file there (MLflow's client creates one)"
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() in ("1", "true"):
        return None, "MLflow's workspaces scope every query"
    try:
        installed = version("mlflow")
    except PackageNotFoundError:
        return None, "MLflow is not installed as 'mlflow'"
    if installed not in VERIFIED_SCHEMA:
        return None, f"MLflow {installed} is not a version this module was verified against"
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    engine = create_engine(uri, poolclass=NullPool)  # no connection outlives a call
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as err:  # noqa: BLE001 (driver errors vary): MLflow's API says what is wrong
        return None, f"the store's schema could not be read ({type(err).__name__})"
    if revision != VERIFIED_SCHEMA[installed]:
        return None, f"schema revision {revision}, not MLflow {installed}'s"
    return engine, f"a {dialect} store at MLflow {installed}'s schema"


def _rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    from sqlalchemy import bindparam, text

    statement = text(sql)
    for name, value in params.items():
        if isinstance(value, list | tuple):
            statement = statement.bindparams(bindparam(name, expanding=True))
    with engine.connect() as conn:
        return list(conn.execute(statement, params).all())


def active_experiments(engine: Engine) -> list[tuple[str, str]]:
    """(id, name) of every active experiment (MLflow's ``search_experiments()``)."""
    sql = "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'"
    return [(str(i), name) for i, name in _rows(engine, sql)]


def experiment_id(engine: Engine, name: str) -> str | None:
    """The id of experiment ``name``, active or deleted (``get_experiment_by_name``)."""
    found = _rows(engine, "SELECT experiment_id FROM experiments WHERE name = :name", name=name)
    return str(found[0][0]) if found else None


def experiment_name(engine: Engine, experiment: str) -> str:
    """The name of experiment ``experiment`` (an id)."""
    sql = "SELECT name FROM experiments WHERE experiment_id = :id"
    return str(_rows(engine, sql, id=int(experiment))[0][0])


@dataclass
class Run:
    """A run as MLflow's API returns it: its info, tags, params and latest metrics."""

    run_id: str
    experiment_id: str
    status: str
    artifact_uri: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str | None] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), RUNS_PER_QUERY):
        yield list(ids[start : start + RUNS_PER_QUERY])


def search_runs(
    engine: Engine, experiment_ids: Sequence[str], tags: Mapping[str, str], limit: int | None = None
) -> list[Run]:
    """The active runs of the experiments that have every tag ``key = value`` of ``tags``, in
    MLflow's default order (latest start first, then by run id), at most ``limit``."""
    where = ["experiment_id IN :experiments", "lifecycle_stage = 'active'"]
    params: dict[str, Any] = {"experiments": [int(e) for e in experiment_ids]}
    for i, (key, value) in enumerate(tags.items()):
        where.append(
            f'run_uuid IN (SELECT run_uuid FROM tags WHERE "key" = :k{i} AND value = :v{i})'
        )
        params.update({f"k{i}": key, f"v{i}": value})
    sql = (
        "SELECT run_uuid, experiment_id, status, artifact_uri, start_time, end_time FROM runs "
        f"WHERE {' AND '.join(where)} ORDER BY start_time DESC, run_uuid"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    runs = {
        row[0]: Run(row[0], str(row[1]), row[2], row[3], row[4], row[5])
        for row in _rows(engine, sql, **params)
    }
    for chunk in _chunks(list(runs)):
        for table, attribute in (("tags", "tags"), ("params", "params")):
            sql = (
                f'SELECT run_uuid, "key", value FROM {table} WHERE run_uuid IN :ids ORDER BY "key"'
            )
            for run_id, key, value in _rows(engine, sql, ids=chunk):
                getattr(runs[run_id], attribute)[key] = value
        sql = (
            'SELECT run_uuid, "key", value, is_nan FROM latest_metrics WHERE run_uuid IN :ids '
            'ORDER BY "key"'
        )
        for run_id, key, value, is_nan in _rows(engine, sql, ids=chunk):
            runs[run_id].metrics[key] = float("nan") if is_nan else float(value)
    return list(runs.values())


def runs_table(runs: Sequence[Run]) -> pd.DataFrame:
    """The runs as ``mlflow.search_runs(output_format="pandas")`` tables them: ``run_id``,
    ``experiment_id``, ``status``, ``artifact_uri``, ``start_time``, ``end_time``, then
    ``metrics.<key>`` (NaN where a run lacks it), ``params.<key>`` and ``tags.<key>`` (None);
    within each prefix the keys sorted (MLflow's order follows a set's)."""
    import numpy as np
    import pandas as pd

    def when(ms: int | None) -> Any:
        return pd.to_datetime(ms, unit="ms", utc=True)  # as MLflow converts each

    data: dict[str, list[Any]] = {
        "run_id": [r.run_id for r in runs],
        "experiment_id": [r.experiment_id for r in runs],
        "status": [r.status for r in runs],
        "artifact_uri": [r.artifact_uri for r in runs],
        "start_time": [when(r.start_time) for r in runs],
        "end_time": [when(r.end_time) for r in runs],
    }
    for prefix, missing in (("metrics", np.nan), ("params", None), ("tags", None)):
        keys = sorted({k for r in runs for k in getattr(r, prefix)})
        for key in keys:
            data[f"{prefix}.{key}"] = [getattr(r, prefix).get(key, missing) for r in runs]
    return pd.DataFrame(data)


class Point(NamedTuple):
    """One logged value of a metric (as MLflow's ``Metric``: step, timestamp, value)."""

    step: int
    timestamp: int
    value: float


def metric_histories(engine: Engine, run_ids: Sequence[str], key: str) -> dict[str, list[Point]]:
    """Every logged value of metric ``key`` of each run, in the order of MLflow's
    ``get_metric_history_bulk`` (timestamp, step, value)."""
    found: dict[str, list[Point]] = {run_id: [] for run_id in run_ids}
    sql = (
        'SELECT run_uuid, step, "timestamp", value, is_nan FROM metrics WHERE "key" = :key AND '
        'run_uuid IN :ids ORDER BY run_uuid, "timestamp", step, value'
    )
    for chunk in _chunks(list(found)):
        for run_id, step, timestamp, value, is_nan in _rows(engine, sql, key=key, ids=chunk):
            found[run_id].append(Point(step, timestamp, float("nan") if is_nan else float(value)))
    return found


def set_tag(engine: Engine, run_id: str, key: str, value: str) -> bool:
    """Set a tag of an active run, as MLflow's ``set_tag`` does; ``False`` (nothing written)
    for what only MLflow's API handles: a run that is not active or not there (its error),
    the run-name tag, a value over MLflow's length limit."""
    from sqlalchemy import text

    if key == RUN_NAME_TAG or len(value) > MAX_TAG_VALUE:
        return False
    where = 'WHERE run_uuid = :run AND "key" = :key'
    with engine.begin() as conn:
        stage = conn.execute(
            text("SELECT lifecycle_stage FROM runs WHERE run_uuid = :run"), {"run": run_id}
        ).scalar()
        if stage != "active":
            return False
        row = {"run": run_id, "key": key, "value": value}
        if not conn.execute(text(f"UPDATE tags SET value = :value {where}"), row).rowcount:
            conn.execute(text('INSERT INTO tags ("key", value, run_uuid) VALUES (:key, :value, :run)'), row)  # fmt: skip
    return True


def local_artifact_dir(engine: Engine, run_id: str) -> Path | None:
    """The directory of an active run's artifacts when its artifact URI is a local
    ``file:`` one (MLflow's ``LocalArtifactRepository``), else ``None``."""
    sql = "SELECT artifact_uri FROM runs WHERE run_uuid = :run AND lifecycle_stage = 'active'"
    found = _rows(engine, sql, run=run_id)
    if not found or not found[0][0]:
        return None
    parsed = urlparse(found[0][0])
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(unquote(parsed.path))


def copy_artifacts(source: Path, artifact_dir: Path, artifact_path: str) -> None:
    """Copy a file, or a directory's tree, into ``artifact_dir/artifact_path`` as MLflow's
    local artifact repository does (``log_artifact``, ``log_artifacts``): directories made as
    needed, files copied with their times, existing ones replaced."""
    target = artifact_dir / os.path.normpath(artifact_path)
    target.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        shutil.copy2(source, target / source.name)
        return
    for folder, _, files in os.walk(source):
        into = target / Path(folder).relative_to(source)
        into.mkdir(exist_ok=True)
        for name in files:
            shutil.copy2(Path(folder, name), into / name)
