"""Optional per-run measurements: present when switched on, absent when off, per member as
if trained alone (to float rounding: see CROSS_PATH_* in conftest.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as st

from conftest import assert_results_close
from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError
from lossbench.fit.diagnostics import Diagnostics, ols
from lossbench.fit.training import fit_members
from lossbench.problem.models import StackedMLP

ALL_ON = [
    "tracking=none", "trainer.max_epochs=4", "dataset.source.n_samples=300",
    "diagnostics.layer_grad_norms=true", "diagnostics.update_size=true",
    "diagnostics.step_loss_noise=true", "diagnostics.weights=true", "diagnostics.dead_units=true",
    "+diagnostics.target={metric: val/acc, value: 0.8}",
]  # fmt: skip
PER_EPOCH = {"grad_norm/layer0", "grad_norm/layer1", "grad_norm/layer2", "update/size"}
AT_END = {
    "train/step_loss_noise", "units/dead_share", "target/epochs", "target/reached",
    "weights/norm/layer0", "weights/near_zero_share/layer0", "weights/norm/layer2",
}  # fmt: skip


@pytest.mark.slow
def test_diagnostics_are_recorded_only_when_on(make_spec) -> None:  # noqa: ANN001
    on = make_spec([*ALL_ON, "seed=0"])
    off = make_spec(["tracking=none", "trainer.max_epochs=4", "dataset.source.n_samples=300"])
    [with_them] = fit_members([on.cfg], check_run(on))
    [without] = fit_members([off.cfg], check_run(off))
    assert set(with_them.series) >= PER_EPOCH and set(with_them.final) >= AT_END
    assert not (PER_EPOCH | AT_END) & (set(without.series) | set(without.final))
    assert 0 <= with_them.final["units/dead_share"] <= 1
    reached = with_them.final["target/reached"]
    epochs = with_them.final["target/epochs"]
    assert (reached == 1 and 1 <= epochs <= 4) or (reached == 0 and math.isnan(epochs))
    accs = with_them.series["val/acc"]
    if reached:
        assert accs[int(epochs) - 1] >= 0.8 and all(a < 0.8 for a in accs[: int(epochs) - 1])


@pytest.mark.slow
def test_diagnostics_are_per_member(make_spec) -> None:  # noqa: ANN001
    specs = [make_spec([*ALL_ON, f"seed={s}"]) for s in (0, 1)]
    data = check_run(specs[0])
    for spec, together in zip(specs, fit_members([s.cfg for s in specs], data), strict=True):
        [alone] = fit_members([spec.cfg], data)
        assert_results_close(together, alone)


def test_dead_units_and_near_zero_weights_on_a_known_model() -> None:
    model = StackedMLP(2, 1, seeds=[0, 1], hidden=[4])
    with torch.no_grad():
        model.biases[0][0] = -100.0  # member 0: every hidden unit is <= 0 on every input
        model.biases[0][1] = 100.0  # member 1: none is
        model.weights[1][0] = 0.0  # member 0's output weights are all zero
    cfg = {"weights": True, "dead_units": True, "near_zero": 1e-3}
    callback = Diagnostics(cfg, torch.randn(20, 2), {"task": "binary"})
    module = SimpleNamespace(model=model, end_metrics={}, device=torch.device("cpu"))
    callback.on_fit_end(SimpleNamespace(), module)
    assert module.end_metrics["units/dead_share"].tolist() == [1.0, 0.0]
    assert module.end_metrics["weights/near_zero_share/layer1"][0] == 1.0
    assert module.end_metrics["weights/norm/layer1"][0] == 0.0


def test_ols_matches_a_hand_computation() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((100, 1))
    y = 3 * x[:, 0] + 2 + rng.standard_normal(100)
    fit = st.linregress(x[:, 0], y)
    result = ols(x, y)
    assert result["ols/w0"] == pytest.approx(fit.slope) and result["ols/b"] == pytest.approx(
        fit.intercept
    )
    half = st.t.ppf(0.975, 98) * fit.stderr
    assert result["ols/w0_low"] == pytest.approx(fit.slope - half)
    assert result["ols/b_high"] == pytest.approx(
        fit.intercept + st.t.ppf(0.975, 98) * fit.intercept_stderr
    )


@pytest.mark.slow
def test_gradient_descent_coefficients_approach_ols(make_spec) -> None:  # noqa: ANN001
    spec = make_spec(["tracking=none", "dataset=linear1", "model=linear", "loss=mse", "optimizer=gd",
                      "optimizer.lr=0.5", "trainer.max_epochs=400", "diagnostics.coefficients=true"])  # fmt: skip
    [result] = fit_members([spec.cfg], check_run(spec))
    assert result.final["coef/w0"] == pytest.approx(result.final["ols/w0"], abs=1e-3)
    assert result.final["coef/b"] == pytest.approx(result.final["ols/b"], abs=1e-3)


def test_bad_diagnostics_are_clear_errors(make_spec) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="diagnostics.target=.* must be"):
        check_run(make_spec(["+diagnostics.target={metric: val/acc}"]))
    with pytest.raises(
        ConfigError, match="unknown key diagnostics.nope=True.*Keys under diagnostics: coefficients"
    ):
        check_run(make_spec(["+diagnostics.nope=true"]))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{metric: val/nope, value: 0.9}", "diagnostics.target.metric='val/nope' is not a validation "
         "metric this run records every epoch \\(binary data\\); valid: val/acc, val/balanced_acc, "
         "val/f1_macro, val/loss; a metric of yours: every_epoch: true"),
        ("{metric: val/ece, value: 0.1}", "'val/ece' is not a validation metric this run records every epoch"),
        ("{metric: test/acc, value: 0.9}", "'test/acc' is not a validation metric"),
        ("{metric: val/rmse, value: 0.9}", "'val/rmse' is not a validation metric .*binary data"),
        ("{metric: val/acc, value: high}", "diagnostics.target.value='high' must be a number"),
    ],
    ids=["unknown", "not-every-epoch", "test-split", "other-task", "not-a-number"],
)  # fmt: skip
def test_an_unknown_target_metric_is_refused_before_training(
    make_spec,
    target: str,
    message: str,  # noqa: ANN001
) -> None:
    """Issue 23: a target on a metric the run does not record every epoch was never reached,
    and nothing said so."""
    with pytest.raises(ConfigError, match=message):
        check_run(make_spec(["tracking=none", f"+diagnostics.target={target}"]))


def test_a_declared_direction_decides_what_reaching_the_target_means(make_spec) -> None:  # noqa: ANN001
    """A metric of the config declared higher_is_better reaches a target from below: ECE
    recorded as such is at least 0 from the first epoch; taken as lower is better (the
    default), it never gets to 0 or below."""
    entry = ("+metrics.calib={_target_: lossbench.problem.metrics.ece, task: classification, "
             "every_epoch: true")  # fmt: skip
    reached = {}
    for declared in (", higher_is_better: true", ""):
        spec = make_spec(["tracking=none", "trainer.max_epochs=2", "dataset.source.n_samples=200",
                          entry + declared + "}", "+diagnostics.target={metric: val/calib, value: 0.0}"])  # fmt: skip
        [result] = fit_members([spec.cfg], check_run(spec))
        reached[bool(declared)] = result.final["target/epochs"]
    assert reached[True] == 1 and math.isnan(reached[False])
