"""The two ways lossbench writes runs, behind one interface (:class:`WritePath`):

- :class:`SqlPath`: a stack's runs in one transaction when it starts, one per flush of live
  curves, one when it ends, straight into MLflow's SQL tables (:mod:`.sql_batches`), on the
  MLflow versions that path was verified against;
- :class:`ApiPath`: MLflow's public client API, a few calls per run.

:func:`choose` picks one for a store and the ``tracking.sql_batches`` setting, and says why:
``auto`` (the default) takes the SQL path for a SQLite or PostgreSQL store on a verified MLflow,
and MLflow's API otherwise (another MLflow version, an HTTP tracking server); ``true`` asks for
the SQL path (and says so where it cannot be had); ``false`` takes the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from lossbench.interrupts import Interrupted
from lossbench.tracking import sql_batches
from lossbench.tracking.artifacts import write_artifacts
from lossbench.tracking.payloads import MetricRow, batches

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")
SETTINGS = ("auto", True, False)  # tracking.sql_batches


class WritePath(Protocol):
    """How runs reach the store: created (with tags, params, inputs and config artifacts),
    given metrics while they train, finished with metrics, tags and a status."""

    name: str

    def create(
        self,
        experiment_id: str,
        names: Sequence[str],
        tags: Sequence[Mapping[str, str]],
        params: Sequence[Mapping[str, str]],
        inputs: Sequence[Any],
        artifacts: Sequence[Mapping[str, str]],
    ) -> list[str]:
        """Create RUNNING runs; their ids (the runs created before a failure are closed)."""
        ...

    def log_metrics(self, run_ids: Sequence[str], rows: Sequence[Sequence[MetricRow]]) -> None:
        """Write metric rows of runs that train (one list per run)."""
        ...

    def finish(
        self,
        run_ids: Sequence[str],
        rows: Sequence[Sequence[MetricRow]],
        tags: Sequence[Mapping[str, str]],
        statuses: Sequence[str],
        replace_latest: bool,
    ) -> None:
        """Write what is left of runs (``replace_latest``: some have metrics already) and close
        them with their statuses."""
        ...


def once_more_if_duplicate(write: Callable[[], T]) -> T:
    """Run a write that adds datasets, once more if another writer added one of them first.

    MLflow's store looks an experiment's dataset up, then inserts it if missing (as does
    :func:`sql_batches.create_runs`): two sweeps writing the same dataset into one experiment
    at the same moment can both miss it, and the second insert breaks the unique constraint
    (experiment, name, digest). Its transaction is rolled back; the second try finds it."""
    try:
        return write()
    except Exception as err:
        if not integrity_error(err):
            raise
        log.info("A dataset was added by another writer meanwhile; writing again (%s)", err)
        return write()


def integrity_error(err: BaseException) -> bool:
    """Whether the database refused a write for a broken constraint: an SQLAlchemy
    ``IntegrityError`` anywhere in the exception's chain (MLflow's store wraps it in an
    ``MlflowException``), whatever the database's words for it (SQLite's "UNIQUE constraint
    failed", MySQL's "Duplicate entry")."""
    from sqlalchemy.exc import IntegrityError

    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, IntegrityError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


