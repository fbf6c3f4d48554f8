"""The audit: a sweep trains one member of each stack again as its plain model alone and
compares; a coupling between members fails it loudly, and claims refuse such runs."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from lossbench.claims.evidence import INCONCLUSIVE, RunData
from lossbench.recipe import stacked_optim
from lossbench.results import RunResult
from lossbench.sweep.audit import audit_member, compare, off_menu, wants_audit
from lossbench.sweep.checking import check_specs
from lossbench.sweep.executors import make_executor
from lossbench.sweep.run import run_sweep
from test_cli_reliability import command, environment, runs

BASE = ["tracking=none", "dataset.source.n_samples=200", "trainer.max_epochs=3", "batch_size=32"]
MINE = {"_target_": "test_own_recipes.PerTensorNorm", "_partial_": True, "lr": 0.02}


def sweep(make_spec, overrides: Sequence[str], optimizer: dict[str, Any] | None, audit: str):  # noqa: ANN001, ANN201
    """Four seeds in one stack, trained in this process; the plan and each job's result."""
    specs = [make_spec([*BASE, *overrides, f"seed={seed}"]) for seed in range(4)]
    for spec in specs:
        if optimizer is not None:
            spec.cfg["optimizer"] = dict(optimizer)
    results: dict[int, RunResult] = {}
    plan = run_sweep(specs, check_specs(specs), "unused", make_executor(1), 1,
                     results.__setitem__, audit=audit)  # fmt: skip
    assert len(plan.stacks) == 1
    return plan, [results[job] for job in range(len(specs))]


def test_auto_audits_a_stack_with_a_users_optimizer_and_it_passes(make_spec) -> None:  # noqa: ANN001
    plan, results = sweep(make_spec, [], MINE, "auto")
    assert plan.audits == {"passed": 1} and not plan.audit_failures
    tags = results[0].tags
    assert {r.tags["lossbench.audit"] for r in results} == {"passed"}
    assert float(tags["lossbench.audit_difference"]) < 1e-5
    assert tags["lossbench.audit_member"].split()[0] in {"0", "1", "2", "3"}


def test_auto_skips_a_stack_of_shipped_presets_and_all_audits_it(make_spec) -> None:  # noqa: ANN001
    plan, results = sweep(make_spec, ["optimizer=adafactor"], None, "auto")
    assert not plan.audits and "lossbench.audit" not in results[0].tags
    plan, results = sweep(make_spec, ["optimizer=adafactor"], None, "all")
    assert plan.audits == {"passed": 1}


