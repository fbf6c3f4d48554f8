"""Metrics users add by ``_target_`` in ``metrics:``: recorded as val/<name> every epoch and
test/<name> at the end, readable by the report, Optuna and claims; bad entries fail before
anything trains; stacked members record what they would alone; repro runs them only when the
user allows their module."""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from mlflow import MlflowClient

from conftest import FAST, cross_path_approx
from lossbench import claims as C
from lossbench import report
from lossbench.config.checks import check_run, recorded_metrics
from lossbench.config.spec import CONF_DIR, ConfigError
from lossbench.fit.training import fit_members
from lossbench.repro import main as repro_main
from lossbench.sweep.hpo import objective
from lossbench.sweep.jobs import compose_jobs
from lossbench.sweep.stacking import stack_key
from lossbench.tracking.writer import Tracker
from lossbench.train import train

MODULE = "lossbench_test_user_metrics"  # the user's own module, outside lossbench
SOURCE = '''
"""A user's metrics: fn(outputs, target) -> one value per stacked member."""
import torch


def top2_error(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Share of rows whose class is not among the two likeliest."""
    top2 = probs.topk(2, dim=-1).indices  # [K, N, 2]
    return 1 - (top2 == target[:, None]).any(-1).float().mean(-1)


def max_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Largest absolute error, in the data's units."""
    return (pred[..., 0] - target).abs().amax(-1)


def mean_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred[..., 0] - target).abs().mean(-1)


class QuantileError:
    """A class works too: built with the entry's arguments, its instance called."""

    def __init__(self, q: float) -> None:
        self.q = q

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred[..., 0] - target).abs().quantile(self.q, dim=-1)


def one_number(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return probs.mean()  # not one value per member


ANSWER = 42
'''
TOP2 = f"+metrics.top2_error={{_target_: {MODULE}.top2_error, task: classification}}"
# the shipped ECE again, on val every epoch
ECE_CURVE = "+metrics.ece_curve={_target_: lossbench.problem.metrics.ece, task: classification, every_epoch: true}"


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The user's module, importable as it would be from their project."""
    (tmp_path / f"{MODULE}.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield MODULE
    sys.modules.pop(MODULE, None)


@pytest.mark.slow
def test_a_user_metric_is_recorded_and_read_by_report_optuna_and_claims(
    make_spec, user_module: str, store_uri: str, tmp_path: Path
) -> None:  # noqa: ANN001
    """A stack of two seeds on a 3-class set with the shipped metrics and the user's: val/ and
    test/ of the final model (val/ every epoch where asked), each member as it would alone
    (1e-5); then the report, an Optuna objective and a claim's metric check read them."""
    specs = [
        make_spec([*FAST, "dataset=blobs", TOP2, ECE_CURVE, f"seed={seed}",
                   f"tracking.uri={store_uri}", "tracking.experiment=user-metrics"])
        for seed in (0, 1)
    ]  # fmt: skip
    assert stack_key(specs[0]) == stack_key(specs[1])
    data = check_run(specs[0])
    stacked = fit_members([s.cfg for s in specs], data)
    for spec, together in zip(specs, stacked, strict=True):
        [alone] = fit_members([spec.cfg], data)
        assert len(together.series["val/ece_curve"]) == 3  # every epoch
        assert together.series["val/ece_curve"] == cross_path_approx(alone.series["val/ece_curve"])
        assert "val/ece" not in together.series  # once, at the end: the last epoch's value
        assert together.final["val/ece"] == cross_path_approx(together.series["val/ece_curve"][-1])
        for name in ("ece", "brier", "top2_error", "ece_curve"):
            for split in ("val", "test"):
                key = f"{split}/{name}"
                assert together.final[key] == cross_path_approx(alone.final[key]), key
        final = together.final
        assert 0 <= final["test/ece"] <= 1 and 0 <= final["test/brier"] <= 2
        assert final["test/top2_error"] <= 1 - final["test/acc"]  # top-2 misses are top-1 misses
        assert {k for k in final if not k.startswith("time/")} <= recorded_metrics(
            spec.cfg, data.task
        )

    tracker = Tracker(store_uri, "user-metrics")
    sweep = tracker.start_sweep("user-metrics-sweep", ["seed=0,1"], "/tmp/sweep")
    tracker.finish_runs(tracker.start_runs(specs, data.summary(), sweep), stacked)
    tracker.end_sweep(sweep)
    for metric in ("test/ece", "val/ece_curve"):  # lossbench-report --metric test/ece
        table = report.aggregate(tracking_uri=store_uri, experiment="user-metrics", metric=metric)
        mean = sum(r.final[metric] for r in stacked) / 2
        assert table[f"{metric} mean"].iloc[0] == pytest.approx(mean)

    ret = JobReturn(status=JobStatus.COMPLETED, _return_value=stacked[0].job_return())
    assert objective(ret, "test/top2_error", math.inf) == stacked[0].final["test/top2_error"]

    claim_file = tmp_path / "U1.yaml"
    claim_file.write_text(yaml.safe_dump({
        "id": "U1", "claim": "top-2 error stays below 0.5", "base": ["dataset=blobs", TOP2],
        "seeds": [0, 1], "metric": "test/top2_error",
        "assert": [{"below": {"group": "all", "value": 0.5}}],
    }))  # fmt: skip
    claim = C.load_claim(claim_file)
    keys = [C.job_key(claim, labels, seed) for labels, seed, _ in claim.jobs()]
    C.check_metrics([claim], keys, specs, [data.summary()] * 2)  # recorded: no error


def test_a_regression_metric_gets_predictions_in_data_units(make_spec, user_module: str) -> None:  # noqa: ANN001
    """It sees what rmse and mae see (data units, not standardized); the shipped classification
    metrics are not recorded for regression runs."""
    spec = make_spec([
        "tracking=none", "trainer.max_epochs=2", "dataset=diabetes", "loss=mse",
        f"+metrics.mean_error={{_target_: {MODULE}.mean_error, task: regression}}",
        f"+metrics.max_error={{_target_: {MODULE}.max_error, task: regression}}",
        f"+metrics.p90_error={{_target_: {MODULE}.QuantileError, task: regression, q: 0.9}}",
    ])  # fmt: skip
    data = check_run(spec)
    assert data.y_std > 10  # diabetes targets are in the tens to hundreds
    [result] = fit_members([spec.cfg], data)
    assert result.final["test/mean_error"] == pytest.approx(result.final["test/mae"], rel=1e-5)
    final = result.final
    assert final["test/max_error"] >= final["test/p90_error"] > 0
    assert not any("ece" in k or "brier" in k for k in result.final)
    assert set(result.final) - {"time/seconds", "time/epoch_seconds"} <= recorded_metrics(
        spec.cfg, data.task
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("+metrics.auroc={_target_: no_such_pkg.auroc, task: classification}",
         r"metrics.auroc._target_='no_such_pkg.auroc' cannot be imported .*; shipped metrics: "
         r"lossbench.problem.metrics.ece, lossbench.problem.metrics.brier"),
        (f"+metrics.auroc={{_target_: {MODULE}.auroc, task: classification}}",
         rf"metrics.auroc._target_='{MODULE}.auroc' cannot be imported"),
        (f"+metrics.answer={{_target_: {MODULE}.ANSWER, task: classification}}",
         rf"metrics.answer._target_='{MODULE}.ANSWER' is not callable \(it is int 42\); a metric is a function"),
        ("+metrics.acc={_target_: lossbench.problem.metrics.ece, task: classification}",
         r"metrics.acc: 'acc' is a built-in metric name \(loss, acc, balanced_acc, f1_macro, "
         r"rmse, mae, r2\)"),
        ("+metrics.ece2={_target_: lossbench.problem.metrics.ece}",
         r"metrics.ece2.task=None must be one of classification, regression"),
        (f"+metrics.one={{_target_: {MODULE}.one_number, task: classification}}",
         r"metrics.one returned \(\); a metric returns one value per stacked member"),
        ("metrics.ece.every_epoch=sometimes",
         r"metrics.ece.every_epoch='sometimes' must be true or false"),
        ("+metrics.ece.higher_is_better=often",
         r"metrics.ece.higher_is_better='often' must be true or false"),
        ("+metrics.ece.bins=5",
         r"unknown key metrics.ece.bins=5: .*Did you mean metrics.ece.n_bins=5\?"),
    ],
    ids=["no-module", "no-function", "not-callable", "built-in-name", "no-task", "not-per-member",
         "bad-every-epoch", "bad-direction", "bad-argument"],
)  # fmt: skip
def test_bad_metrics_fail_before_anything_trains(
    make_spec, user_module: str, store_uri: str, entry: str, message: str
) -> None:  # noqa: ANN001
    experiment = f"bad-metric-{abs(hash(entry))}"
    spec = make_spec(
        [*FAST, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}", entry]
    )
    with pytest.raises(ConfigError, match=message):
        train(spec.cfg, spec.choices, spec.overrides)
    assert MlflowClient(store_uri).get_experiment_by_name(experiment) is None


