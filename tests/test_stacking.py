"""Stacked members train exactly as separate runs with the same seeds would."""

from __future__ import annotations

import pytest

from conftest import conf_options
from lossbench.config import check_run
from lossbench.training import fit_members

SEEDS = (0, 1, 2)
BASE = [
    "tracking=none",
    "dataset.source.n_samples=300",
    "trainer.max_epochs=3",
    "model.dropout=0.1",
]


def assert_same(stacked, separate) -> None:  # noqa: ANN001
    assert set(stacked.series) == set(separate.series)  # same records, however trained
    for name, values in separate.series.items():
        if name.startswith("time/"):
            continue
        assert stacked.series[name] == pytest.approx(values, abs=1e-5), name
    for name, value in separate.final.items():
        if not name.startswith("time/"):
            assert stacked.final[name] == pytest.approx(value, abs=1e-5), name


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
        assert_same(together, alone)


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
        assert_same(together, alone)
