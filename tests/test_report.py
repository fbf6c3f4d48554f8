"""lossbench-report on a fixture sweep with known values: aggregates, CIs, tests, censoring,
failures, files, MLflow artifacts, errors; and it stays a light command."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from scipy import stats as st

from lossbench import report
from lossbench.config.spec import RunSpec
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
    """Target 0.85: the histories end at their finals, so runs ending below never reach it.
    Time to target is the Kaplan–Meier median: runs that never reach it count (censored)."""
    ce = row(built, "cross_entropy", 0.1)
    assert (ce["reached"], ce["censored_runs"]) == (3, 0)
    epochs = sorted(
        next(i for i, v in enumerate(history(f), 1) if v >= 0.85)
        for f in FINAL[("cross_entropy", 0.1)]
    )
    assert ce["epochs_to_target median"] == epochs[1]  # no censoring: the middle run
    assert ce["seconds_to_target median"] == pytest.approx(epochs[1] * 2.0 / 5)
    low_lr = row(built, "cross_entropy", 0.01)  # 0.85 reached only by the runs ending at 0.85+
    assert (low_lr["reached"], low_lr["censored_runs"]) == (3, 0)
    mse = row(built, "mse", 0.1)
    assert (mse["reached"], mse["censored_runs"]) == (0, 3)
    assert mse["epochs_to_target median"] == math.inf
    header, rows = report.display_table(built)
    mse_row = next(r for r in rows if r[:2] == ["mse", "0.1"])
    assert mse_row[header.index("reached")] == "0/3"
    assert mse_row[header.index("epochs to val/acc ≥ 0.85 (median [95% CI])")] == "> 5"


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
    assert "Kaplan–Meier" in md and "0/3" in page
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
    from lossbench.analysis.render import interval

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
    """Neither Lightning nor torch is imported; nor MLflow, on a SQL store this MLflow
    version's schema (read and written straight: :mod:`lossbench.tracking.plain_sql`), the
    report attached to the sweep's run all the same."""
    code = (
        "import sys; from lossbench import report; "
        f"rc = report.main(['--tracking-uri', {sweep_store!r}, '--experiment', 'report', "
        f"'--out', {str(tmp_path)!r}]); "
        "print('HEAVY', [m for m in ('pytorch_lightning', 'lightning', 'torch', 'mlflow') "
        "if m in sys.modules]); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout and "Attached to the sweep's MLflow run" in done.stdout


def test_an_unreachable_store_is_named_at_once(capsys: pytest.CaptureFixture) -> None:
    from lossbench.report import main

    assert main(["--tracking-uri", "http://127.0.0.1:9"]) == 2
    assert "tracking store http://127.0.0.1:9 is unreachable" in capsys.readouterr().err


# --- a suite of problems: 3 datasets x 3 optimizers x 3 seeds, and digits with adam only ----
# test/acc of each run (val/acc is 0.02 higher). By hand, the means and ranks on each problem:
#   iris:  adam 0.960 (1), rmsprop 0.958 (2, not significantly below adam), sgd 0.810 (3)
#   moons: adam 0.910 (1), sgd 0.863 (2), rmsprop 0.803 (3)
#   wine:  rmsprop 0.962 (1), adam 0.910 (2), sgd 0.810 (3)
# mean ranks: adam 4/3, rmsprop 2, sgd 8/3; against adam, rmsprop wins on wine, ties on iris,
# loses on moons (1/1/1); sgd loses everywhere (0/0/3).
SUITE = {
    ("iris", "adam"): [0.95, 0.96, 0.97],
    ("iris", "rmsprop"): [0.95, 0.96, 0.965],
    ("iris", "sgd"): [0.80, 0.82, 0.81],
    ("moons", "adam"): [0.90, 0.91, 0.92],
    ("moons", "rmsprop"): [0.80, 0.81, 0.80],
    ("moons", "sgd"): [0.85, 0.86, 0.88],
    ("wine", "adam"): [0.90, 0.91, 0.92],
    ("wine", "rmsprop"): [0.95, 0.965, 0.97],
    ("wine", "sgd"): [0.80, 0.82, 0.81],
    ("digits", "adam"): [0.97, 0.98, 0.99],  # no sgd, no rmsprop: a dropped block
}
VAL_OFFSET = 0.02


@pytest.fixture(scope="module")
def suite_store(store_uri: str) -> str:
    """The suite above as one sweep of experiment 'suite', target val/acc 0.9."""
    tracker = Tracker(store_uri, "suite")
    sweep = tracker.start_sweep("suite-sweep", ["dataset=iris,moons,wine,digits", "optimizer=adam,rmsprop,sgd"],
                                "/tmp/suite", {"metric": "val/acc", "target": 0.9})  # fmt: skip
    for (dataset, optimizer), finals in SUITE.items():
        for seed, final in enumerate(finals):
            cfg = {"seed": seed, "dataset": {"name": dataset}, "optimizer": {"_target_": optimizer}}
            choices = {"dataset": dataset, "optimizer": optimizer, "loss": "cross_entropy"}
            spec = RunSpec(
                cfg, choices, [f"dataset={dataset}", f"optimizer={optimizer}", f"seed={seed}"]
            )
            run_id = tracker.start_run(spec, {"task": "multiclass"}, sweep)
            val = final + VAL_OFFSET
            series = {"val/acc": history(val), "train/loss": list(np.linspace(1, 0.1, 5))}
            metrics = {"val/acc": val, "test/acc": final, "train/loss": 0.1, "time/seconds": 1.0}
            tracker.finish_run(run_id, RunResult(series, metrics))
    tracker.end_sweep(sweep)
    return store_uri


@pytest.fixture(scope="module")
def suite(suite_store: str) -> report.Report:
    return report.build_report(suite_store, "suite")


def test_problem_axes_are_found_and_groups_are_tested_within_their_problem(
    suite: report.Report,
) -> None:
    assert suite.problem_axes == ["dataset"] and suite.recipe_axes == ["optimizer"]
    assert suite.problems == ["dataset=digits", "dataset=iris", "dataset=moons", "dataset=wine"]
    comparisons = suite.comparisons
    # two tests per problem of three recipes, none for digits (one recipe), none across problems
    assert comparisons.groupby("problem").size().to_dict() == {
        "dataset=iris": 2, "dataset=moons": 2, "dataset=wine": 2}  # fmt: skip
    for _, row in comparisons.iterrows():
        dataset = row["problem"].removeprefix("dataset=")
        group, baseline = (
            row["group"].removeprefix("optimizer="),
            row["vs"].removeprefix("optimizer="),
        )
        assert suite.baselines[row["problem"]] == row["vs"]  # the problem's own best group
        expected = st.ttest_rel(SUITE[(dataset, group)], SUITE[(dataset, baseline)]).pvalue
        assert row["p"] == pytest.approx(expected), (dataset, group)
    assert suite.baselines == {"dataset=iris": "optimizer=adam", "dataset=moons": "optimizer=adam",
                               "dataset=wine": "optimizer=rmsprop"}  # fmt: skip
    assert "problem dataset=digits has one recipe (optimizer=adam)" in " ".join(suite.notes)


def test_ranks_and_tests_across_problems_use_complete_blocks(suite: report.Report) -> None:
    across = suite.across
    assert across is not None and across.column == "test/acc"
    assert across.problems == ["dataset=iris", "dataset=moons", "dataset=wine"]
    assert across.dropped == {"dataset=digits": ["optimizer=rmsprop", "optimizer=sgd"]}
    assert "1 of 4 problems dropped" in " ".join(suite.notes)
    assert dict(across.mean_ranks) == pytest.approx(
        {"optimizer=adam": 4 / 3, "optimizer=rmsprop": 2.0, "optimizer=sgd": 8 / 3}
    )
    assert across.baseline == "optimizer=adam"  # the best mean rank
    # Friedman by hand (no ties): 12N/(k(k+1)) * (sum R^2 - k(k+1)^2/4) = 8/3, p = exp(-4/3)
    assert across.omnibus.test == "Friedman"
    assert across.omnibus.statistic == pytest.approx(8 / 3)
    assert across.omnibus.p_value == pytest.approx(math.exp(-4 / 3))
    means = across.scores.loc[across.problems]
    assert across.omnibus.p_value == pytest.approx(st.friedmanchisquare(*means.to_numpy().T).pvalue)
    assert across.tally("optimizer=rmsprop") == (1, 1, 1)
    assert across.tally("optimizer=sgd") == (0, 0, 3)
    assert across.outcomes.loc["dataset=wine", "optimizer=rmsprop"] == "win"
    assert across.outcomes.loc["dataset=iris", "optimizer=rmsprop"] == "tie"
    table = report.problems_table(tracking_uri=suite.sweep.uri, experiment="suite")
    assert list(table["recipe"]) == ["optimizer=adam", "optimizer=rmsprop", "optimizer=sgd"]
    assert table.loc[1, "dataset=wine test/acc"] == pytest.approx(
        np.mean(SUITE[("wine", "rmsprop")])
    )
    assert (table.loc[2, "wins"], table.loc[2, "losses"]) == (0, 3)


def test_performance_profile_of_epochs_to_target(suite: report.Report) -> None:
    """Target val/acc 0.9: each recipe's median epochs over its seeds, never-reached as inf."""
    across = suite.across
    assert across is not None and across.times is not None and across.profile is not None
    for (dataset, optimizer), finals in SUITE.items():
        if dataset == "digits":
            continue
        epochs = [stats_epochs(f + VAL_OFFSET) for f in finals]
        expected = float(np.median(epochs)) if sum(map(math.isfinite, epochs)) >= 2 else math.inf
        assert across.times.loc[f"dataset={dataset}", f"optimizer={optimizer}"] == expected
    # adam reaches 0.9 on every problem and is the fastest on each: rho(1) = 1
    assert across.profile.loc["optimizer=adam", 1.0] == 1.0
    header, rows = report.profile_table(suite)
    assert header[:2] == ["recipe", "ρ(1)"] and rows[0][:2] == ["optimizer=adam", "3/3"]
    header, rows = report.times_table(suite)  # the times the profile compares, with their CIs
    cells = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    moons = [stats_epochs(f + VAL_OFFSET) for f in SUITE[("moons", "adam")]]
    assert cells["optimizer=adam"]["dataset=moons"].startswith(f"{sorted(moons)[1]:.0f} [")
    assert cells["optimizer=adam"]["dataset=moons"].endswith("(3/3)")
    assert cells["optimizer=sgd"]["dataset=iris"] == "> 5 (0/3)"  # never: censored at 5 epochs


def stats_epochs(final: float) -> float:
    from lossbench.analysis import survival

    values = history(final)
    reach = survival.first_reach(range(1, len(values) + 1), values, 0.9, True, len(values))
    return reach.latest if reach.reached else math.inf


def test_vs_is_a_recipe_tested_on_every_problem(suite_store: str) -> None:
    built = report.build_report(suite_store, "suite", vs="optimizer=sgd")
    assert set(built.baselines.values()) == {"optimizer=sgd"} and built.baseline == "optimizer=sgd"
    assert set(built.comparisons["vs"]) == {"optimizer=sgd"}
    assert built.across is not None and built.across.baseline == "optimizer=sgd"
    assert built.across.tally("optimizer=adam") == (3, 0, 0)
    assert "--vs optimizer=sgd: no such group on problem dataset=digits" in " ".join(built.notes)
    with pytest.raises(ValueError, match="'dataset'] is a problem axis; .* recipe axes only"):
        report.build_report(suite_store, "suite", vs="dataset=iris,optimizer=sgd")


def test_bad_problem_axes_are_clear_errors(suite_store: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"\['seed'\] is not an axis of this sweep; its axes: "
                       r"\['dataset', 'optimizer'\]"):  # fmt: skip
        report.build_report(suite_store, "suite", problem="seed")
    with pytest.raises(ValueError, match="nothing to compare: every axis"):
        report.build_report(suite_store, "suite", problem="dataset,optimizer")
    with pytest.raises(ValueError, match="'dataset' is a problem axis: the fair comparison"):
        report.build_report(suite_store, "suite", scientific="dataset", nuisance="optimizer")
    argv = ["--tracking-uri", suite_store, "--experiment", "suite", "--problem", "model"]
    assert report.main(argv) == 2
    assert "['model'] is not an axis of this sweep" in capsys.readouterr().err


def test_problem_none_compares_every_group_as_before(suite_store: str) -> None:
    built = report.build_report(suite_store, "suite", problem="none")
    assert built.across is None and built.problem_axes == [] and len(built.summary) == 10
    assert len(built.comparisons) == 9  # every group against the one best


def test_suite_files_and_description_lead_with_the_across_table(
    suite_store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--tracking-uri", suite_store, "--experiment", "suite", "--out", str(tmp_path)]
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("Across problems") < printed.index("dataset=iris: runs grouped by")
    assert printed.index("Epochs to val/acc ≥ 0.9 on each problem") < printed.index(
        "Performance profile"
    )
    for name in ("report.md", "report.html", "curves.png", "bars.png", "heatmap.png", "cd.png",
                 "profile.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Across problems") < md.index("## dataset=iris: runs grouped by optimizer")
    assert "| optimizer | mean rank | dataset=iris | dataset=moons | dataset=wine |" in md
    assert "| sgd | 2.67 | 0.8100 (3) | 0.8633 (2) | 0.8100 (3) | 0/0/3 |" in md
    assert "Friedman χ² = 2.67" in md and "1 of 4 problems dropped" in md
    client = MlflowClient(suite_store)
    parent = client.search_runs(
        [client.get_experiment_by_name("suite").experiment_id], "tags.`lossbench.role` = 'sweep'"
    )[0].info.run_id
    note = client.get_run(parent).data.tags["mlflow.note.content"]
    assert note.startswith(
        "| optimizer | mean rank | dataset=iris | dataset=moons | dataset=wine | W/T/L vs optimizer=adam |"
    )
    assert "| rmsprop | 2.00 | 0.9583 (2) | 0.8033 (3) | 0.9617 (1) | 1/1/1 |" in note
    for problem in ("dataset=digits", "dataset=iris", "dataset=moons", "dataset=wine"):
        assert f"**{problem}**" in note  # each problem's headline after the across table
    assert note.index("W/T/L") < note.index("**dataset=iris**")


def test_a_long_suite_description_keeps_the_across_table(suite: report.Report) -> None:
    full = report.run_description(suite)
    short = report.run_description(suite, limit=1800)
    assert len(short) <= 1800 < len(full)
    assert short.startswith(full.split("\n\n")[0])  # the whole across table
    assert "more in the full report" in short or "more problems in the full report" in short


def test_across_problems_takes_each_recipe_at_its_chosen_nuisance_value() -> None:
    """With --nuisance, a recipe's score on a problem is that of the setting chosen for it
    there on validation: sgd's lr is 0.1 on iris and 0.01 on wine."""
    import pandas as pd

    val = {("iris", "sgd", "0.1"): 0.9, ("iris", "sgd", "0.01"): 0.7, ("iris", "adam", "0.1"): 0.8,
           ("iris", "adam", "0.01"): 0.95, ("wine", "sgd", "0.1"): 0.6, ("wine", "sgd", "0.01"): 0.85,
           ("wine", "adam", "0.1"): 0.9, ("wine", "adam", "0.01"): 0.8}  # fmt: skip
    rows = [(d, o, lr, seed, "finished", v + 0.01 * seed, v - 0.05 + 0.01 * seed)
            for (d, o, lr), v in val.items() for seed in range(3)]  # fmt: skip
    frame = pd.DataFrame(
        rows,
        columns=["dataset", "optimizer", "optimizer.lr", "seed", "outcome", "val/acc", "test/acc"],
    )
    axes = ["dataset", "optimizer", "optimizer.lr"]
    fair = report.fair_comparison(frame, axes, "optimizer", "optimizer.lr", "val/acc")
    across = report.across_problems(frame, ["dataset"], ["optimizer"], "test/acc", "val/acc",
                                    nuisance="optimizer.lr", fair=fair)  # fmt: skip
    assert across.chosen.loc["dataset=iris", "optimizer=sgd"] == "0.1"
    assert across.chosen.loc["dataset=wine", "optimizer=sgd"] == "0.01"
    assert across.scores.loc["dataset=wine", "optimizer=sgd"] == pytest.approx(0.85 - 0.05 + 0.01)
    assert across.scores.loc["dataset=iris", "optimizer=adam"] == pytest.approx(0.95 - 0.05 + 0.01)
    assert dict(across.mean_ranks) == {"optimizer=adam": 1.0, "optimizer=sgd": 2.0}


def test_which_axes_make_a_problem() -> None:
    axes = ["dataset", "dataset.source.noise", "model.hidden", "data_seed", "loss", "optimizer.lr"]
    assert report.problem_axes(axes) == [
        "dataset",
        "dataset.source.noise",
        "model.hidden",
        "data_seed",
    ]
    assert report.problem_axes(axes, "model.hidden") == ["model.hidden"]
    # report.problem: [dataset, loss] in a preset reaches the sweep's tag as a list's text
    assert report.problem_axes(axes, "['dataset', 'loss']") == ["dataset", "loss"]
    assert report.problem_axes(axes, "none") == []
    assert not report.is_problem_axis("data.n_train")  # a fact of the data, not an axis


def test_no_complete_problem_leaves_nothing_to_rank() -> None:
    """sgd ran only on iris, adam only on wine: no problem has both, nothing is ranked."""
    import pandas as pd

    rows = [("iris", "sgd", s, "finished", 0.8) for s in range(2)]
    rows += [("wine", "adam", s, "finished", 0.9) for s in range(2)]
    frame = pd.DataFrame(rows, columns=["dataset", "optimizer", "seed", "outcome", "test/acc"])
    across = report.across_problems(frame, ["dataset"], ["optimizer"], "test/acc", "val/acc")
    assert across.problems == [] and across.mean_ranks.empty and across.table().empty
    assert across.dropped == {"dataset=iris": ["optimizer=adam"], "dataset=wine": ["optimizer=sgd"]}
    assert across.omnibus.test == "" and math.isnan(across.omnibus.p_value)


# --- a sweep that reads poorly unless the report takes care (issues 23, 26, 27, 28, 29) ----------


def record_sweep(
    uri: str,
    experiment: str,
    runs: list[tuple[dict, dict, RunResult]],
    report_settings: dict | None = None,
) -> str:
    """Record runs (config, choices, result) as one sweep of ``experiment``, cheaply."""
    tracker = Tracker(uri, experiment)
    sweep = tracker.start_sweep(f"{experiment}-sweep", ["(recorded by a test)"], "/tmp/sweep",
                                report_settings or {})  # fmt: skip
    for cfg, choices, result in runs:
        choices = {"dataset": "moons", **choices}  # (the run's name starts with it)
        spec = RunSpec(cfg, choices, [f"{k}={v}" for k, v in choices.items()])
        tracker.finish_run(tracker.start_run(spec, {"task": "binary"}, sweep), result)
    tracker.end_sweep(sweep)
    return uri


# An Optuna-like search: each trial its own long learning rate, one run each
TRIAL_LRS = {
    "adam": [0.056016038175032964, 0.12484030808286077, 0.004484087772907755,
             0.0010549774340694123, 0.0001347817711680272],
    "sgd": [0.3766576841599298, 0.1696174638729098, 0.10323260351976568,
            0.05547119471592124, 2.8765041432546945],
}  # fmt: skip


def trial_loss(optimizer: str, lr: float) -> float:
    """val/loss of a trial: best near lr 0.05 for adam, 0.4 for sgd; adam better overall."""
    best = 0.05 if optimizer == "adam" else 0.4
    return (0.08 if optimizer == "adam" else 0.1) + 0.05 * abs(math.log10(lr / best))


@pytest.fixture(scope="module")
def trials_store(store_uri: str) -> str:
    runs = []
    for optimizer, lrs in TRIAL_LRS.items():
        for lr in lrs:
            cfg = {"seed": 0, "optimizer": {"_target_": optimizer, "lr": lr}}
            val = trial_loss(optimizer, lr)
            series = {"val/loss": list(np.linspace(0.7, val, 4))}
            final = {"val/loss": val, "test/loss": val + 0.03, "train/loss": val}
            runs.append((cfg, {"optimizer": optimizer}, RunResult(series, final)))
    return record_sweep(
        store_uri, "trials", runs, {"metric": "val/loss", "scientific": "optimizer"}
    )


def test_a_searched_axis_is_grouped_out_its_best_trials_shown_and_the_fair_comparison_first(
    trials_store: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Issue 26: lossbench-report --experiment hpo made every Optuna trial a group keyed by a
    full-precision lr, printed a table of Welch tests of single runs, and the fair comparison
    last."""
    built = report.build_report(trials_store, "trials")
    assert built.searched == ["optimizer.lr"] and built.nuisance == "optimizer.lr"
    assert built.comparisons.empty  # no tests between single trials
    fair = built.fair.set_index("optimizer")
    for optimizer, lrs in TRIAL_LRS.items():  # each optimizer's best lr, chosen on val/loss
        best = min(lrs, key=lambda lr: trial_loss(optimizer, lr))
        assert float(fair.loc[optimizer, "best optimizer.lr"]) == pytest.approx(best, rel=1e-3)
    header, rows = report.display_table(built)
    assert [r[0] for r in rows] == ["adam"] * 3 + ["sgd"] * 3  # each group's 3 best trials
    losses = [float(r[header.index("val/loss (95% CI)")]) for r in rows]
    assert losses[:3] == sorted(losses[:3]) and losses[3:] == sorted(losses[3:])
    assert report.main(["--tracking-uri", trials_store, "--experiment", "trials",
                        "--out", str(tmp_path)]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert printed.index("fair comparison: best optimizer.lr per optimizer") < printed.index(
        "the best trials of each optimizer (6 of 10 trials"
    )
    assert "each group vs" not in printed and "Welch" not in printed
    assert "0.05602" in printed and "0.056016038175032964" not in printed  # 4 digits
    md = (tmp_path / "report.md").read_text()
    assert md.index("## fair comparison") < md.index("## the best trials")
    assert "0.056016038175032964" not in md
    with pytest.raises(ValueError, match=r"--vs 'optimizer.lr=0.1': \['optimizer.lr'\] is not"):
        report.build_report(trials_store, "trials", vs="optimizer.lr=0.1")


def test_shown_numbers_keep_values_apart() -> None:
    from lossbench.report.values import short_values

    assert short_values(["0.056016038175032964", "0.1", "64", "[64, 64]", "adam"]) == {
        "0.056016038175032964": "0.05602", "0.1": "0.1", "64": "64", "[64, 64]": "[64, 64]",
        "adam": "adam"}  # fmt: skip
    close = short_values(["0.0010001", "0.0010002", "0.002"])  # 4 digits would merge two
    assert close == {"0.0010001": "0.0010001", "0.0010002": "0.0010002", "0.002": "0.002"}
    assert short_values(["0.123456789", "0.123456", "1"])["0.123456789"] == "0.123457"
    from lossbench.report.values import translate  # --vs takes the recorded value too

    shown = {"optimizer.lr": {"0.056016038175032964": "0.05602"}}
    assert translate({"optimizer.lr": "0.056016038175032964", "loss": "mse"}, shown) == {
        "optimizer.lr": "0.05602", "loss": "mse"}  # fmt: skip


def test_a_test_metric_as_the_headline_shows_once_and_no_table_is_empty(
    sweep_store: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    """Issue 26: lossbench-report --metric test/top2_error showed the test metric twice and
    an empty "each group vs all runs" table."""
    built = report.build_report(sweep_store, "report", metric="test/acc")
    header, _ = report.display_table(built)
    assert sum("test/acc" in h for h in header) == 1
    assert not any(h.startswith("best ") for h in header)  # test/acc has no history
    record_sweep(sweep_store, "one-group", [
        ({"seed": s, "dataset": {"name": "iris"}}, {"dataset": "iris"},
         RunResult({"val/acc": [0.8, 0.9]}, {"val/acc": 0.9, "test/acc": 0.88 + s / 100}))
        for s in range(3)])  # fmt: skip
    argv = ["--tracking-uri", sweep_store, "--experiment", "one-group", "--out", str(tmp_path),
            "--metric", "test/acc", "--no-mlflow"]  # fmt: skip
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert "each group vs" not in printed and "runs grouped by nothing (one group)" in printed
    for section in report.render._sections(report.build_report(sweep_store, "one-group")):
        assert isinstance(section[1], str) or section[1][1], section[0]  # no table without rows


def test_stopped_epochs_and_audits_have_columns_and_a_failed_audit_stands_out(
    store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Issue 27: the mean stopped epoch of runs that stopped early; issue 28: the audit, a
    failure loud (first in the terminal, Markdown and the MLflow description)."""
    runs = []
    for optimizer, stopped, audit in (
        ("sgd", [None, "6", "9"], "passed"),
        ("adam", [None] * 3, "failed"),
    ):
        for seed, epoch in enumerate(stopped):
            tags = {
                "lossbench.audit": audit,
                "lossbench.audit_difference": "2e-14" if audit == "passed" else "0.012",
            }
            if epoch is not None:
                tags["lossbench.stopped_epoch"] = epoch  # 0-based: epochs 7 and 10
            val = [0.6, 0.7, 0.8][: 3 if epoch is None else 2]
            runs.append(({"seed": seed, "optimizer": {"_target_": optimizer}}, {"optimizer": optimizer},
                         RunResult({"val/acc": val}, {"val/acc": val[-1], "test/acc": 0.7}, tags=tags)))  # fmt: skip
    record_sweep(store_uri, "stopped", runs)
    built = report.build_report(store_uri, "stopped")
    header, rows = report.display_table(built)
    cells = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert cells["sgd"]["stopped early (mean epoch)"] == "8.5 (2/3)"
    assert cells["adam"]["stopped early (mean epoch)"] == "–"
    assert cells["adam"]["audit"] == "FAILED 3/3" and cells["sgd"]["audit"] == "passed (≤ 2e-14)"
    assert built.warnings and "AUDIT FAILED: 3 run(s)" in built.warnings[0]
    argv = ["--tracking-uri", store_uri, "--experiment", "stopped", "--out", str(tmp_path)]
    assert report.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.index("AUDIT FAILED") < printed.index("runs grouped by")
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert md.index("**AUDIT FAILED") < md.index("| optimizer |") and "**FAILED 3/3**" in md
    assert "<td class=loud>FAILED 3/3</td>" in page
    assert page.index("<p class=loud>AUDIT FAILED") < page.index("<table>")
    client = MlflowClient(store_uri)
    parent = client.search_runs([client.get_experiment_by_name("stopped").experiment_id],
                                "tags.`lossbench.role` = 'sweep'")[0]  # fmt: skip
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**AUDIT FAILED") and "**FAILED 3/3**" in note


def test_sparse_histories_are_read_by_their_logged_epochs(store_uri: str, tmp_path: Path) -> None:
    """Issue 29: with tracking.log_every_n_epochs=5 the history of val/acc holds epochs 1, 6,
    11, 16, 20 (steps 0, 5, 10, 15, 19). Time to target read the list positions (4 instead of
    14); it reads the logged epochs: the first at or above 0.95 is 16 and the one before, 11,
    is below, so the median is 12–16, and a run logged every epoch says 14."""
    dense = [0.5 + 0.45 * e / 14 if e < 14 else 0.96 for e in range(1, 21)]
    steps = [0, 5, 10, 15, 19]
    runs = []
    for seed in range(3):
        for logging, series, at in (
            ("every", dense, None),
            ("sparse", [dense[s] for s in steps], steps),
        ):
            result = RunResult({"val/acc": series}, {"val/acc": 0.96, "test/acc": 0.95, "time/seconds": 4.0,
                                                     "time/epoch_seconds": 0.2},
                               steps={"val/acc": at} if at else {})  # fmt: skip
            cfg = {"seed": seed, "trainer": {"max_epochs": 20}, "logging": logging}
            runs.append((cfg, {"dataset": "moons", "logging": logging}, result))
    record_sweep(store_uri, "sparse", runs, {"target": 0.95})
    built = report.build_report(store_uri, "sparse", problem="none")
    rows = built.summary.set_index("logging")
    assert rows.loc["every", "epochs_to_target median"] == 14
    assert rows.loc["sparse", "epochs_to_target median"] == 16
    assert rows.loc["sparse", "epochs_to_target median_earliest"] == 12
    assert rows.loc["sparse", "seconds_to_target median"] == pytest.approx(16 * 0.2)
    header, cells = report.display_table(built)
    column = header.index("epochs to val/acc ≥ 0.95 (median [95% CI])")
    shown = {r[header.index("logging")]: r[column] for r in cells}
    assert shown["every"].startswith("14 ") and shown["sparse"].startswith("12–16 ")
    assert any("logged at some epochs only in 3 of 6 runs" in n for n in built.notes)
    sparse = built.runs[built.runs["logging"] == "sparse"]["history"].iloc[0]
    assert sparse.epochs == (1, 6, 11, 16, 20) and not sparse.dense
    assert rows.loc["sparse", "best val/acc mean"] == pytest.approx(0.96)
    report.write_report(built, tmp_path)  # the curves plot by epoch
    assert (tmp_path / "curves.png").stat().st_size > 0
    note = report.run_description(built)  # the MLflow description's table has it too
    assert "epochs to val/acc ≥ 0.95 (median [95% CI]) | reached |" in note and "12–16 [" in note


DECLARED = {"_target_": "mymetrics.auroc", "task": "classification", "every_epoch": True}


@pytest.mark.parametrize("declared", [True, None], ids=["higher-is-better", "undeclared"])
def test_a_user_metric_where_higher_is_better_is_ranked_by_its_declaration(
    store_uri: str, declared: bool | None
) -> None:
    """Issue 23: the report's "best", its order and the fair comparison read the direction a
    metrics: entry declares (recorded as the param metrics.auroc.higher_is_better); without
    it, lower is better, as the README says."""
    entry = {**DECLARED, **({"higher_is_better": True} if declared else {})}
    auroc = {("a", "0.1"): 0.9, ("a", "0.01"): 0.7, ("b", "0.1"): 0.6, ("b", "0.01"): 0.8}
    runs = []
    for (variant, lr), value in auroc.items():
        for seed in range(2):
            cfg = {
                "seed": seed,
                "variant": variant,
                "optimizer": {"lr": lr},
                "metrics": {"auroc": entry},
            }
            history = [0.5, value + 0.05, value]  # its best epoch is not its last
            runs.append((cfg, {"optimizer": variant}, RunResult(
                {"val/auroc": history}, {"val/auroc": value + seed / 100, "test/auroc": value})))  # fmt: skip
    experiment = f"direction-{declared}"
    record_sweep(store_uri, experiment, runs)
    built = report.build_report(store_uri, experiment, metric="val/auroc", scientific="optimizer",
                                nuisance="optimizer.lr")  # fmt: skip
    assert built.higher is bool(declared)
    first = built.summary.iloc[0]
    best_lr = built.fair.set_index("optimizer")["best optimizer.lr"]
    if declared:
        assert (first["optimizer"], first["optimizer.lr"]) == ("a", "0.1")
        assert first["best val/auroc mean"] == pytest.approx(0.95)
        assert dict(best_lr) == {"a": "0.1", "b": "0.01"}
    else:
        assert (first["optimizer"], first["optimizer.lr"]) == ("b", "0.1")
        assert first["best val/auroc mean"] == pytest.approx(0.5)
        assert dict(best_lr) == {"a": "0.01", "b": "0.1"}


def test_figures_drawn_in_two_processes_are_those_drawn_in_one(
    built: report.Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's figures are drawn half in a forked process where that is safe: the same
    files, byte for byte, as drawn one after another; a figure that fails is named."""
    from lossbench.analysis import render

    for name in ("forked", "serial"):
        (tmp_path / name).mkdir()
    forked = report.plot_report(built, tmp_path / "forked")
    monkeypatch.setattr(render.threading, "active_count", lambda: 2)  # a thread: no fork
    serial = report.plot_report(built, tmp_path / "serial")
    assert [p.name for p in forked] == [p.name for p in serial] == [
        "curves.png", "bars.png", "heatmap.png",
    ]  # fmt: skip
    for a, b in zip(forked, serial, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    monkeypatch.undo()

    def broken(subject: object, path: Path) -> None:
        raise ValueError("no such figure")

    figures = [(tmp_path / "a.png", broken), (tmp_path / "b.png", lambda s, p: p.write_text("b"))]
    with pytest.raises(RuntimeError, match="drawing a.png failed"):
        render.draw_figures(built, figures)  # a.png is the forked process's
    assert (tmp_path / "b.png").read_text() == "b"
