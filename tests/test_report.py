"""lossbench-report on a fixture sweep with known values: aggregates, CIs, tests, censoring,
failures, files, MLflow artifacts, errors; and it stays a light command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as st

from lossbench import report
from lossbench.config import RunSpec
from lossbench.results import RunResult
from lossbench.tracking.writer import Tracker

# val/acc histories: ce learns faster than mse; lr=0.1 beats lr=0.01 on validation
FINAL = {
    ("cross_entropy", 0.1): [0.90, 0.92, 0.94],
    ("cross_entropy", 0.01): [0.85, 0.86, 0.87],
    ("mse", 0.1): [0.80, 0.83, 0.81],
    ("mse", 0.01): [0.78, 0.79, 0.80],
}
TEST_OFFSET = -0.02


def history(final: float, epochs: int = 5) -> list[float]:
    return list(np.linspace(0.5, final, epochs))


@pytest.fixture(scope="module")
def sweep_store(store_uri: str) -> str:
    """2 losses x 2 learning rates x 3 seeds with known values; mse lr=0.01 seed 2 failed."""
    tracker = Tracker(store_uri, "report")
    sweep = tracker.start_sweep("report-sweep", ["loss=ce,mse", "optimizer.lr=0.1,0.01", "seed=0,1,2"],
                                "/tmp/sweep", {"metric": "val/acc", "target": 0.85})  # fmt: skip
    for (loss, lr), finals in FINAL.items():
        for seed, final in enumerate(finals):
            cfg = {"seed": seed, "dataset": {"name": "moons"}, "loss": {"_target_": loss},
                   "optimizer": {"_target_": "torch.optim.SGD", "lr": lr}}  # fmt: skip
            choices = {
                "dataset": "moons",
                "loss": loss,
                "optimizer": "sgd",
                "scheduler": "constant",
            }
            spec = RunSpec(cfg, choices, [f"loss={loss}", f"optimizer.lr={lr}", f"seed={seed}"])
            run_id = tracker.start_run(spec, {"task": "binary"}, sweep)
            if (loss, lr, seed) == ("mse", 0.01, 2):
                tracker.finish_run(run_id, RunResult.failed("Traceback: boom"))
                continue
            series = {"val/acc": history(final), "train/loss": list(np.linspace(1, 0.1, 5))}
            final_metrics = {
                "val/acc": final,
                "train/loss": 0.1,
                "test/acc": final + TEST_OFFSET,
                "time/seconds": 2.0,
            }
            tracker.finish_run(run_id, RunResult(series, final_metrics))
    tracker.end_sweep(sweep)
    return store_uri


@pytest.fixture(scope="module")
def built(sweep_store: str) -> report.Report:
    return report.build_report(sweep_store, "report", scientific="loss", nuisance="optimizer.lr")


def row(built: report.Report, loss: str, lr: float):  # noqa: ANN201
    s = built.summary
    return s[(s["loss"] == loss) & (s["optimizer.lr"] == str(lr))].iloc[0]


def test_axes_are_found_and_seed_left_out(built: report.Report) -> None:
    assert built.axes == ["loss", "optimizer.lr"]
    assert built.metric == "val/acc" and built.target == 0.85
    assert len(built.summary) == 4


def test_aggregates_equal_hand_computed_values(built: report.Report) -> None:
    r = row(built, "cross_entropy", 0.1)
    values = FINAL[("cross_entropy", 0.1)]
    assert r["val/acc mean"] == pytest.approx(np.mean(values))
    assert r["val/acc std"] == pytest.approx(np.std(values, ddof=1))
    low, high = st.t.interval(0.95, 2, loc=np.mean(values), scale=st.sem(values))
    assert (r["val/acc ci_low"], r["val/acc ci_high"]) == (pytest.approx(low), pytest.approx(high))
    assert r["test/acc mean"] == pytest.approx(np.mean(values) + TEST_OFFSET)
    assert r["best val/acc mean"] == pytest.approx(np.mean(values))
    assert r["time/seconds mean"] == pytest.approx(2.0)
    assert built.summary["group"].iloc[0] == "loss=cross_entropy optimizer.lr=0.1"  # best first


def test_failed_run_is_counted_not_averaged(built: report.Report) -> None:
    r = row(built, "mse", 0.01)
    assert (r["runs"], r["finished"], r["failed"]) == (3, 2, 1)
    assert r["val/acc mean"] == pytest.approx(np.mean([0.78, 0.79]))


def test_censored_runs(built: report.Report) -> None:
    """Target 0.85: the histories end at their finals, so runs ending below never reach it."""
    ce = row(built, "cross_entropy", 0.1)
    assert (ce["reached"], ce["censored_runs"]) == (3, 0)
    epochs = [
        next(i for i, v in enumerate(history(f), 1) if v >= 0.85)
        for f in FINAL[("cross_entropy", 0.1)]
    ]
    assert ce["epochs_to_target mean"] == pytest.approx(np.mean(epochs))
    assert ce["seconds_to_target mean"] == pytest.approx(np.mean(epochs) * 2.0 / 5)
    low_lr = row(built, "cross_entropy", 0.01)  # 0.85 reached only by the runs ending at 0.85+
    assert (low_lr["reached"], low_lr["censored_runs"]) == (3, 0)
    mse = row(built, "mse", 0.1)
    assert (mse["reached"], mse["censored_runs"]) == (0, 3)
    header, rows = report.display_table(built)
    mse_row = next(r for r in rows if r[:2] == ["mse", "0.1"])
    assert "(3 censored)" in " ".join(mse_row)


def test_pairwise_tests_equal_scipys(built: report.Report) -> None:
    comparisons = built.comparisons.set_index("group")
    assert built.baseline == "loss=cross_entropy optimizer.lr=0.1"
    best = [v + TEST_OFFSET for v in FINAL[("cross_entropy", 0.1)]]
    other = [v + TEST_OFFSET for v in FINAL[("mse", 0.1)]]
    c = comparisons.loc["loss=mse optimizer.lr=0.1"]
    assert c["test"] == "paired t" and c["pairs"] == 3
    assert c["p"] == pytest.approx(st.ttest_rel(other, best).pvalue)
    assert c["diff"] == pytest.approx(np.mean(other) - np.mean(best))
    failed_group = comparisons.loc["loss=mse optimizer.lr=0.01"]
    assert failed_group["pairs"] == 2  # the failed seed has no pair


def test_vs_baseline_and_bad_vs(sweep_store: str) -> None:
    built = report.build_report(sweep_store, "report", vs="loss=mse,optimizer.lr=0.01")
    assert built.baseline == "loss=mse optimizer.lr=0.01"
    assert "loss=cross_entropy optimizer.lr=0.1" in set(built.comparisons["group"])
    with pytest.raises(ValueError, match="matches 2 groups"):
        report.build_report(sweep_store, "report", vs="loss=mse")
    with pytest.raises(ValueError, match="not among the sweep's axes"):
        report.build_report(sweep_store, "report", vs="optimizer=adam")


def test_fair_comparison_selects_on_val_and_reports_test(built: report.Report) -> None:
    fair = built.fair.set_index("loss")
    assert fair.loc["cross_entropy", "best optimizer.lr"] == "0.1"
    assert fair.loc["mse", "best optimizer.lr"] == "0.1"
    assert fair.loc["mse", "test mean"] == pytest.approx(np.mean(FINAL[("mse", 0.1)]) + TEST_OFFSET)


def test_fair_comparison_ranks_a_setting_with_diverged_runs_last() -> None:
    """lr=1 has the best validation mean among its finished runs, but one of its runs
    diverged: lr=0.1 wins (the claims' nuisance selection ranks settings the same way)."""
    import pandas as pd

    rows = [("sgd", "0.1", "finished", 0.80), ("sgd", "0.1", "finished", 0.82),
            ("sgd", "1", "finished", 0.95), ("sgd", "1", "diverged", float("nan"))]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["optimizer", "optimizer.lr", "outcome", "val/acc"])
    frame["test/acc"] = frame["val/acc"] - 0.01
    fair = report.fair_comparison(
        frame, ["optimizer", "optimizer.lr"], "optimizer", "optimizer.lr", "val/acc"
    )
    assert fair.loc[0, "best optimizer.lr"] == "0.1"
    assert fair.loc[0, "test mean"] == pytest.approx(0.80)


