"""Reading a sweep straight from MLflow's SQL tables (``lossbench.tracking.plain_sql``, the
report's path where verified) gives what MLflow's API gives, and writes what its client
writes; anything it does not verify goes through the API."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lossbench.config.spec import RunSpec
from lossbench.results import RunResult
from lossbench.tracking import plain_sql, records, sql_batches
from lossbench.tracking.artifacts import DESCRIPTION_TAG, log_report, set_description
from lossbench.tracking.records import load_sweep
from lossbench.tracking.writer import Tracker


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_uri(request: pytest.FixtureRequest, store_uri: str) -> str:
    """A SQL store: the session's SQLite store, or a PostgreSQL database."""
    return store_uri if request.param == "sqlite" else request.getfixturevalue("postgres_uri")


def run_spec(seed: int, lr: float) -> RunSpec:
    cfg = {"seed": seed, "dataset": {"name": "moons"},
           "optimizer": {"_target_": "torch.optim.SGD", "lr": lr}}  # fmt: skip
    choices = {"dataset": "moons", "loss": "mse", "optimizer": "sgd"}
    return RunSpec(cfg, choices, [f"optimizer.lr={lr}", f"seed={seed}"])


def two_sweeps(uri: str, experiment: str, tmp_path: Path) -> tuple[str, str, str]:
    """Two sweeps in one experiment: the first with finished, failed, NaN-metric, metric-less
    and deleted runs; the second (the latest) with one run. Returns both sweep ids and the
    deleted run's id."""
    tracker = Tracker(uri, experiment)
    first = tracker.start_sweep(
        f"a-{experiment}", ["seed=0,1"], str(tmp_path), {"metric": "val/acc"}
    )
    results = [
        RunResult({"val/acc": [0.5, 0.7]}, {"val/acc": 0.7, "test/acc": 0.68}),
        RunResult({"val/acc": [0.5, 0.6]}, {"val/acc": 0.6, "train/loss": float("nan")}),
        RunResult.failed("Traceback: boom"),
        RunResult({"val/acc": [0.4]}, {"val/acc": 0.4}),
    ]
    ids = [tracker.start_run(run_spec(seed, 0.1 * (1 + seed % 2)), {"task": "binary"}, first)
           for seed in range(len(results))]  # fmt: skip
    for run_id, result in zip(ids, results, strict=True):
        tracker.finish_run(run_id, result)
    tracker.client.delete_run(ids[-1])  # deleted: neither path shows it
    tracker.end_sweep(first)
    second = tracker.start_sweep(f"b-{experiment}", ["seed=0"], str(tmp_path))
    run_id = tracker.start_run(run_spec(0, 0.1), {"task": "binary"}, second)
    tracker.finish_run(run_id, results[0])
    return first.sweep_id, second.sweep_id, ids[-1]


