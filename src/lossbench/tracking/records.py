"""Reading runs and sweeps back from the store: resume (which configs are done), the report,
the claims and repro read through here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lossbench.results import RunResult
from lossbench.tracking.store import timed

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient


class NotInStore(LookupError):
    """The store has no such experiment, sweep or run; the message says what it does have."""


def in_sweep_tag(sweep_id: str) -> str:
    """The tag marking a run as part of a sweep: the sweep that trained it, and any later
    sweep that found it already completed and used it instead of training it again."""
    return f"lossbench.in_sweep.{sweep_id}"


@dataclass
class RunRecord:
    """One run as the store holds it."""

    run_id: str
    name: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # latest values
    start_time: int = 0

    @classmethod
    def of(cls, run: Any) -> RunRecord:
        """From an MLflow Run."""
        return cls(
            run.info.run_id,
            run.info.run_name,
            run.info.status,
            dict(run.data.tags),
            dict(run.data.params),
            dict(run.data.metrics),
            run.info.start_time,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        """From a row of MLflow's runs table (:func:`runs_table`), where a metric that is
        missing and one recorded as NaN look the same: both are left out."""

        def prefixed(prefix: str) -> dict[str, Any]:
            return {
                k.removeprefix(prefix): v
                for k, v in row.items()
                if k.startswith(prefix) and v is not None and v == v  # v == v: not NaN
            }

        tags = prefixed("tags.")
        return cls(
            row["run_id"],
            tags.get("mlflow.runName", ""),
            row["status"],
            tags,
            prefixed("params."),
            {k: float(v) for k, v in prefixed("metrics.").items()},
            int(row["start_time"].timestamp() * 1000),
        )

    def result(self) -> RunResult:
        """What the run produced, as training returns it (final metrics only)."""
        keep = ("lossbench.status", "lossbench.diverged_epoch")
        tags = {k: v for k, v in self.tags.items() if k in keep}
        return RunResult(final=dict(self.metrics), status=self.status, tags=tags)

    @property
    def outcome(self) -> str:
        """finished, diverged, failed, killed or running."""
        return outcome(self.status, self.tags.get("lossbench.status"))


def outcome(status: str, status_tag: str | None) -> str:
    """What became of a run, from its MLflow status and its ``lossbench.status`` tag:
    finished, diverged, failed, killed or running."""
    if status_tag == "diverged":
        return "diverged"
    return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(status, "running")


@dataclass
class SweepRecord:
    """A sweep: its parent run's tags and its runs."""

    uri: str
    experiment: str
    sweep_id: str
    parent_run_id: str | None
    tags: dict[str, str]
    runs: list[RunRecord]
    table: pd.DataFrame  # the same runs as MLflow's own table (see :func:`runs_table`)


def sweep_runs_filter(sweep_id: str) -> str:
    """The search filter for the runs of a sweep: trained by it, or adopted by it."""
    return f"tags.`{in_sweep_tag(sweep_id)}` = 'true' and tags.`lossbench.role` = 'run'"


def runs_table(uri: str, experiment_ids: list[str], filter_string: str) -> pd.DataFrame:
    """Every run matching the filter as MLflow's own table (``mlflow.search_runs``): one row
    per run; columns ``run_id``, ``status``, ``start_time``, ..., ``params.<key>``,
    ``metrics.<key>`` (latest values), ``tags.<key>``."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # search_runs takes its store from here
    try:
        return mlflow.search_runs(experiment_ids, filter_string, output_format="pandas")
    finally:
        mlflow.set_tracking_uri(previous)


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """Every run matching the filter, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=5000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def completed_runs(client: MlflowClient, experiment: str) -> dict[str, RunRecord]:
    """Config hash -> the latest completed run of ``experiment`` with that config: FINISHED,
    or diverged (a result too: training it again would diverge again)."""
    with timed():
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return {}
        done: dict[str, RunRecord] = {}
        queries = (
            "tags.`lossbench.role` = 'run' and attributes.status = 'FINISHED'",
            "tags.`lossbench.role` = 'run' and tags.`lossbench.status` = 'diverged'",
        )
        for query in queries:
            for run in search_all(client, [found.experiment_id], query):
                record = RunRecord.of(run)
                key = record.tags.get("lossbench.config_hash", "")
                if key not in done or record.start_time > done[key].start_time:
                    done[key] = record
    return done


