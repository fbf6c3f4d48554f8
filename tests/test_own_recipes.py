"""Your own recipe: every torch.optim optimizer, and a user's own optimizers, schedule and loss,
train each stacked member exactly as the plain model trains alone in a plain PyTorch loop
(lossbench.fit.reference): a different code path, compared within the tolerance policy."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor

from conftest import CROSS_PATH_ATOL, CROSS_PATH_RTOL
from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError, RunSpec
from lossbench.fit.reference import train_plain
from lossbench.fit.training import fit_members
from lossbench.recipe import stacked_optim
from lossbench.sweep.stacking import stack_key

BASE = ["tracking=none", "dataset.source.n_samples=200", "trainer.max_epochs=4", "batch_size=32"]
HERE = __name__


# -- a user's own optimizers (as in their own module) -------------------------------------------


class PerTensorNorm(torch.optim.Optimizer):
    """LARS-like: each parameter tensor steps along its gradient over the gradient's norm (a
    value computed over a whole tensor: in a stack it must see one member's tensor)."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad / (p.grad.norm() + 1e-8), alpha=-group["lr"])
        return loss


class SignMomentum(torch.optim.Optimizer):
    """Keeps per-parameter state (a momentum buffer, and a step count), steps by its sign."""

    def __init__(self, params: Any, lr: float = 0.01, beta: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "beta": beta})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["buffer"], state["steps"] = torch.zeros_like(p), 0
                state["buffer"].mul_(group["beta"]).add_(p.grad)
                state["steps"] += 1
                p.add_(state["buffer"].sign(), alpha=-group["lr"] / math.sqrt(state["steps"]))
        return loss


class LookTwice(torch.optim.Optimizer):
    """Calls its closure twice a step (as SAM or a line search does): a half step, then a
    step along the gradient evaluated there; returns the first loss."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        assert closure is not None
        with torch.enable_grad():
            first = closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] / 2)
        with torch.enable_grad():
            closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] / 2)
        return first


class IgnoresClosure(torch.optim.SGD):
    """Steps with whatever gradients are there and never calls its closure."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> None:  # type: ignore[override]
        return None


class FailsOnFirstStep(torch.optim.SGD):
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> None:  # type: ignore[override]
        raise RuntimeError("my optimizer is not finished yet")


def not_an_optimizer(params: Any, lr: float = 0.1) -> list:
    return list(params)