class ApiPath:
    """Through MLflow's client: per run ``create_run``, one ``log_batch`` of its params,
    ``log_inputs``, its artifacts; ``log_batch`` calls of metrics; ``set_terminated``."""

    name = "MLflow's API"

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def create(
        self,
        experiment_id: str,
        names: Sequence[str],
        tags: Sequence[Mapping[str, str]],
        params: Sequence[Mapping[str, str]],
        inputs: Sequence[Any],
        artifacts: Sequence[Mapping[str, str]],
    ) -> list[str]:
        """See :class:`WritePath`."""
        created: list[str] = []
        try:
            for name, run_tags, run_params, files in zip(
                names, tags, params, artifacts, strict=True
            ):
                run = self.client.create_run(experiment_id, run_name=name, tags=dict(run_tags))
                run_id = run.info.run_id
                created.append(run_id)
                # params at once: a RUNNING run shows its config and is searchable
                self.log_batch(run_id, [], run_params, {})
                if inputs:
                    once_more_if_duplicate(
                        lambda: self.client.log_inputs(run_id, datasets=list(inputs))  # noqa: B023
                    )
                write_artifacts(self.client, run_id, files)
        except BaseException as err:  # the caller never learns these ids: close them here
            status = "KILLED" if isinstance(err, Interrupted) else "FAILED"
            for run_id in created:
                self.client.set_terminated(run_id, status=status)
            raise
        return created

    def log_metrics(self, run_ids: Sequence[str], rows: Sequence[Sequence[MetricRow]]) -> None:
        """See :class:`WritePath`."""
        for run_id, run_rows in zip(run_ids, rows, strict=True):
            if run_rows:
                self.log_batch(run_id, run_rows, {}, {})

    def finish(
        self,
        run_ids: Sequence[str],
        rows: Sequence[Sequence[MetricRow]],
        tags: Sequence[Mapping[str, str]],
        statuses: Sequence[str],
        replace_latest: bool,
    ) -> None:
        """See :class:`WritePath` (MLflow keeps the latest values itself)."""
        for run_id, run_rows, run_tags, status in zip(run_ids, rows, tags, statuses, strict=True):
            self.log_batch(run_id, run_rows, {}, run_tags)
            self.client.set_terminated(run_id, status=status)

    def log_batch(
        self,
        run_id: str,
        rows: Sequence[MetricRow],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        """One run's values in as few ``log_batch`` calls as MLflow's limits allow."""
        from mlflow.entities import Metric, Param, RunTag

        for some_metrics, some_params, some_tags in batches(
            [Metric(*row) for row in rows],
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in tags.items()],
        ):
            self.client.log_batch(run_id, some_metrics, some_params, some_tags)


class SqlPath:
    """A stack's runs in a few transactions, straight into MLflow's SQL tables
    (:mod:`.sql_batches`); artifacts through MLflow's artifact repository."""

    name = "batched SQL"

    def __init__(self, client: MlflowClient, store: Any, uri: str) -> None:
        self.client, self.store, self.uri = client, store, uri

    def create(
        self,
        experiment_id: str,
        names: Sequence[str],
        tags: Sequence[Mapping[str, str]],
        params: Sequence[Mapping[str, str]],
        inputs: Sequence[Any],
        artifacts: Sequence[Mapping[str, str]],
    ) -> list[str]:
        """See :class:`WritePath`."""
        created = once_more_if_duplicate(
            lambda: sql_batches.create_runs(self.store, experiment_id, names, tags, params, inputs)
        )
        try:
            for (_, artifact_uri), files in zip(created, artifacts, strict=True):
                sql_batches.write_artifacts(artifact_uri, files, self.uri)
        except BaseException as err:  # the caller never learns these ids: close them here
            status = "KILLED" if isinstance(err, Interrupted) else "FAILED"
            for run_id, _ in created:
                self.client.set_terminated(run_id, status=status)
            raise
        return [run_id for run_id, _ in created]

    def log_metrics(self, run_ids: Sequence[str], rows: Sequence[Sequence[MetricRow]]) -> None:
        """See :class:`WritePath`: one transaction."""
        sql_batches.log_metrics(self.store, run_ids, rows)

    def finish(
        self,
        run_ids: Sequence[str],
        rows: Sequence[Sequence[MetricRow]],
        tags: Sequence[Mapping[str, str]],
        statuses: Sequence[str],
        replace_latest: bool,
    ) -> None:
        """See :class:`WritePath`: one transaction."""
        sql_batches.finish_runs(self.store, run_ids, rows, tags, statuses, replace_latest)


def parse_setting(value: Any) -> str | bool:
    """``tracking.sql_batches`` as ``"auto"``, ``True`` or ``False``; ``ValueError`` naming
    the valid values otherwise."""
    if value is None or value == "auto":
        return "auto"
    if isinstance(value, bool):
        return value
    raise ValueError(f"tracking.sql_batches={value!r} must be auto, true or false")


def choose(client: MlflowClient, uri: str, setting: str | bool) -> tuple[WritePath, str]:
    """The write path for a store and a ``tracking.sql_batches`` setting, and why."""
    if setting is False:
        return ApiPath(client), "tracking.sql_batches=false"
    store, why_not = sql_batches.batch_store(client)
    if store is None:
        asked = "asked for (tracking.sql_batches=true), but " if setting is True else ""
        return ApiPath(client), f"{asked}{why_not}"
    return SqlPath(client, store, uri), f"{why_not} (tracking.sql_batches={setting})"
