"""The command line itself: a multirun through ``lossbench-train -m`` records one sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import cross_path_approx


def sweep(
    tmp_path: Path, store_uri: str, experiment: str, *extra: str
) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "lossbench.train", "-m",
        "loss=cross_entropy,mse", "optimizer=sgd,adam",
        "trainer=smoke", "dataset.source.n_samples=200",
        f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path / experiment}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def sweep_records(store_uri: str, experiment: str) -> tuple[list, object]:
    client = MlflowClient(store_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags["lossbench.role"] == "run"]
    [parent] = [r for r in runs if r.data.tags["lossbench.role"] == "sweep"]
    return children, parent


def history(client: MlflowClient, run) -> dict[str, list[tuple[int, float]]]:  # noqa: ANN001
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
    }


@pytest.mark.slow
def test_two_by_two_multirun_is_one_sweep_however_it_is_launched(
    tmp_path: Path, store_uri: str
) -> None:
    """lossbench's launcher (runs stacked, in worker processes) and Hydra's basic launcher
    (each job trains alone) record the same sweep: same runs, params and metric values (to float
    rounding: stacked and alone are different code paths)."""
    client = MlflowClient(store_uri)
    records = {}
    for launcher in ("lossbench", "basic"):
        experiment = f"cli-{launcher}"
        done = sweep(tmp_path, store_uri, experiment, f"hydra/launcher={launcher}")
        assert done.returncode == 0, done.stderr[-3000:]
        children, parent = sweep_records(store_uri, experiment)
        assert len(children) == 4
        assert {r.info.status for r in [*children, parent]} == {"FINISHED"}
        sweep_id = parent.data.tags["lossbench.sweep_id"]
        assert {r.data.tags["lossbench.sweep_id"] for r in children} == {sweep_id}
        assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
        for job in range(4):  # Hydra's own per-job outputs are there too
            assert (tmp_path / experiment / str(job) / ".hydra" / "config.yaml").exists()
        records[launcher] = {r.info.run_name: r for r in children}

    stacked, alone = records["lossbench"], records["basic"]
    assert set(stacked) == set(alone) == {
        "moons-cross_entropy-sgd-constant-s0", "moons-cross_entropy-adam-constant-s0",
        "moons-mse-sgd-constant-s0", "moons-mse-adam-constant-s0",
    }  # fmt: skip
    assert {r.data.tags["lossbench.members"] for r in stacked.values()} == {"2"}
    assert {r.data.tags["lossbench.members"] for r in alone.values()} == {"1"}
    for name, run in stacked.items():
        assert run.data.params == alone[name].data.params
        assert (
            run.data.tags["lossbench.config_hash"] == alone[name].data.tags["lossbench.config_hash"]
        )
        a, b = history(client, run), history(client, alone[name])
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith("time/"):
                continue
            assert [s for s, _ in a[key]] == [s for s, _ in b[key]], key
            assert [v for _, v in a[key]] == cross_path_approx([v for _, v in b[key]]), key


@pytest.mark.slow
def test_bad_choice_fails_before_anything_runs(tmp_path: Path, store_uri: str) -> None:
    done = sweep(tmp_path, store_uri, "cli-bad", "scheduler=nope")
    assert done.returncode != 0
    assert "Could not find 'scheduler/nope'" in done.stderr
    assert "cosine" in done.stderr and "onecycle" in done.stderr
    assert MlflowClient(store_uri).get_experiment_by_name("cli-bad") is None


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be a number > 0"),
        (["+lr=0.1"], "unknown key lr=0.1: .*Did you mean optimizer.lr=0.1\\?"),
        (["-m", "optimizer.lr=0.1,-1"], "job #1 .*optimizer.lr=-1 must be a number > 0"),
        (["-m", "seed=0,1", "hydra.launcher.stack_by=optimizer"],
         "hydra.launcher.stack_by='optimizer' is not one of: recipe, seed_loss"),
        (["tracking.uri=http://127.0.0.1:9"], "tracking store http://127.0.0.1:9 is unreachable"),
        (["-m", "hydra/launcher=basic", "optimizer.lr=0.1,-1"], "optimizer.lr=-1 must be"),
        (["-m", "experiment=hpo", "hydra.sweeper.optuna.n_trials=2", "trainer.max_epochs=-3"],
         "job #0 .*max_epochs=-3 must be an integer >= 1"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_its_message_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """From the README's bad-input list: the message alone on stderr, as argparse's errors
    (no traceback, no HYDRA_FULL_ERROR hint), exit code 2, and no file left: no outputs or
    multirun folder, no sweep state, no store."""
    import re

    cmd = [sys.executable, "-m", "lossbench.train", *args, "trainer=smoke",
           "dataset.source.n_samples=200"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(f"lossbench-train: error: .*{message}", done.stderr), done.stderr[-3000:]
    assert "HYDRA_FULL_ERROR" not in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bench_lr_records_each_lr_and_the_report_picks_the_best_per_optimizer(
    tmp_path: Path, store_uri: str
) -> None:
    """A small experiment=bench_lr: each run records its optimizer's own lr, and the report's
    fair comparison (optimizer, best over optimizer.lr) reads them."""
    from lossbench.report import build_report

    cmd = [
        sys.executable, "-m", "lossbench.train", "experiment=bench_lr",
        "hydra.sweeper.params.optimizer='sgd,adam'", "hydra.sweeper.params.seed='0,1'",
        "hydra.sweeper.params.scheduler=constant", "trainer.max_epochs=2",
        "dataset.source.n_samples=200", "tracking.experiment=cli-bench-lr",
        f"hydra.sweep.dir={tmp_path / 'bench_lr'}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    children, _ = sweep_records(store_uri, "cli-bench-lr")
    lrs: dict[str, set[float]] = {}
    for run in children:
        lrs.setdefault(run.data.tags["lossbench.choice.optimizer"], set()).add(
            float(run.data.params["optimizer.lr"])
        )
    assert lrs == {
        "sgd": {0.003, 0.01, 0.03, 0.1, 0.3, 1.0},
        "adam": {3e-05, 0.0001, 0.0003, 0.001, 0.003, 0.01},
    }
    report = build_report(store_uri, experiment="cli-bench-lr")
    assert (report.scientific, report.nuisance) == ("optimizer", "optimizer.lr")
    best = {row["optimizer"]: float(row["best optimizer.lr"]) for _, row in report.fair.iterrows()}
    assert set(best) == {"sgd", "adam"}
    assert all(lr in lrs[name] for name, lr in best.items())
