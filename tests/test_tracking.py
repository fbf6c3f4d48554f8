"""MLflow records: what lossbench writes reads back through MLflow's API as MLflow's own calls
would have written it, on every write path and store."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlflow import MlflowClient

from lossbench.config.spec import RunSpec
from lossbench.problem.data import SplitData
from lossbench.results import RunResult
from lossbench.tracking import plain_sql, sql_batches, store
from lossbench.tracking.datasets import run_facts
from lossbench.tracking.payloads import batches, flatten, run_name
from lossbench.tracking.records import History, metric_histories
from lossbench.tracking.store import StoreUnreachable, check_reachable, tracking_uri
from lossbench.tracking.writer import Tracker

RESULT = RunResult(
    series={"train/loss": [0.9, 0.5, float("nan")], "val/acc": [0.5, 0.75, 0.8]},
    final={"train/loss": float("nan"), "val/acc": 0.8, "test/acc": 0.78, "time/seconds": 1.5},
    tags={"lossbench.cpu_capability": "AVX2"},
)
# SQL vs API is a comparison across code paths, so metric values are compared within a stated
# tolerance. Both paths store the same Python floats, so they should agree exactly; 1e-12
# relative only allows a database that round-trips doubles through text.
SQL_VS_API_RTOL = 1e-12


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


def split_data() -> SplitData:
    """Six rows of two features, split 4/1/1."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 1, 0])
    return SplitData("moons", "binary", 2, x[:4], y[:4], x[4:5], y[4:5], x[5:], y[5:])


FACTS = run_facts(
    {"name": "moons", "source": {"_target_": "lossbench.problem.sources.moons"}}, 0, split_data()
)


def record(
    tracker: Tracker, flush_first: bool = False, error: str | None = None, live: bool = False
) -> str:
    """Record RESULT (or a FAILED copy with ``error``): all at the end; or its first two
    epochs first, as a single run in this process writes them (``flush_first``) or as live
    curves of a stack do (``live``), the rest at the end."""
    run_id = tracker.start_run(spec(), FACTS)
    result = RESULT
    if error is not None:
        result = RunResult(RESULT.series, RESULT.final, 0, "FAILED", error, dict(RESULT.tags))
    if live:
        first = {k: v[:1] for k, v in RESULT.series.items()}
        tracker.log_live([run_id], [first], [0])
        tracker.log_live([run_id], [{k: v[:2] for k, v in RESULT.series.items()}], [1])
        tracker.finish_runs([run_id], [result], [2])
        return run_id
    written = 0
    if flush_first:
        tracker.log_epochs(run_id, {k: v[:2] for k, v in RESULT.series.items()})
        written = 2
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
        "latest": run.data.metrics,
        "history": {
            key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
            for key in run.data.metrics
        },
        "artifacts": sorted(f.path for f in client.list_artifacts(run_id)),
        "inputs": [
            (i.dataset.to_dictionary(), {t.key: t.value for t in i.tags})
            for i in run.inputs.dataset_inputs
        ],
    }


def same_value(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=SQL_VS_API_RTOL)


def assert_same_run(a: dict, b: dict) -> None:
    """Equal records: metric values within the stated tolerance, everything else exactly."""
    assert {k: v for k, v in a.items() if k not in ("latest", "history")} == {
        k: v for k, v in b.items() if k not in ("latest", "history")
    }
    assert a["latest"].keys() == b["latest"].keys()
    for key, value in a["latest"].items():
        assert same_value(value, b["latest"][key]), key
    for key, points in a["history"].items():
        other = b["history"][key]
        assert [s for s, _ in points] == [s for s, _ in other], key
        assert all(same_value(x, y) for (_, x), (_, y) in zip(points, other, strict=True)), key


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_uri(request: pytest.FixtureRequest, store_uri: str) -> str:
    """A SQL store: the session's SQLite store, or a PostgreSQL database."""
    return store_uri if request.param == "sqlite" else request.getfixturevalue("postgres_uri")