def test_metrics_compose_from_overrides_and_are_shared_within_a_stack(make_spec) -> None:  # noqa: ANN001
    """What a claim's base or the command line can say: add one (to the shipped ones), drop
    one, none, change an argument; all through the sweep's composition too. Runs recording
    other metrics never share a stack."""
    add = "+metrics.ece5={_target_: lossbench.problem.metrics.ece, task: classification, n_bins: 5}"
    overrides = [[], [add], ["~metrics.brier"], ["metrics=null"],
                 ["metrics.ece.n_bins=10", "metrics.ece.every_epoch=true"]]  # fmt: skip
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", [], run_mode=RunMode.MULTIRUN)
        jobs = compose_jobs(loader, master, [["tracking=none", *o] for o in overrides], 0)
    GlobalHydra.instance().clear()
    metrics = [job.spec.cfg["metrics"] or {} for job in jobs]
    assert [sorted(m) for m in metrics] == [
        ["brier", "ece"], ["brier", "ece", "ece5"], ["ece"], [], ["brier", "ece"],
    ]  # fmt: skip
    assert metrics[1]["ece5"]["n_bins"] == 5
    assert metrics[4]["ece"]["n_bins"] == 10 and metrics[4]["ece"]["every_epoch"] is True
    for job, o in zip(jobs, overrides, strict=True):  # as Hydra composes each alone
        assert job.spec.cfg == make_spec(["tracking=none", *o]).cfg
    keys = [stack_key(job.spec) for job in jobs]
    assert len(set(keys)) == len(keys)
    assert stack_key(make_spec(["tracking=none", add, "seed=3"])) == keys[1]