def latest_runs(client: MlflowClient, experiment: str) -> dict[str, RunRecord]:
    """Config hash -> ``experiment``'s run of that config: the latest completed one if there is
    one (see :func:`completed_runs`), else the latest of any status."""
    with timed():
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return {}
        latest: dict[str, RunRecord] = {}
        for run in search_all(client, [found.experiment_id], "tags.`lossbench.role` = 'run'"):
            record = RunRecord.of(run)
            key = record.tags.get("lossbench.config_hash", "")
            if key not in latest or record.start_time > latest[key].start_time:
                latest[key] = record
    return {**latest, **completed_runs(client, experiment)}


def _experiments(client: MlflowClient, experiment: str | None) -> list[Any]:
    if experiment is None:
        return list(client.search_experiments())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise NotInStore(f"no experiment {experiment!r} in this store; experiments: {names}")
    return [found]


def require_store(uri: str) -> None:
    """Raise :class:`NotInStore` for a local store whose database does not exist: a command
    that only reads never creates one (MLflow's client would)."""
    from lossbench.tracking.store import sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise NotInStore(
            f"no MLflow store at {db}: train something first (lossbench-train), or point "
            "MLFLOW_TRACKING_URI (or --uri) at your store"
        )


def load_sweep(uri: str, experiment: str | None = None, sweep_id: str | None = None) -> SweepRecord:
    """A sweep and its runs: ``sweep_id``, or the latest sweep (of ``experiment``, if given).
    Read straight from a verified SQL store (:mod:`lossbench.tracking.plain_sql`: MLflow is not
    imported), else through MLflow's API."""
    from lossbench.tracking import plain_sql

    require_store(uri)
    engine, _ = plain_sql.open_store(uri)
    if engine is None:
        return _load_sweep_api(uri, experiment, sweep_id)
    if experiment is None:
        ids = [i for i, _ in plain_sql.active_experiments(engine)]
    else:
        found_id = plain_sql.experiment_id(engine, experiment)
        if found_id is None:
            names = sorted(name for _, name in plain_sql.active_experiments(engine))
            raise NotInStore(f"no experiment {experiment!r} in this store; experiments: {names}")
        ids = [found_id]
    role = {"lossbench.role": "sweep", **({"lossbench.sweep_id": sweep_id} if sweep_id else {})}
    parents = plain_sql.search_runs(engine, ids, role, limit=1)
    if parents:
        sweep_id = str(parents[0].tags["lossbench.sweep_id"])
        experiment_id, parent_id = parents[0].experiment_id, parents[0].run_id
        parent_tags = dict(parents[0].tags)
    elif sweep_id:  # a sweep by another launcher may have runs and no parent
        found = plain_sql.search_runs(engine, ids, {"lossbench.sweep_id": sweep_id}, limit=1)
        if not found:
            raise NotInStore(f"no sweep {sweep_id!r} in {uri}")
        experiment_id, parent_id, parent_tags = found[0].experiment_id, None, {}
    else:
        where = f"experiment {experiment!r}" if experiment else "this store"
        raise NotInStore(f"no lossbench sweep in {where}: run `lossbench-train -m ...` first")
    in_sweep = {in_sweep_tag(sweep_id): "true", "lossbench.role": "run"}
    table = plain_sql.runs_table(plain_sql.search_runs(engine, [experiment_id], in_sweep))
    if table.empty:
        raise NotInStore(f"sweep {sweep_id} has no runs")
    runs = [RunRecord.from_row(row) for row in table.to_dict("records")]
    name = plain_sql.experiment_name(engine, experiment_id)
    return SweepRecord(uri, name, sweep_id, parent_id, parent_tags, runs, table)


