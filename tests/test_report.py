"""lossbench-report: groups a sweep's runs by what it varied, and stays a light command."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lossbench import report
from lossbench.config import RunSpec
from lossbench.results import RunResult
from lossbench.tracking import Tracker


@pytest.fixture(scope="module")
def sweep_store(store_uri: str) -> str:
    """A sweep of 2 losses x 3 seeds with known final accuracies, one run failed."""
    tracker = Tracker(store_uri, "report")
    sweep = tracker.start_sweep(["loss=ce,mse", "seed=0,1,2"], "/tmp/sweep")
    for loss, base in (("cross_entropy", 0.9), ("mse", 0.8)):
        for seed in range(3):
            cfg = {"seed": seed, "dataset": {"name": "moons"}, "loss": {"_target_": loss}}
            choices = {
                "dataset": "moons",
                "loss": loss,
                "optimizer": "sgd",
                "scheduler": "constant",
            }
            spec = RunSpec(cfg, choices, [f"loss={loss}", f"seed={seed}"])
            run_id = tracker.start_run(spec, sweep=sweep)
            if loss == "mse" and seed == 2:
                tracker.finish_run(run_id, RunResult.failed("boom"))
                continue
            acc = base + 0.01 * seed
            result = RunResult(
                series={"val/acc": [0.5, acc], "train/loss": [1.0, 0.5]},
                final={"val/acc": acc, "train/loss": 0.5, "test/acc": acc - 0.05},
            )
            tracker.finish_run(run_id, result)
    tracker.end_sweep(sweep)
    return store_uri


def test_groups_by_the_varied_axis_with_failures_counted(sweep_store: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(sweep_store)
    experiment_id, sweep_id = report.latest_sweep(client, "report")
    runs = report.sweep_runs(client, experiment_id, sweep_id)
    assert report.sweep_axes(runs) == [f"{report.CHOICE}loss"]
    table = report.summarize(runs, "val/acc").set_index("loss")
    assert table.loc["cross_entropy", "n"] == 3 and table.loc["cross_entropy", "failed"] == 0
    assert table.loc["mse", "n"] == 2 and table.loc["mse", "failed"] == 1
    assert table.loc["cross_entropy", "val/acc mean"] == pytest.approx(0.91)
    assert table.loc["mse", "val/acc mean"] == pytest.approx(0.805)
    assert table.loc["cross_entropy", "val/acc std"] == pytest.approx(0.01)
    assert list(table.index) == ["cross_entropy", "mse"]  # best first


def test_unknown_experiment_is_a_clear_error(
    sweep_store: str, capsys: pytest.CaptureFixture
) -> None:
    assert report.main(["--tracking-uri", sweep_store, "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "report" in err


def test_report_is_a_light_command(sweep_store: str) -> None:
    """It reads MLflow only: neither Lightning nor torch is imported."""
    code = (
        "import sys; from lossbench import report; "
        f"rc = report.main(['--tracking-uri', {sweep_store!r}, '--experiment', 'report']); "
        "print('HEAVY', [m for m in ('pytorch_lightning', 'lightning', 'torch') if m in sys.modules]); "
        "sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert "cross_entropy" in done.stdout and "mse" in done.stdout