class FocalOfMine:
    """A user's loss, a plain callable: binary cross-entropy weighted by (1 - p)^2 (focal,
    written from scratch), one value per member."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        logp = torch.nn.functional.logsigmoid(torch.where(target.bool(), 1, -1) * output[..., 0])
        return (-((1 - logp.exp()) ** 2) * logp).mean(-1)


def optimizer(target: str, lr: float, **options: Any) -> dict[str, Any]:
    return {"_target_": target, "_partial_": True, "lr": lr, **options}


# -- every torch.optim class, and the user's ---------------------------------------------------
# (name, optimizer config per lr, the four members' lrs). Rates are around each one's usual.
T = "torch.optim."
OPTIMIZERS: dict[str, tuple[Callable[[float], dict[str, Any]], Sequence[float]]] = {
    "ASGD": (lambda lr: optimizer(T + "ASGD", lr, t0=10.0), (0.01, 0.02, 0.05, 0.1)),
    "Adadelta": (lambda lr: optimizer(T + "Adadelta", lr), (0.3, 0.5, 1.0, 2.0)),
    "Adafactor": (lambda lr: optimizer(T + "Adafactor", lr), (0.003, 0.01, 0.02, 0.05)),
    "Adagrad": (lambda lr: optimizer(T + "Adagrad", lr), (0.01, 0.02, 0.05, 0.1)),
    "Adam": (lambda lr: optimizer(T + "Adam", lr), (0.001, 0.003, 0.01, 0.03)),
    "AdamW": (lambda lr: optimizer(T + "AdamW", lr), (0.001, 0.003, 0.01, 0.03)),
    "Adamax": (lambda lr: optimizer(T + "Adamax", lr), (0.002, 0.005, 0.01, 0.02)),
    "LBFGS": (lambda lr: optimizer(T + "LBFGS", lr, max_iter=3), (0.01, 0.02, 0.05, 0.1)),
    "NAdam": (lambda lr: optimizer(T + "NAdam", lr), (0.002, 0.005, 0.01, 0.02)),
    "RAdam": (lambda lr: optimizer(T + "RAdam", lr), (0.001, 0.003, 0.01, 0.03)),
    "RMSprop": (lambda lr: optimizer(T + "RMSprop", lr), (0.001, 0.003, 0.01, 0.03)),
    "Rprop": (lambda lr: optimizer(T + "Rprop", lr), (0.001, 0.003, 0.01, 0.03)),
    "SGD": (lambda lr: optimizer(T + "SGD", lr, momentum=0.9), (0.01, 0.02, 0.05, 0.1)),
    "PerTensorNorm": (lambda lr: optimizer(f"{HERE}.PerTensorNorm", lr), (0.01, 0.02, 0.05, 0.1)),
    "SignMomentum": (lambda lr: optimizer(f"{HERE}.SignMomentum", lr), (0.001, 0.003, 0.01, 0.02)),
    "LookTwice": (lambda lr: optimizer(f"{HERE}.LookTwice", lr), (0.05, 0.1, 0.2, 0.5)),
}
# The torch.optim classes tested elsewhere in this module
ELSEWHERE = {"Muon": "optimizer=muon (Muon takes matrices only)", "SparseAdam": "refused"}


def _specs(make_spec, overrides: Sequence[str], nodes: Sequence[dict[str, Any]]) -> list[RunSpec]:  # noqa: ANN001
    """One run per optimizer node (seeds 0, 1, ...), composed with ``overrides``."""
    specs = []
    for seed, node in enumerate(nodes):
        spec = make_spec([*BASE, *overrides, f"seed={seed}"])
        spec.cfg["optimizer"] = node
        specs.append(spec)
    return specs


def worst_difference(result: Any, reference: Any) -> tuple[float, str]:
    """The largest difference between two results' per-epoch values (at the epochs the first
    records) and final metrics (times left out), as max(|a - b| - atol, 0) / |b|: 0 within
    the absolute tolerance; and where."""
    assert set(reference.series) <= set(result.series)  # diagnostics may add more
    worst, where = 0.0, ""
    pairs = []
    for name in reference.series:
        plain = dict(reference.points(name))
        mine = result.points(name)
        assert mine and mine[-1][0] == max(plain), f"{name}: the last epoch is not recorded"
        pairs += [(f"{name}[{e}]", a, plain[e]) for e, a in mine]
    pairs += [
        (n, result.final[n], v) for n, v in reference.final.items() if not n.startswith("time/")
    ]  # noqa: E501
    for name, a, b in pairs:
        excess = max(abs(a - b) - CROSS_PATH_ATOL, 0.0) / max(abs(b), 1e-12)
        if excess > worst:
            worst, where = excess, f"{name}: {a} vs {b}"
    return worst, where


def assert_members_match_plain_model(
    specs: Sequence[RunSpec], rtol: float = CROSS_PATH_RTOL
) -> None:  # noqa: E501
    """The runs trained as lossbench plans them (stacked where they stack) equal each one's
    plain model trained alone by the plain loop, on every per-epoch and final metric."""
    data = check_run(specs[0])
    for spec in specs[1:]:
        check_run(spec)
    keys = {stack_key(s) for s in specs}
    results = (
        fit_members([s.cfg for s in specs], data)
        if None not in keys
        else [fit_members([s.cfg], data)[0] for s in specs]
    )
    for spec, result in zip(specs, results, strict=True):
        reference = train_plain(spec.cfg, data)
        assert reference.series["val/loss"][-1] < reference.series["val/loss"][0] or (
            result.diverged
        ), "the member did not train"
        worst, where = worst_difference(result, reference)
        assert worst <= rtol, f"lr={spec.cfg['optimizer']['lr']}: {where} (relative {worst:.2e})"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_member_of_a_stack_trains_as_its_plain_model_alone(make_spec, name: str) -> None:  # noqa: ANN001
    """Four members differing in lr, each equal to its plain model trained by a plain loop to
    the tolerance policy (1e-5) on every per-epoch and final metric."""
    node, lrs = OPTIMIZERS[name]
    specs = _specs(make_spec, [], [node(lr) for lr in lrs])
    if name == "LBFGS":  # it evaluates many times a step: its runs train alone
        assert {stack_key(s) for s in specs} == {None}
    else:
        assert len({stack_key(s) for s in specs}) == 1
    assert_members_match_plain_model(specs)


def test_the_table_covers_every_torch_optimizer() -> None:
    names = {n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
             and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
             and n != "Optimizer"}  # fmt: skip
    assert names == {n for n in OPTIMIZERS if hasattr(torch.optim, n)} | set(ELSEWHERE)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "rtol"),
    [
        (["optimizer=adafactor"], CROSS_PATH_RTOL),
        # Muon orthogonalizes its update in bfloat16 (8-bit mantissa): a last-bit difference in
        # a float32 gradient (the stack's batched matmuls against nn.Linear's) can flip one
        # rounding of 2^-8 = 4e-3 relative; 4 epochs showed up to 6e-5 in a loss. 1e-3 keeps a
        # 15x margin and is still 10x below a real coupling (6e-3 and up, issue 21).
        (["optimizer=muon"], 1e-3),
        (["scheduler=wsd", "optimizer=adam"], CROSS_PATH_RTOL),
    ],
)
def test_shipped_presets_stack_and_match_the_plain_model(
    make_spec,
    overrides: list[str],
    rtol: float,  # noqa: ANN001
) -> None:
    lrs = (0.5, 1.0, 2.0, 4.0)  # times the preset's lr
    specs = []
    for seed, factor in enumerate(lrs):
        spec = make_spec([*BASE, *overrides, f"seed={seed}"])
        spec.cfg["optimizer"]["lr"] = spec.cfg["optimizer"]["lr"] * factor
        specs.append(spec)
    assert len({stack_key(s) for s in specs}) == 1
    assert_members_match_plain_model(specs, rtol)  # stacked
    assert_members_match_plain_model(specs[:1], rtol)  # and alone


@pytest.mark.slow
def test_a_users_loss_and_schedules_stack_and_match_the_plain_model(make_spec) -> None:  # noqa: ANN001
    specs = [
        make_spec([*BASE, "scheduler=wsd", "scheduler.warmup_fraction=0.25", "seed=0"]),
        make_spec([*BASE, "scheduler=cosine", "seed=1", "optimizer=sgd", "optimizer.lr=0.1"]),
        make_spec([*BASE, "scheduler=wsd", "scheduler.decay_fraction=0.5", "seed=2"]),
    ]
    for spec in specs:
        spec.cfg["loss"] = {"_target_": f"{HERE}.FocalOfMine"}
    assert len({stack_key(s) for s in specs}) == 1
    assert_members_match_plain_model(specs)


def test_a_coupling_between_members_fails_the_comparison(
    make_spec,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    """A mutation of the per-member path, stepping every member's rows as one tensor (what
    lossbench did before): the per-tensor norm mixes members, and the comparison says so."""

    class Coupled(stacked_optim._Member):
        def __init__(self, row: int, recipe: Any, params: Sequence[Tensor]) -> None:
            super().__init__(row, recipe, params)
            if row == 0:  # member 0 steps the whole stack; the others do nothing
                self.optimizer = recipe.optimizer(params)
            else:
                self.optimizer = torch.optim.SGD(self.params, lr=0.0)

    monkeypatch.setattr(stacked_optim, "_Member", Coupled)
    node, lrs = OPTIMIZERS["PerTensorNorm"]
    specs = _specs(make_spec, ["trainer.max_epochs=2"], [node(0.02) for _ in range(4)])
    with pytest.raises(AssertionError, match="relative"):
        assert_members_match_plain_model(specs)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (optimizer(f"{HERE}.not_an_optimizer", 0.1), "gave list, not a torch.optim.Optimizer"),
        (optimizer(T + "Adam", 0.1, betas=[2.0, 0.9]),
         r"Adam\(params, ...\) raised ValueError: Invalid beta parameter"),
        (optimizer(f"{HERE}.IgnoresClosure", 0.1), "step\\(\\) did not call its closure"),
        (optimizer(f"{HERE}.FailsOnFirstStep", 0.1),
         "FailsOnFirstStep failed on its first step.*my optimizer is not finished yet"),
        (optimizer(T + "SparseAdam", 0.1), "SparseAdam steps sparse gradients.*use Adam"),
        ({"_target_": "lossbench.recipe.param_sets.by_kind", "_partial_": True, "lr": 0.02,
          "hidden": optimizer(T + "Muon", 0.1), "rest": optimizer(T + "AdamW", 0.001)},
         "remove optimizer.hidden.lr"),
    ],
)  # fmt: skip
def test_bad_optimizers_are_refused_before_training_naming_what_to_do(
    make_spec,
    node: dict[str, Any],
    message: str,  # noqa: ANN001
) -> None:
    spec = make_spec([*BASE])
    spec.cfg["optimizer"] = node
    with pytest.raises(ConfigError, match=f"optimizer=adam: .*{message}"):
        check_run(spec)


def test_muon_needs_a_hidden_matrix(make_spec) -> None:  # noqa: ANN001
    spec = make_spec([*BASE, "optimizer=muon", "model.hidden=[16]"])
    with pytest.raises(ConfigError, match="none of them hidden.*model.hidden=\\[64,64\\]"):
        check_run(spec)


def bad_schedule(optimizer: Any, *, max_epochs: int, steps_per_epoch: int) -> Any:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)  # not Lightning's config


def test_a_bad_schedule_and_a_bad_loss_are_refused_before_training(make_spec) -> None:  # noqa: ANN001
    spec = make_spec([*BASE])
    spec.cfg["scheduler"] = {"_target_": f"{HERE}.bad_schedule", "_partial_": True}
    with pytest.raises(ConfigError, match="returned .*StepLR.*a schedule returns Lightning's"):
        check_run(spec)
    spec = make_spec([*BASE])
    spec.cfg["loss"] = {"_target_": "lossbench.problem.losses.CrossEntropy"}
    check_run(spec)
    spec.cfg["loss"] = {"_target_": f"{HERE}.MeanOnly"}
    with pytest.raises(ConfigError, match="returned \\(\\); a loss returns one value per stacked"):
        check_run(spec)


class MeanOnly:
    """Wrong: one number for the whole stack."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        return output.mean()
