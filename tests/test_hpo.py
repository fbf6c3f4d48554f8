"""Optuna HPO in lossbench's sweeper: search spaces, penalised divergence, and a CLI study whose
trials are MLflow runs under their study's run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from mlflow import MlflowClient
from omegaconf import OmegaConf

from lossbench.config.spec import CONF_DIR, ConfigError
from lossbench.report import build_report
from lossbench.sweep.hpo import objective, parse_space, study_direction

LOG = optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("log(1e-4, 1)", LOG),
        (" log( 1e-4 ,1 ) ", LOG),
        ("float(0, 0.5)", optuna.distributions.FloatDistribution(0.0, 0.5)),
        ("int(1, 8)", optuna.distributions.IntDistribution(1, 8)),
        ("choice(relu, tanh)", optuna.distributions.CategoricalDistribution(["relu", "tanh"])),
    ],
)
def test_search_spaces_parse_to_optuna_distributions(text: str, expected: object) -> None:
    assert parse_space({"model.x": text}) == {"model.x": expected}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("uniform(0, 1)", "expected log(lo, hi)"),
        ("0.1", "expected log(lo, hi)"),
        ("log(1e-4)", "takes (lo, hi)"),
        ("float(1, 0)", "needs lo < hi"),
        ("log(0, 1)", "0 < lo for log"),
        ("int(2, 2)", "needs lo < hi"),
    ],
)
def test_bad_search_spaces_name_the_entry_and_the_forms(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"hydra\.sweeper\.optuna\.search\.optimizer\.lr=") as err:
        parse_space({"optimizer.lr": text})
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (['hydra.sweeper.optuna.search={optimizer.lr: "log(1e-4, 1)"}'],
         {"optimizer.lr": "log(1e-4, 1)"}),
        (["experiment=hpo"], {"optimizer.lr": "log(1e-4, 10)"}),
        (["experiment=hpo", '++hydra.sweeper.optuna.search={model.dropout: "float(0, 0.5)"}'],
         {"optimizer.lr": "log(1e-4, 10)", "model.dropout": "float(0, 0.5)"}),
    ],
)  # fmt: skip
def test_search_space_is_set_from_the_command_line_as_the_readme_shows(
    overrides: list[str], expected: dict[str, str]
) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert OmegaConf.to_container(cfg.hydra.sweeper.optuna.search) == expected


def done(value: object) -> JobReturn:
    return JobReturn(status=JobStatus.COMPLETED, _return_value=value)


@pytest.mark.parametrize(
    ("ret", "expected"),
    [
        (done({"val/loss": 0.25}), 0.25),
        (done({"val/loss": 7.0, "diverged": 1.0}), math.inf),  # last finite value is not a score
        (done({"val/loss": math.nan}), math.inf),
        (done({"val/acc": 0.9}), math.inf),  # the metric was never recorded
        (JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("boom")), math.inf),
    ],
)
def test_a_trial_that_diverged_failed_or_lacks_the_metric_gets_the_penalty(
    ret: JobReturn, expected: float
) -> None:
    assert objective(ret, "val/loss", math.inf) == expected


def test_optunas_direction_follows_the_metric_unless_given() -> None:
    """Issue 23: minimize was the default whatever the metric (val/acc was minimized)."""
    assert study_direction("val/loss", None) == "minimize"
    assert study_direction("val/acc", None) == "maximize"
    assert study_direction("test/auroc", None, {"auroc": True}) == "maximize"
    assert study_direction("test/top2_error", None, {"top2_error": False}) == "minimize"
    assert study_direction("train/grad_norm", "maximize") == "maximize"
    with pytest.raises(
        ConfigError, match="direction=minimize contradicts .*metric=val/acc, where higher"
    ):
        study_direction("val/acc", "minimize")
    with pytest.raises(ConfigError, match="metric=train/grad_norm has no better end: give"):
        study_direction("train/grad_norm", None)
    with pytest.raises(ConfigError, match="direction='up': minimize or maximize"):
        study_direction("val/loss", "up")


@pytest.mark.slow
def test_optuna_sweep_tunes_lr_per_optimizer_with_trials_under_their_study(
    tmp_path: Path, store_uri: str
) -> None:
    """Two studies (sgd, adam) of 4 trials: every trial is a run under its study's run, itself
    under the sweep's run; trials that diverge are penalised and the sweep goes on; the best
    trial of each study is the best finished one, and the report's best-over-lr agrees."""
    sweep_dir = tmp_path / "hpo"
    cmd = [
        sys.executable, "-m", "lossbench.train", "experiment=hpo", "optimizer=sgd,adam",
        # a range whose top diverges with sgd, so the penalty is exercised
        'hydra.sweeper.optuna.search={optimizer.lr: "log(0.01, 10000)"}',
        "hydra.sweeper.optuna.n_trials=4", "trainer.max_epochs=3", "dataset.source.n_samples=200",
        "tracking.experiment=test-hpo", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert "Optuna: 2 studies of 4 trials on val/loss" in output

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("test-hpo")
    records = client.search_runs([experiment.experiment_id])
    by_role: dict[str, list] = {}
    for r in records:
        by_role.setdefault(r.data.tags["lossbench.role"], []).append(r)
    [parent] = by_role["sweep"]
    studies = {r.info.run_name: r for r in by_role["study"]}
    assert set(studies) == {"study optimizer=sgd", "study optimizer=adam"}
    assert {s.data.tags["mlflow.parentRunId"] for s in studies.values()} == {parent.info.run_id}
    assert {r.info.status for r in [parent, *studies.values()]} == {"FINISHED"}

    trials = by_role["run"]
    assert len(trials) == 8
    diverged = [t for t in trials if t.data.tags.get("lossbench.status") == "diverged"]
    assert diverged, "the premise: some sgd trial near lr=10000 diverges"
    assert all(t.info.status == "FAILED" for t in diverged)

    best = yaml.safe_load((sweep_dir / "optuna_best.yaml").read_text())
    for name, study in studies.items():
        optimizer = name.removeprefix("study optimizer=")
        mine = [t for t in trials if t.data.tags["mlflow.parentRunId"] == study.info.run_id]
        assert len(mine) == 4
        assert {t.data.tags["lossbench.choice.optimizer"] for t in mine} == {optimizer}
        finished = [t for t in mine if t.info.status == "FINISHED"]
        winner = min(finished, key=lambda t: t.data.metrics["val/loss"])
        found = best[f"optimizer={optimizer}"]
        assert found["value"] == pytest.approx(winner.data.metrics["val/loss"])
        assert found["params"]["optimizer.lr"] == pytest.approx(
            float(winner.data.params["optimizer.lr"])
        )
        assert study.data.metrics["best/val/loss"] == pytest.approx(found["value"])

    report = build_report(store_uri, experiment="test-hpo")
    assert report.nuisance == "optimizer.lr" and report.fair is not None
    fair = {row["optimizer"]: row for _, row in report.fair.iterrows()}
    assert set(fair) == {"sgd", "adam"}
    for optimizer, row in fair.items():
        tuned = best[f"optimizer={optimizer}"]["params"]["optimizer.lr"]
        assert float(row["best optimizer.lr"]) == pytest.approx(tuned, rel=1e-3)  # 4 digits shown


@pytest.mark.slow
def test_the_trials_of_a_round_train_as_one_stacked_fit(tmp_path: Path, store_uri: str) -> None:
    """Each round of Optuna trials is one launcher batch, and trials differ only in their
    recipe (optimizer, lr), so a round trains as one stack: 2 studies x 2 trials per round, 2
    rounds -> 2 fits of 4 members each, sgd and adam trials together. (On one worker: with
    more, the round is split among them, see tests/test_plan.py.) Only planning facts are
    checked here: what the trials reach is the stacked optimizer's business."""
    sweep_dir = tmp_path / "hpo-rounds"
    cmd = [
        sys.executable, "-m", "lossbench.train", "experiment=hpo", "optimizer=sgd,adam",
        "hydra.sweeper.optuna.n_trials=4", "hydra.sweeper.optuna.trials_per_round=2",
        "hydra.launcher.n_jobs=1", "trainer.max_epochs=2", "dataset.source.n_samples=200",
        "tracking.experiment=test-hpo-rounds", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": store_uri}
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("test-hpo-rounds")
    trials = client.search_runs([experiment.experiment_id], "tags.`lossbench.role` = 'run'")
    assert len(trials) == 8
    stacks: dict[str, list] = {}
    for trial in trials:
        stacks.setdefault(trial.data.tags["lossbench.stack_id"], []).append(trial)
    assert sorted(len(members) for members in stacks.values()) == [4, 4]
    for members in stacks.values():
        assert {t.data.tags["lossbench.members"] for t in members} == {"4"}
        assert {t.data.tags["lossbench.choice.optimizer"] for t in members} == {"sgd", "adam"}
        assert len({t.data.params["optimizer.lr"] for t in members}) == 4
    summary = json.loads((sweep_dir / "lossbench-summary.json").read_text())  # the last round
    assert (summary["runs"], summary["stacks"], summary["stack_by"]) == (4, 1, "recipe")