@pytest.mark.parametrize("error", [None, "Traceback: boom"])
def test_sql_batches_read_back_as_mlflow_api_writes(
    sql_uri: str, error: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a PostgreSQL store keeps artifacts under ./mlruns
    client = MlflowClient(sql_uri)
    assert sql_batches.batch_store(client)[0] is not None  # this MLflow is one the path verifies
    batched = record(Tracker(sql_uri, "writer", sql_batches=True), error=error)
    api = record(Tracker(sql_uri, "writer", sql_batches=False), error=error)
    flushed = record(Tracker(sql_uri, "writer", sql_batches=False), flush_first=True, error=error)
    batched_live = record(Tracker(sql_uri, "writer", sql_batches=True), error=error, live=True)
    api_live = record(Tracker(sql_uri, "writer", sql_batches=False), error=error, live=True)
    a, b, *others = (readback(client, r) for r in (batched, api, flushed, batched_live, api_live))
    assert_same_run(a, b)
    for other in others:  # written in parts: the same history, once, and the same latest values
        assert_same_run(a, other)
    assert a["info"]["status"] == (3 if error is None else 4)  # FINISHED, FAILED
    assert a["tags"]["mlflow.runName"] == "moons-focal-sgd-cosine-s3"
    assert a["tags"]["lossbench.cpu_capability"] == "AVX2"  # a result's tags reach the store
    assert a["tags"].get("lossbench.error") == error
    assert set(a["latest"]) == {"train/loss", "val/acc", "test/acc", "time/seconds"}
    assert a["history"]["val/acc"] == [(0, 0.5), (1, 0.75), (2, 0.8)]  # written, read: one path
    expected = ["config.yaml", "overrides.yaml"] + ([] if error is None else ["traceback.txt"])
    assert a["artifacts"] == expected
    assert [tags["mlflow.data.context"] for _, tags in a["inputs"]] == [
        "train", "validation", "test",
    ]  # fmt: skip
    assert {dataset["name"] for dataset, _ in a["inputs"]} == {"moons"}
    found = client.search_runs(
        [client.get_run(batched).info.experiment_id], "dataset.name = 'moons'"
    )
    assert {batched, api, flushed} <= {r.info.run_id for r in found}
    if error is not None:
        assert Path(client.download_artifacts(batched, "traceback.txt")).read_text() == error


@pytest.mark.parametrize("path", ["plain", "bulk", "run-by-run"])
def test_metric_histories_read_what_the_api_reads_run_by_run(
    sql_uri: str, path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(sql_uri, "histories")
    runs = [tracker.start_run(spec()) for _ in range(4)]
    series = {"val/acc": [0.5, float("nan"), 0.8]}
    tracker.log_epochs(runs[3], {"val/acc": series["val/acc"][:2]})  # written in two parts
    for i, run_id in enumerate(runs):
        tracker.finish_run(run_id, RunResult(series, {"val/acc": 0.8}), 2 if i == 3 else 0)
    monkeypatch.setattr(plain_sql, "RUNS_PER_QUERY", 3)  # four runs: two queries
    monkeypatch.setattr(sql_batches, "RUNS_PER_QUERY", 3)
    if path != "plain":  # MLflow's SQL store in bulk, or the API run by run (an HTTP server)
        monkeypatch.setattr(plain_sql, "open_store", lambda uri: (None, "not verified"))
    if path == "run-by-run":
        monkeypatch.setattr(sql_batches, "batch_store", lambda client: (None, "not SQL"))
    client = MlflowClient(sql_uri)
    by_step = {
        run_id: [m.value for m in sorted(client.get_metric_history(run_id, "val/acc"),
                                         key=lambda m: (m.step, m.timestamp))]
        for run_id in runs
    }  # fmt: skip
    histories = metric_histories(sql_uri, runs, "val/acc")
    got = {run_id: list(h.values) for run_id, h in histories.items()}
    assert got.keys() == by_step.keys()
    for run_id, values in by_step.items():  # NaN as NaN
        assert np.array_equal(got[run_id], values, equal_nan=True), run_id
    assert {len(v) for v in by_step.values()} == {3}
    assert {h.epochs for h in histories.values()} == {(1, 2, 3)}
    assert metric_histories(sql_uri, runs[:1], "no/such") == {runs[0]: History()}


def test_a_run_is_one_create_its_params_its_inputs_one_log_batch_and_one_terminate(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    names = ("create_run", "log_inputs", "log_batch", "set_terminated", "log_param", "log_metric",
             "set_tag")  # fmt: skip
    for name in names:
        original = getattr(MlflowClient, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(MlflowClient, name, counted)
    tracker = Tracker(store_uri, "calls", sql_batches=False)
    tracker.experiment_id  # noqa: B018 (create the experiment before counting)
    calls.clear()
    record(tracker)
    # params at creation (a running run shows its config), metrics and result tags at the end
    assert calls == ["create_run", "log_batch", "log_inputs", "log_batch", "set_terminated"]


@pytest.mark.parametrize("sql", [False, True], ids=["api", "sql"])
def test_a_running_run_has_its_params_and_is_found_by_them(store_uri: str, sql: bool) -> None:
    tracker = Tracker(store_uri, f"params-at-start-{sql}", sql_batches=sql)
    run_id = tracker.start_run(spec(), FACTS)
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.params["optimizer.lr"] == "0.1"
    assert run.data.params["data.task"] == "binary"  # the data's facts too
    [found] = client.search_runs([tracker.experiment_id], "params.`optimizer.lr` = '0.1'")
    assert found.info.run_id == run_id
    tracker.finish_run(run_id, RESULT)
    assert client.get_run(run_id).data.params == run.data.params  # not written again


@pytest.mark.parametrize("setting", ["auto", True])
def test_an_unverified_mlflow_writes_through_the_api_saying_why_once(
    store_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    setting: str | bool,
) -> None:
    from lossbench.tracking import writer

    monkeypatch.setattr(sql_batches, "VERIFIED_MLFLOW", ("0.0.1",))
    monkeypatch.setattr(writer, "_announced", set())
    tracker = Tracker(store_uri, f"unverified-{setting}", sql_batches=setting)
    run_id = record(tracker)
    record(Tracker(store_uri, f"unverified-{setting}", sql_batches=setting))
    notices = [line for line in capsys.readouterr().err.splitlines() if "writing runs" in line]
    assert len(notices) == 1 and "with MLflow's API: " in notices[0]
    assert "not a version the SQL path was verified against (0.0.1)" in notices[0]
    assert ("asked for (tracking.sql_batches=true)" in notices[0]) == (setting is True)
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["optimizer.lr"] == "0.1"


def test_the_sql_path_is_the_default_where_verified_and_says_so(
    store_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from lossbench.tracking import writer
    from lossbench.tracking.write_paths import ApiPath, SqlPath

    monkeypatch.setattr(writer, "_announced", set())
    assert isinstance(Tracker(store_uri, "default-path").path, SqlPath)
    assert "with batched SQL: a sqlite store on MLflow" in capsys.readouterr().err
    assert isinstance(Tracker(store_uri, "default-path", sql_batches=False).path, ApiPath)
    assert "with MLflow's API: tracking.sql_batches=false" in capsys.readouterr().err


def test_batches_respect_mlflow_limits_and_lose_nothing() -> None:
    metrics, params, tags = list(range(2500)), list(range(250)), list(range(30))
    split = list(batches(metrics, params, tags))
    for some_metrics, some_params, some_tags in split:
        assert len(some_metrics) <= 1000 and len(some_params) <= 100 and len(some_tags) <= 100
        assert len(some_metrics) + len(some_params) + len(some_tags) <= 1000
    assert [m for b in split for m in b[0]] == metrics
    assert [p for b in split for p in b[1]] == params
    assert [t for b in split for t in b[2]] == tags
    assert len(list(batches(range(500), range(40), range(10)))) == 1  # a typical run: one call


def test_params_are_the_flat_config_without_store_paths(store_uri: str) -> None:
    run_id = record(Tracker(store_uri, "params", sql_batches=False))
    params = MlflowClient(store_uri).get_run(run_id).data.params
    assert params == {
        "data.task": "binary",  # SplitData.summary(); the dataset's description is inputs
        "data.n_features": "2",
        "data.n_classes": "2",
        "data.n_train": "4",
        "data.n_val": "1",
        "data.n_test": "1",
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


def _schema_and_experiments(db: Path) -> tuple[list[Any], list[Any]]:
    import sqlite3

    with sqlite3.connect(db) as connection:
        schema = connection.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        version = connection.execute("SELECT * FROM alembic_version")
        experiments = connection.execute(
            "SELECT experiment_id, name, artifact_location, lifecycle_stage FROM experiments"
        )
        # a table's constraints come in no fixed order from MLflow's migrations (two stores
        # made in place differ in it too): compared as a set of lines
        tables = [
            (kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
            for kind, name, sql in schema.fetchall()
        ]
        return [*tables, *version.fetchall()], experiments.fetchall()


@pytest.mark.slow
def test_a_store_prepared_ahead_is_the_store_made_in_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A sweep makes a new SQLite store's schema while its workers start, outside the user's
    directories (nothing is written there before the checks pass); open_client puts it in
    place: the same schema, migrations and default experiment as a store made in place. A
    store that appeared meanwhile is kept as it is."""
    monkeypatch.chdir(tmp_path)  # MLflow's default experiment keeps its artifacts under here
    ahead, in_place = tmp_path / "ahead" / "mlflow.db", tmp_path / "in-place" / "mlflow.db"
    store.prepare_store(f"sqlite:///{ahead}")
    made = store._prepared[f"sqlite:///{ahead}"].db
    assert made is not None and made.exists() and not ahead.parent.exists()
    store.open_client(f"sqlite:///{ahead}")
    store.open_client(f"sqlite:///{in_place}")
    assert _schema_and_experiments(ahead) == _schema_and_experiments(in_place)
    assert not made.parent.exists()  # the temporary directory is gone

    meanwhile = tmp_path / "meanwhile" / "mlflow.db"
    store.prepare_store(f"sqlite:///{meanwhile}")
    MlflowClient(f"sqlite:///{meanwhile}").create_experiment("made meanwhile")
    client = store.open_client(f"sqlite:///{meanwhile}")
    assert client.get_experiment_by_name("made meanwhile") is not None


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("postgresql+psycopg2://lossbench@127.0.0.1:5432/mlflow", r"'psycopg2'.*\.\[team\]"),
        ("postgresql://lossbench@127.0.0.1:5432/mlflow", r"'psycopg'.*postgresql\+psycopg2://"),
    ],
)
def test_a_postgresql_store_without_its_driver_says_what_to_install(
    uri: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for driver in ("psycopg", "psycopg2"):  # as if neither were installed
        monkeypatch.setitem(sys.modules, driver, None)
    with pytest.raises(StoreUnreachable, match=message):
        check_reachable(uri)


def test_light_commands_load_neither_torch_lightning_nor_hydra() -> None:
    import subprocess

    code = (
        "import sys, lossbench.report, lossbench.reap, lossbench.ui\n"
        "print(sorted(m for m in ('torch', 'pytorch_lightning', 'lightning', 'hydra')"
        " if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


LONG = RunResult(
    series={"train/loss": [1.0 / (e + 1) for e in range(23)], "val/acc": [0.5] * 23},
    final={"train/loss": 1.0 / 23, "val/acc": 0.5, "test/acc": 0.5},
)


@pytest.mark.parametrize(
    ("every", "flushes", "steps"),
    [
        (1, [], list(range(23))),
        (10, [], [0, 10, 20, 22]),
        (10, [10, 20], [0, 10, 20, 22]),  # live writes of the first 10 and 20 epochs, then the rest
        # live writes that reached the last epoch before the run ended (a slow end of fit):
        # the last epoch is off the grid, so the end writes it (it was lost)
        (10, [10, 20, 23], [0, 10, 20, 22]),
        (3, [1, 4, 23], [*range(0, 23, 3), 22]),
        (11, [], [0, 11, 22]),  # the last epoch is on the grid: written once
        (11, [23], [0, 11, 22]),
        (50, [], [0, 22]),
    ],
)
@pytest.mark.parametrize("sql", [False, True], ids=["api", "sql"])
def test_log_every_n_epochs_records_every_nth_epoch_and_the_last(
    store_uri: str, every: int, flushes: list[int], steps: list[int], sql: bool
) -> None:
    """tracking.log_every_n_epochs keeps every n-th epoch of each curve and always the last
    one (the run's latest value), each once, whether written at the end or partly while
    training, on both write paths."""
    tracker = Tracker(store_uri, "log-every", log_every_n_epochs=every, sql_batches=sql)
    run_id = tracker.start_run(spec(), {"task": "binary", "n_train": 10})
    written = 0
    for n in flushes:
        tracker.log_epochs(run_id, {k: v[:n] for k, v in LONG.series.items()}, start=written)
        written = n
    tracker.finish_run(run_id, LONG, written_epochs=written)
    client = MlflowClient(store_uri)
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == steps
    assert [m.value for m in history] == [LONG.series["train/loss"][s] for s in steps]
    assert client.get_run(run_id).data.metrics["train/loss"] == pytest.approx(1.0 / 23)
    [test_acc] = client.get_metric_history(run_id, "test/acc")
    assert test_acc.step == 22


def test_a_bad_log_every_n_epochs_is_refused_before_training(make_spec) -> None:  # noqa: ANN001
    from lossbench.config.checks import check_run
    from lossbench.config.spec import ConfigError

    with pytest.raises(
        ConfigError, match=r"tracking\.log_every_n_epochs=0 must be an integer >= 1"
    ):
        check_run(make_spec(["tracking.log_every_n_epochs=0"]))


@pytest.mark.parametrize(("value", "shown"), [("-1", "-1"), ("soon", "'soon'"), ("true", "True")])
def test_a_bad_flush_every_s_is_refused_before_training(make_spec, value: str, shown: str) -> None:  # noqa: ANN001
    from lossbench.config.checks import check_run
    from lossbench.config.spec import ConfigError

    with pytest.raises(ConfigError, match=rf"tracking\.flush_every_s={shown}.*>= 0.*or null"):
        check_run(make_spec([f"tracking.flush_every_s={value}"]))


@pytest.mark.parametrize("sql", [False, True])
def test_a_dataset_added_by_another_writer_meanwhile_is_written_again(
    store_uri: str, sql: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sweeps writing the same dataset into one experiment at once: MLflow's lookup-then-
    insert of the dataset breaks its unique constraint in one of them. That write is rolled
    back and made once more; the run is created with its inputs (seen in a parallel-writers run)."""
    tracker = Tracker(store_uri, f"duplicate-dataset-{sql}", sql_batches=sql)
    target = (sql_batches, "create_runs") if sql else (tracker.client, "log_inputs")
    real, calls = getattr(*target), []

    store = tracker.client._tracking_client.store  # the SQL store behind the client

    def once_a_duplicate(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # a real constraint violation, wrapped as MLflow's store wraps it
            from mlflow.store.tracking.dbmodels.models import SqlExperimentTag
            from sqlalchemy import insert

            row = {"key": "duplicate", "value": "x", "experiment_id": tracker.experiment_id}
            with store.ManagedSessionMaker() as session:
                session.execute(insert(SqlExperimentTag.__table__), [row, row])
        return real(*args, **kwargs)

    monkeypatch.setattr(*target, once_a_duplicate)
    run_id = tracker.start_run(spec(), FACTS)
    assert len(calls) == 2
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "RUNNING" and len(run.inputs.dataset_inputs) == 3


def test_only_an_integrity_error_is_written_again() -> None:
    """By the database's error class in the chain, not by its words (MySQL says "Duplicate
    entry", SQLite "UNIQUE constraint failed")."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import IntegrityError, OperationalError

    from lossbench.tracking.write_paths import integrity_error

    def wrapped(cause: Exception) -> MlflowException:
        try:
            raise MlflowException(str(cause)) from cause
        except MlflowException as err:
            return err

    mysql = IntegrityError("INSERT INTO datasets ...", {}, Exception("1062, Duplicate entry"))
    assert integrity_error(wrapped(mysql))
    assert not integrity_error(wrapped(OperationalError("SELECT", {}, Exception("locked"))))
    assert not integrity_error(MlflowException("UNIQUE constraint failed: datasets.name"))


def test_a_sweeps_state_is_never_read_half_written(tmp_path: Path) -> None:
    """Jobs read the sweep's file without its lock while the launcher rewrites it: each write
    replaces the file whole."""
    import threading

    from lossbench.tracking import sweeps

    sweeps.open_sweep(tmp_path, ["seed=" + "1," * 2000], {"metric": "val/acc"})
    stop, errors = threading.Event(), []

    def rewrite() -> None:
        while not stop.is_set():
            with sweeps._locked_state(tmp_path) as state:
                state["overrides"] = list(reversed(state["overrides"]))

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        for _ in range(300):
            try:
                assert sweeps._read(tmp_path)["report"] == {"metric": "val/acc"}
            except ValueError as err:  # a JSON decode error: a half-written file
                errors.append(err)
    finally:
        stop.set()
        writer.join()
    assert not errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lossbench-sweep.json",
        "lossbench-sweep.lock",
    ]