def test_a_sweep_reads_as_mlflows_api_reads_it(
    sql_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a PostgreSQL store keeps artifacts under ./mlruns
    experiment = f"plain-{uuid.uuid4().hex[:8]}"
    first, second, deleted = two_sweeps(sql_uri, experiment, tmp_path)
    assert plain_sql.open_store(sql_uri)[0] is not None  # the path under test is taken
    for which in ((experiment, None), (experiment, first), (None, None), (None, first)):
        plain, api = load_sweep(sql_uri, *which), records._load_sweep_api(sql_uri, *which)
        assert plain.sweep_id == api.sweep_id == (which[1] or second)
        assert (plain.experiment, plain.parent_run_id, plain.tags) == (
            api.experiment, api.parent_run_id, api.tags,
        )  # fmt: skip
        assert plain.runs == api.runs  # in the same order, with the same values
        # MLflow orders the columns of each prefix as a set iterates: compared by name
        pd.testing.assert_frame_equal(plain.table.sort_index(axis=1), api.table.sort_index(axis=1))
    sweep = load_sweep(sql_uri, experiment, first)
    assert len(sweep.runs) == 3 and deleted not in {r.run_id for r in sweep.runs}
    assert sorted(r.outcome for r in sweep.runs) == ["failed", "finished", "finished"]
    nan_run = sweep.table[sweep.table["params.optimizer.lr"] == "0.2"]
    assert nan_run["metrics.train/loss"].isna().all()  # NaN, as MLflow reads it
    with pytest.raises(records.NotInStore, match=f"no experiment 'nope'.*{experiment}"):
        load_sweep(sql_uri, "nope")
    with pytest.raises(records.NotInStore, match="no sweep 'nope'"):
        load_sweep(sql_uri, experiment, "nope")


def tree(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, bytes]:
    """Every artifact file of a run, path -> content, as MLflow's API lists and reads them."""
    found = {}
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            found.update(tree(client, run_id, info.path))
        else:
            found[info.path] = Path(client.download_artifacts(run_id, info.path)).read_bytes()
    return found


def test_a_report_attached_reads_back_as_mlflows_client_writes_it(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Description and artifacts, written straight and through MLflow's client: the same on
    each run as MLflow's API reads them; a second write replaces the first."""
    report = tmp_path / "report"
    (report / "plots").mkdir(parents=True)
    (report / "report.md").write_text("# a report")
    (report / "plots" / "bars.png").write_bytes(b"\x89PNG bars")
    single = tmp_path / "claims.md"
    single.write_text("claims")
    tracker = Tracker(store_uri, "attach")
    straight, api = (tracker.start_run(run_spec(0, 0.1)) for _ in range(2))  # same files
    client = MlflowClient(store_uri)
    for run_id in (straight, api):
        with monkeypatch.context() as m:
            if run_id == api:
                m.setattr(plain_sql, "open_store", lambda uri: (None, "not verified"))
            for text in ("first", "| a | b |\n" * 600):  # replaced, not added to
                set_description(store_uri, run_id, text)
            log_report(store_uri, run_id, report)
            log_report(store_uri, run_id, single, "claims-report")
    tags = [client.get_run(run_id).data.tags for run_id in (straight, api)]
    assert tags[0].keys() == tags[1].keys()
    assert tags[0][DESCRIPTION_TAG] == tags[1][DESCRIPTION_TAG] == "| a | b |\n" * 600
    written = tree(client, straight)
    assert written == tree(client, api)
    assert {"report/report.md": b"# a report", "report/plots/bars.png": b"\x89PNG bars",
            "claims-report/claims.md": b"claims"}.items() <= written.items()  # fmt: skip
    client.delete_run(straight)  # MLflow's client says why it cannot: so does this path
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        set_description(store_uri, straight, "again")


def test_what_is_not_verified_goes_through_mlflows_api(
    store_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    MlflowClient(store_uri).search_experiments()  # the session store exists
    db = str(store_uri).removeprefix("sqlite:///")
    revision = sqlite3.connect(db).execute("SELECT version_num FROM alembic_version").fetchone()
    import mlflow

    # the schema the installed MLflow creates is the one verified for it
    assert plain_sql.VERIFIED_SCHEMA[mlflow.__version__] == revision[0]
    assert set(plain_sql.VERIFIED_SCHEMA) == set(sql_batches.VERIFIED_MLFLOW)
    engine, why = plain_sql.open_store(store_uri)
    assert engine is not None, why
    missing = tmp_path / "none" / "mlflow.db"
    assert plain_sql.open_store(f"sqlite:///{missing}")[0] is None
    assert not missing.parent.exists()  # nothing created
    assert "read through MLflow's API" in plain_sql.open_store("http://127.0.0.1:5000")[1]
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
        assert "workspaces" in plain_sql.open_store(store_uri)[1]
    with monkeypatch.context() as m:
        m.setattr(plain_sql, "VERIFIED_SCHEMA", {mlflow.__version__: "0123456789ab"})
        assert plain_sql.open_store(store_uri)[1] == (
            f"schema revision {revision[0]}, not MLflow {mlflow.__version__}'s"
        )
    with monkeypatch.context() as m:
        m.setattr(plain_sql, "VERIFIED_SCHEMA", {"0.0.1": revision[0]})
        assert "not a version" in plain_sql.open_store(store_uri)[1]