def test_a_coupling_between_members_fails_the_audit_with_the_numbers(
    make_spec,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """A test hook steps the user's per-tensor-norm optimizer over the whole stack (one
    instance sees every member's rows): the audit fails, naming the metric and difference."""

    class Coupled(stacked_optim._Member):
        def __init__(self, row: int, recipe: Any, params: Sequence[Tensor]) -> None:
            super().__init__(row, recipe, params)
            if row == 0:
                self.optimizer = recipe.optimizer(params)
            else:
                self.optimizer = torch.optim.SGD(self.params, lr=0.0)

    monkeypatch.setattr(stacked_optim, "_Member", Coupled)
    plan, results = sweep(make_spec, [], MINE, "auto")
    assert plan.audits == {"failed": 1}
    [failure] = plan.audit_failures
    assert "member" in failure and "stacked vs" in failure and "relative" in failure
    assert {r.tags["lossbench.audit"] for r in results} == {"failed"}
    assert float(results[0].tags["lossbench.audit_difference"]) > 1e-3
    assert {r.status for r in results} == {"FINISHED"}  # recorded, tagged as failed audits


def test_the_audited_member_is_chosen_by_the_stacks_configs(make_spec) -> None:  # noqa: ANN001
    cfgs = [make_spec([*BASE, f"seed={seed}"]).cfg for seed in range(6)]
    order = audit_member(cfgs)
    assert sorted(order) == list(range(6))
    assert [cfgs[i]["seed"] for i in order] == [
        list(reversed(cfgs))[i]["seed"] for i in audit_member(list(reversed(cfgs)))
    ]


def test_what_is_off_the_menu(make_spec) -> None:  # noqa: ANN001
    assert off_menu(make_spec(BASE).cfg) == []
    assert off_menu(make_spec([*BASE, "optimizer=muon", "scheduler=wsd"]).cfg) == []
    cfg = make_spec(BASE).cfg
    cfg["optimizer"] = dict(MINE)
    assert off_menu(cfg) == ["test_own_recipes.PerTensorNorm"]
    early = "{_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: val/loss}"
    assert "trainer.callbacks" in off_menu(make_spec([*BASE, f"+trainer.callbacks=[{early}]"]).cfg)
    with pytest.raises(ValueError, match="audit='some' is not one of auto, all, off"):
        wants_audit([cfg], "some")


def test_the_comparison_names_the_first_value_beyond_the_tolerance() -> None:
    plain = RunResult({"val/loss": [0.5, 0.30, 0.20]}, {"test/loss": 0.2})
    close = RunResult({"val/loss": [0.5, 0.3000001, 0.2000001]}, {"test/loss": 0.2})
    off = RunResult({"val/loss": [0.5, 0.3001, 0.2]}, {"test/loss": 0.2})
    sparse = RunResult({"val/loss": [0.2]}, {"test/loss": 0.2}, steps={"val/loss": [2]})
    assert compare(close, plain).passed and compare(sparse, plain).passed
    finding = compare(off, plain)
    assert not finding.passed and finding.where.startswith("val/loss[1]: 0.3001 stacked vs 0.3")


@pytest.mark.slow
def test_an_unstable_recipe_passes_the_audit(make_spec) -> None:  # noqa: ANN001
    """rmsprop at lr 0.05 with an exponential schedule: in float32 a stacked member drifts from
    its plain model by rounding alone (5e-3 in 4 epochs); the audit, in float64, passes."""
    from lossbench.fit.reference import train_plain

    unstable = ["optimizer=rmsprop", "optimizer.lr=0.05", "scheduler=exponential",
                "dataset.source.n_samples=2000", "batch_size=64", "trainer.max_epochs=4"]  # fmt: skip
    plan, results = sweep(make_spec, unstable, None, "all")
    assert plan.audits == {"passed": 1}, results[0].tags
    assert float(results[0].tags["lossbench.audit_difference"]) < 1e-5
    seed0 = make_spec([*BASE, *unstable, "seed=0"]).cfg  # the member that drifts most in float32
    assert not compare(results[0], train_plain(seed0)).passed


def test_claims_refuse_runs_of_a_failed_audit() -> None:
    from lossbench.claims.evaluate import evaluate
    from lossbench.claims.load import load_claims

    [claim] = load_claims(["R4"])
    keys = [(claim.id, *rest) for rest in [("a",), ("b",)]]  # any keys of the claim
    runs = {key: RunData("finished", {"train/loss": 0.1}, {}, 3, f"run{i}", "failed")
            for i, key in enumerate(keys)}  # fmt: skip
    verdict = evaluate(claim, runs)
    assert verdict.verdict == INCONCLUSIVE
    assert all("refused: 2 run(s) failed the audit" in e.why for e in verdict.evidence)


@pytest.mark.slow
def test_a_sweep_whose_audit_fails_exits_non_zero_naming_stack_member_and_metric(
    tmp_path: Path, store_uri: str
) -> None:
    """A user's optimizer whose instances share state (tests/coupled.py) is right alone and
    coupled in a stack: the sweep records every run, tags them, and exits 1 saying why."""
    cmd = command(tmp_path, "audit-fails", "dataset.source.n_samples=200", "trainer.max_epochs=3",
                  "seed=0,1,2", "optimizer._target_=coupled.SharedScale", "~optimizer.betas",
                  "~optimizer.weight_decay", "optimizer.lr=0.5", "hydra.launcher.n_jobs=1")  # fmt: skip
    done = subprocess.run(cmd, env=environment(store_uri), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "1 stack(s) failed the audit" in output and "hydra.launcher.stack=false" in output
    assert "stacked vs" in output and "(seed " in output and "Traceback" not in output
    recorded = runs(store_uri, "audit-fails")
    assert len(recorded) == 3 and {r.data.tags["lossbench.audit"] for r in recorded} == {"failed"}
    assert {r.info.status for r in recorded} == {"FINISHED"}