def test_files_hold_the_groups_and_reach_mlflow(
    sweep_store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    assert (
        report.main(["--tracking-uri", sweep_store, "--experiment", "report", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "each group vs loss=cross_entropy optimizer.lr=0.1" in printed  # the best group
    for name in ("report.md", "report.html", "curves.png", "bars.png", "heatmap.png"):
        assert (out / name).stat().st_size > 0, name
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for loss, lr in FINAL:  # every group, in the Markdown table and in the HTML one
        assert f"| {loss} | {lr} |" in md, (loss, lr)
        assert f"<td>{loss}</td><td>{lr}</td>" in page, (loss, lr)
    assert "censored" in md and "censored" in page
    assert "data:image/png;base64," in page  # self-contained
    client = MlflowClient(sweep_store)
    parent = client.search_runs(
        [client.get_experiment_by_name("report").experiment_id], "tags.`lossbench.role` = 'sweep'"
    )[0]
    attached = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/bars.png"} <= attached


def test_sweep_run_description_holds_the_headline_table_and_is_replaced(
    sweep_store: str, tmp_path: Path
) -> None:
    """The sweep run's page (its MLflow description) shows each group's mean [95% CI], as the
    report's headline does; a second report replaces the description, it does not add to it."""
    from lossbench.render import interval

    client = MlflowClient(sweep_store)
    parent = client.search_runs(
        [client.get_experiment_by_name("report").experiment_id], "tags.`lossbench.role` = 'sweep'"
    )[0].info.run_id
    argv = ["--tracking-uri", sweep_store, "--experiment", "report", "--out", str(tmp_path)]
    assert report.main([*argv, "--scientific", "loss", "--nuisance", "optimizer.lr"]) == 0
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert "| loss | optimizer.lr | val/acc (95% CI) | test/acc (95% CI) |" in note
    for (loss, lr), finals in FINAL.items():
        values = finals[:2] if (loss, lr) == ("mse", 0.01) else finals  # seed 2 failed
        low, high = st.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=st.sem(values))
        assert f"| {loss} | {lr} | {interval(np.mean(values), low, high)} |" in note, (loss, lr)
    assert note.index("| cross_entropy | 0.1 |") < note.index("| mse | 0.01 |")  # best first
    assert "Fair comparison" in note and "report/report.html" in note

    assert report.main(argv) == 0  # again, without the fair comparison
    again = client.get_run(parent).data.tags["mlflow.note.content"]
    assert again.count("| loss | optimizer.lr |") == 1 and "Fair comparison" not in again
    assert again == report.run_description(report.build_report(sweep_store, "report"))


def test_a_long_description_keeps_the_best_groups_and_counts_the_rest(
    built: report.Report,
) -> None:
    """MLflow keeps 8,000 characters of a tag: the groups that do not fit are counted."""
    note = report.run_description(built, limit=700)
    assert len(note) <= 700 and "| cross_entropy | 0.1 |" in note
    assert "more groups in the full report" in note or "more group in the full report" in note


def test_unknown_experiment_and_metric_are_clear_errors(
    sweep_store: str, capsys: pytest.CaptureFixture
) -> None:
    assert report.main(["--tracking-uri", sweep_store, "--experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no experiment 'nope'" in err and "report" in err
    assert (
        report.main(["--tracking-uri", sweep_store, "--experiment", "report", "--metric", "val/f1"])
        == 2
    )
    assert (
        "metrics: ['test/acc', 'time/seconds', 'train/loss', 'val/acc']" in capsys.readouterr().err
    )


def test_aggregate_is_a_dataframe_for_notebooks(sweep_store: str) -> None:
    table = report.aggregate(tracking_uri=sweep_store, experiment="report")
    assert {"loss", "optimizer.lr", "val/acc mean", "val/acc ci_low", "finished", "failed"} <= set(
        table.columns
    )


def test_report_is_a_light_command(sweep_store: str, tmp_path: Path) -> None:
    """It reads MLflow only: neither Lightning nor torch is imported."""
    code = (
        "import sys; from lossbench import report; "
        f"rc = report.main(['--tracking-uri', {sweep_store!r}, '--experiment', 'report', "
        f"'--out', {str(tmp_path)!r}, '--no-mlflow']); "
        "print('HEAVY', [m for m in ('pytorch_lightning', 'lightning', 'torch') if m in sys.modules]); "
        "sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


def test_an_unreachable_store_is_named_at_once(capsys: pytest.CaptureFixture) -> None:
    from lossbench.report import main

    assert main(["--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "tracking store http://127.0.0.1:9 is unreachable" in capsys.readouterr().err
