"""Stacked members train as separate runs with the same seeds would: the same records, equal
to float rounding (a stacked fit is another code path: see CROSS_PATH_* in conftest.py)."""

from __future__ import annotations

import pytest

from conftest import assert_results_close, conf_options
from lossbench.config.checks import check_run
from lossbench.fit.training import fit_members

SEEDS = (0, 1, 2)
BASE = [
    "tracking=none",
    "dataset.source.n_samples=300",
    "trainer.max_epochs=3",
    "model.dropout=0.1",
]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", conf_options("optimizer"))
def test_stacked_seeds_equal_separate_runs(make_spec, optimizer: str) -> None:  # noqa: ANN001
    specs = [
        make_spec([*BASE, f"optimizer={optimizer}", "scheduler=cosine", f"seed={s}"]) for s in SEEDS
    ]
    data = check_run(specs[0])
    stacked = fit_members([s.cfg for s in specs], data)
    for spec, together in zip(specs, stacked, strict=True):
        [alone] = fit_members([spec.cfg], data)
        assert_results_close(together, alone)


@pytest.mark.slow
def test_stacked_losses_equal_separate_runs(make_spec) -> None:  # noqa: ANN001
    specs = [
        make_spec([*BASE, f"loss={loss}", f"seed={seed}", "dataset=blobs"])
        for loss in ("cross_entropy", "focal", "mse", "hinge")
        for seed in (0, 1)
    ]
    data = check_run(specs[0])
    stacked = fit_members([s.cfg for s in specs], data)
    for spec, together in zip(specs, stacked, strict=True):
        [alone] = fit_members([spec.cfg], data)
        assert_results_close(together, alone)
