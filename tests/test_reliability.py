"""What goes wrong during training is recorded, and goes no further than it must."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import FAST, assert_series_close
from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError, check_targets
from lossbench.fit.training import fit_members
from lossbench.tracking.store import StoreUnreachable, check_reachable
from lossbench.tracking.writer import Tracker
from lossbench.train import train

DIVERGING = ["tracking=none", "optimizer=sgd", "optimizer.lr=1000", "trainer.max_epochs=4",
             "dataset.source.n_samples=300"]  # fmt: skip


@pytest.mark.slow
def test_a_diverging_member_leaves_its_siblings_alone(make_spec) -> None:  # noqa: ANN001
    """At lr=1000, cross-entropy blows up in the first epoch; MSE on probabilities does not.
    Stacked together, the MSE member trains as it does alone (to float rounding: a stacked fit
    is another code path)."""
    specs = [make_spec([*DIVERGING, f"loss={loss}"]) for loss in ("mse", "cross_entropy")]
    data = check_run(specs[0])
    mse, ce = fit_members([s.cfg for s in specs], data)
    [alone] = fit_members([specs[0].cfg], data)
    assert mse.status == "FINISHED"
    assert_series_close(mse.series, alone.series)
    assert ce.status == "FAILED" and ce.diverged and ce.outcome == "diverged"
    epoch = int(ce.tags["lossbench.diverged_epoch"])
    assert len(ce.series["train/loss"]) == epoch  # the epochs before it: last finite metrics
    assert all(math.isfinite(v) for v in ce.series["train/loss"])
    assert not any(k.startswith("test/") for k in ce.final)
    assert ce.job_return()["diverged"] == 1.0


@pytest.mark.slow
def test_a_diverged_run_is_recorded_failed_with_its_epoch(make_spec, store_uri: str) -> None:  # noqa: ANN001
    spec = make_spec([*DIVERGING, "loss=cross_entropy", "tracking=mlflow", f"tracking.uri={store_uri}",
                      "tracking.experiment=diverge", "tracking.flush_every_s=0"])  # fmt: skip
    result = train(spec.cfg, spec.choices, spec.overrides)
    assert result.diverged
    client = MlflowClient(store_uri)
    [run] = client.search_runs([client.get_experiment_by_name("diverge").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["lossbench.status"] == "diverged"
    epoch = int(run.data.tags["lossbench.diverged_epoch"])
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(epoch))  # nothing from the diverged epoch


@pytest.mark.slow
def test_a_failing_member_fails_alone(make_spec) -> None:  # noqa: ANN001
    """A stack whose fit raises is retried one run at a time: only the failing run fails."""
    from lossbench.sweep.run import train_stack

    good = make_spec([*FAST, "tracking=none", "seed=0"])
    bad = make_spec([*FAST, "tracking=none", "seed=1", "loss._target_=failing.FailsInTraining"])
    ok, failed = train_stack([good.cfg, bad.cfg])
    [alone] = fit_members([good.cfg])
    # the retry trains it alone, as fit_members([cfg]) does: the same code path, so bit for bit
    assert ok.status == "FINISHED" and ok.series == alone.series
    assert failed.status == "FAILED" and "boom" in failed.error


@pytest.mark.slow
def test_an_exception_in_training_is_recorded_with_its_traceback(make_spec, store_uri: str) -> None:  # noqa: ANN001
    spec = make_spec([*FAST, "loss._target_=failing.FailsInTraining", f"tracking.uri={store_uri}",
                      "tracking.experiment=raises"])  # fmt: skip
    with pytest.raises(RuntimeError, match="boom"):
        train(spec.cfg, spec.choices, spec.overrides)
    client = MlflowClient(store_uri)
    [run] = client.search_runs([client.get_experiment_by_name("raises").experiment_id])
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["lossbench.error"]
    traceback = Path(client.download_artifacts(run.info.run_id, "traceback.txt")).read_text()
    assert traceback.startswith("Traceback") and "failing.py" in traceback


def test_unreachable_stores_fail_fast() -> None:
    with pytest.raises(StoreUnreachable, match="http://127.0.0.1:9 is unreachable"):
        check_reachable("http://127.0.0.1:9", timeout=2)
    with pytest.raises(StoreUnreachable, match="not writable|unreachable"):
        check_reachable("sqlite:////proc/lossbench/mlflow.db")


def test_unreachable_store_stops_a_run_before_training(make_spec) -> None:  # noqa: ANN001
    spec = make_spec([*FAST, "tracking.uri=http://127.0.0.1:9"])
    with pytest.raises(StoreUnreachable, match="tracking=none"):
        train(spec.cfg, spec.choices, spec.overrides)


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("torch.optim.Adam", True),
        ("torch.optim.lr_scheduler.StepLR", True),
        ("lossbench.problem.losses.Focal", True),
        ("pytorch_lightning.Trainer", True),
        ("os.system", False),
        ("builtins.eval", False),
        ("subprocess.run", False),
        ("pytorch_lightning.utilities.rank_zero.rank_zero_info", False),
    ],
)
def test_configs_from_a_store_may_only_name_allowed_targets(target: str, allowed: bool) -> None:
    crafted = {
        "optimizer": {"_target_": "torch.optim.SGD"},
        "dataset": {"source": {"nested": [{"_target_": target}]}},
    }
    if allowed:
        check_targets(crafted)
        return
    with pytest.raises(ConfigError, match=r"dataset.source.nested\[0\]._target_=.* is not allowed"):
        check_targets(crafted)


def test_reap_leaves_live_runs_alone(store_uri: str) -> None:
    """A RUNNING run whose writer is alive (this test process) is not stale."""
    from lossbench.config.spec import RunSpec

    tracker = Tracker(store_uri, "reap-live")
    run_id = tracker.start_run(RunSpec({"seed": 0, "dataset": {"name": "x"}}, {}, []))
    assert tracker.reap() == []
    assert MlflowClient(store_uri).get_run(run_id).info.status == "RUNNING"


def test_ui_binds_localhost_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """``lossbench-ui`` (what ``make ui`` runs) serves 127.0.0.1 only; ``--host`` is obeyed,
    with a warning. The command it would replace itself with is captured instead of run."""
    from lossbench import ui

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    executed: list[list[str]] = []
    monkeypatch.setattr(ui.os, "execv", lambda path, args: executed.append(list(args)))

    def host(command: list[str]) -> str:
        return command[command.index("--host") + 1]

    ui.main([])
    assert host(executed[-1]) == "127.0.0.1"
    assert "exposes" not in capsys.readouterr().err
    ui.main(["--host", "0.0.0.0"])
    assert host(executed[-1]) == "0.0.0.0"
    assert "--host 0.0.0.0 exposes the store to the network" in capsys.readouterr().err