def _load_sweep_api(uri: str, experiment: str | None, sweep_id: str | None) -> SweepRecord:
    """:func:`load_sweep` through MLflow's API."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = _experiments(client, experiment)
    ids = [e.experiment_id for e in experiments]
    role = "tags.`lossbench.role` = 'sweep'"
    which = f" and tags.`lossbench.sweep_id` = '{sweep_id}'" if sweep_id else ""
    parents = client.search_runs(
        ids, role + which, order_by=["attributes.start_time DESC"], max_results=1
    )
    if parents:
        parent = parents[0]
        sweep_id = parent.data.tags["lossbench.sweep_id"]
        experiment_id, parent_id, parent_tags = (
            parent.info.experiment_id,
            parent.info.run_id,
            dict(parent.data.tags),
        )
    elif sweep_id:  # a sweep by another launcher may have runs and no parent
        found = client.search_runs(ids, f"tags.`lossbench.sweep_id` = '{sweep_id}'", max_results=1)
        if not found:
            raise NotInStore(f"no sweep {sweep_id!r} in {uri}")
        experiment_id, parent_id, parent_tags = found[0].info.experiment_id, None, {}
    else:
        where = f"experiment {experiment!r}" if experiment else "this store"
        raise NotInStore(f"no lossbench sweep in {where}: run `lossbench-train -m ...` first")
    filter_string = sweep_runs_filter(sweep_id)
    table = runs_table(uri, [experiment_id], filter_string)
    if table.empty:
        raise NotInStore(f"sweep {sweep_id} has no runs")
    runs = [RunRecord.from_row(row) for row in table.to_dict("records")]
    name = client.get_experiment(experiment_id).name
    return SweepRecord(uri, name, sweep_id, parent_id, parent_tags, runs, table)


@dataclass(frozen=True)
class History:
    """One metric of one run as logged: the epochs it was logged at (1, 2, ... counting epochs
    trained: MLflow's step + 1) and its values there. Sparse where the run logged some epochs
    only (``tracking.log_every_n_epochs``, ``trainer.check_val_every_n_epoch``)."""

    epochs: tuple[int, ...] = ()
    values: tuple[float, ...] = ()

    @classmethod
    def every_epoch(cls, values: Sequence[float]) -> History:
        """Values of epochs 1, 2, 3, ...: a history logged at every epoch."""
        return cls(tuple(range(1, len(values) + 1)), tuple(float(v) for v in values))

    @property
    def dense(self) -> bool:
        """Whether every epoch from the first to the last was logged."""
        return self.epochs == tuple(range(1, len(self.epochs) + 1))

    def __len__(self) -> int:
        return len(self.values)


def metric_histories(uri: str, run_ids: Sequence[str], key: str) -> dict[str, History]:
    """Each run's logged values of one metric, by step (step = epoch - 1); a step written twice
    counts once, with its latest value. From a SQL store on a verified MLflow in a few queries
    (:func:`lossbench.tracking.plain_sql.metric_histories`, without MLflow; else
    :func:`lossbench.tracking.sql_batches.metric_histories`), else a ``get_metric_history``
    call per run."""
    from lossbench.tracking import plain_sql

    engine, _ = plain_sql.open_store(uri)
    if engine is not None:
        found: dict[str, Sequence[Any]] = plain_sql.metric_histories(engine, run_ids, key)
    else:
        from mlflow import MlflowClient

        from lossbench.tracking.sql_batches import batch_store
        from lossbench.tracking.sql_batches import metric_histories as bulk_histories

        client = MlflowClient(uri)
        store, _ = batch_store(client)
        if store is not None:
            found = bulk_histories(store, run_ids, key)
        else:
            found = {run_id: client.get_metric_history(run_id, key) for run_id in run_ids}
    histories = {}
    for run_id in run_ids:
        points = sorted(found[run_id], key=lambda m: (m.step, m.timestamp))
        by_step = {m.step: m.value for m in points}  # the latest write of each step
        histories[run_id] = History(
            tuple(step + 1 for step in by_step), tuple(float(v) for v in by_step.values())
        )
    return histories
