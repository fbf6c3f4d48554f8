"""lossbench-repro: a recorded run trained again is IDENTICAL only where everything deciding its
floating-point results is as recorded; elsewhere it is judged within a tolerance, and the
output says what differs."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from conftest import FAST
from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError, RunSpec
from lossbench.fit.training import fit_members
from lossbench.repro import main, reproduce
from lossbench.results import RunResult
from lossbench.tracking.writer import Tracker


def record(
    make_spec, store_uri: str, experiment: str, losses: tuple[str, ...], sql_batches: bool = True
) -> list[str]:  # noqa: ANN001
    """Train one stack (one member per loss, seed 4) and record its runs; returns their ids."""
    specs = [make_spec([*FAST, f"tracking.uri={store_uri}", f"tracking.experiment={experiment}",
                        f"loss={loss}", "seed=4"]) for loss in losses]  # fmt: skip
    data = check_run(specs[0])
    tracker = Tracker(store_uri, experiment, sql_batches=sql_batches)
    run_ids = tracker.start_runs(specs, data.summary())
    tracker.finish_runs(run_ids, fit_members([s.cfg for s in specs], data))
    return run_ids


@pytest.mark.slow
@pytest.mark.parametrize("sql_batches", [True, False], ids=["sql", "api"])
def test_a_trained_run_records_what_decides_its_floats(
    make_spec, store_uri: str, sql_batches: bool
) -> None:  # noqa: ANN001
    """Both write paths store the tags the fit adds to its result."""
    [run_id] = record(
        make_spec, store_uri, f"float-tags-{sql_batches}", ("cross_entropy",), sql_batches
    )
    tags = MlflowClient(store_uri).get_run(run_id).data.tags
    assert tags["lossbench.cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert tags["lossbench.torch_build"].startswith(torch.__version__)
    assert tags["lossbench.device"] == "cpu"  # no GPU in these tests


@pytest.mark.slow
def test_repro_of_a_stacked_run_is_identical(make_spec, store_uri: str) -> None:  # noqa: ANN001
    run_ids = record(make_spec, store_uri, "repro", ("cross_entropy", "focal"))
    repro = reproduce(run_ids[1], store_uri)
    assert repro.same_environment and repro.identical and repro.reproduced
    assert repro.verdict().startswith("IDENTICAL")
    assert any(name == "test/acc" for name, _, _ in repro.rows)
    assert "stack of 2" in repro.notes[0]
    rerun = MlflowClient(store_uri).get_run(repro.rerun_id)
    assert (
        rerun.data.tags["lossbench.repro_of"] == run_ids[1]
        and rerun.data.tags["lossbench.role"] == "repro"
    )


@pytest.mark.slow
def test_repro_on_another_cpu_kind_is_within_tolerance_not_identical(
    make_spec, store_uri: str, capsys: pytest.CaptureFixture
) -> None:  # noqa: ANN001
    """A run recorded where torch used other CPU kernels: equal metrics here prove nothing
    about bits there, so the verdict is WITHIN TOLERANCE and the output names the difference."""
    [run_id] = record(make_spec, store_uri, "repro-cpu", ("cross_entropy",))
    here = torch.backends.cpu.get_cpu_capability()
    there = "DEFAULT" if here != "DEFAULT" else "AVX2"
    MlflowClient(store_uri).set_tag(run_id, "lossbench.cpu_capability", there)

    repro = reproduce(run_id, store_uri, record=False)
    assert repro.environment_differences == {"lossbench.cpu_capability": (there, here)}
    assert not repro.same_environment and repro.within_tolerance and repro.reproduced
    assert repro.verdict().startswith("WITHIN TOLERANCE")

    assert main([run_id, "--tracking-uri", store_uri, "--no-record"]) == 0
    printed = capsys.readouterr().out
    assert f"lossbench.cpu_capability: {there} -> {here}" in printed
    assert "WITHIN TOLERANCE" in printed and "IDENTICAL" not in printed


def test_repro_refuses_what_no_longer_exists_or_is_not_allowed(make_spec, store_uri: str) -> None:  # noqa: ANN001
    tracker = Tracker(store_uri, "repro-bad")
    spec = make_spec([*FAST])
    for target, message in (
        ("lossbench.problem.losses.RemovedLoss", "loss.*RemovedLoss"),
        ("os.system", "loss._target_='os.system' is not allowed"),
    ):
        cfg = {**spec.cfg, "loss": {"_target_": target}}
        run_id = tracker.start_run(RunSpec(cfg, spec.choices, spec.overrides))
        tracker.finish_run(run_id, RunResult(final={"val/acc": 0.5}))
        with pytest.raises(ConfigError, match=message):
            reproduce(run_id, store_uri, record=False)