@pytest.mark.slow
def test_repro_runs_a_user_metric_only_when_the_user_allows_its_module(
    make_spec, user_module: str, store_uri: str, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    spec = make_spec([*FAST, TOP2, f"tracking.uri={store_uri}", "tracking.experiment=repro-user"])
    data = check_run(spec)
    tracker = Tracker(store_uri, "repro-user")
    [run_id] = tracker.start_runs([spec], data.summary())
    tracker.finish_runs([run_id], fit_members([spec.cfg], data))

    assert repro_main([run_id, "--tracking-uri", store_uri, "--no-record"]) == 2
    err = capsys.readouterr().err
    assert f"metrics.top2_error._target_='{MODULE}.top2_error' is not allowed" in err
    assert f"lossbench-repro --allow-target {MODULE}.top2_error" in err
    # a prefix that only looks like the package allows nothing
    lookalike = ["--allow-target", MODULE[:-3], "--no-record", "--tracking-uri", store_uri]
    assert repro_main([run_id, *lookalike]) == 2
    capsys.readouterr()

    allow = ["--allow-target", MODULE, "--no-record", "--tracking-uri", store_uri]
    assert repro_main([run_id, *allow]) == 0
    out = capsys.readouterr().out
    assert "test/top2_error" in out and "test/ece" in out and "IDENTICAL" in out
