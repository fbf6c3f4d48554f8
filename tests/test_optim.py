"""Schedules follow their definitions; every optimizer lowers the loss with several schedules."""

from __future__ import annotations

import pytest
import torch

from conftest import FAST, conf_options
from lossbench.config.checks import check_run
from lossbench.fit.training import fit_members
from lossbench.recipe import schedules as optim


def lrs(config: dict, epochs: int, steps: int = 1) -> list[float]:
    """The rate at the start of each epoch."""
    optimizer = config["scheduler"].optimizer
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps):
            optimizer.step()
            if config["interval"] == "step":
                config["scheduler"].step()
        if config["interval"] == "epoch":
            config["scheduler"].step()
    return seen


def sgd(lr: float = 1.0) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_article_multistep_is_relative_to_the_base_rate() -> None:
    config = optim.multistep(
        sgd(), max_epochs=120, steps_per_epoch=1, milestones=[50, 100], factors=[0.5, 0.1]
    )
    seen = lrs(config, 120)
    assert seen[49] == 1.0 and seen[50] == 0.5 and seen[99] == 0.5
    assert seen[100] == pytest.approx(0.1)


def test_step_and_exponential() -> None:
    assert lrs(optim.step(sgd(), max_epochs=30, steps_per_epoch=1, step_size=10, gamma=0.5), 30)[
        ::10
    ] == [1.0, 0.5, 0.25]
    seen = lrs(optim.exponential(sgd(), max_epochs=3, steps_per_epoch=1, gamma=0.9), 3)
    assert seen == pytest.approx([1.0, 0.9, 0.81])


def test_per_step_schedules_span_the_whole_run() -> None:
    cosine = lrs(optim.cosine(sgd(), max_epochs=10, steps_per_epoch=5), 10, steps=5)
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.05
    warm = lrs(optim.warmup_cosine(sgd(), max_epochs=10, steps_per_epoch=10), 10, steps=10)
    peak = warm.index(max(warm))
    assert 0 < peak < 3 and warm[-1] < 0.05
    one = lrs(optim.onecycle(sgd(), max_epochs=10, steps_per_epoch=10), 10, steps=10)
    assert one[0] == pytest.approx(1 / 25) and max(one) > 0.9 and one[-1] < 0.1


@pytest.mark.parametrize(
    ("factory", "kwargs", "message"),
    [
        (optim.step, {"gamma": 0}, "gamma=0 must be > 0"),
        (optim.multistep, {"milestones": [50, 10]}, "increasing"),
        (optim.multistep, {"milestones": [5], "factors": [0.5, 0.1]}, "2 values for 1 milestones"),
        (optim.warmup_cosine, {"warmup_fraction": 1.5}, "warmup_fraction"),
    ],
)
def test_bad_schedule_arguments(factory, kwargs: dict, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        factory(sgd(), max_epochs=10, steps_per_epoch=1, **kwargs)


@pytest.mark.parametrize("optimizer", conf_options("optimizer"))
def test_every_optimizer_lowers_the_loss(make_spec, optimizer: str) -> None:  # noqa: ANN001
    """Each optimizer, under three schedules, ends below where it started on a tiny problem."""
    for scheduler in ("constant", "cosine", "multistep"):
        spec = make_spec(
            [
                f"optimizer={optimizer}",
                f"scheduler={scheduler}",
                "tracking=none",
                "dataset.source.n_samples=200",
                "trainer.max_epochs=8",
                "scheduler.milestones=[4,6]" if scheduler == "multistep" else "seed=0",
                "optimizer.lr=0.05" if optimizer != "gd" else "optimizer.lr=0.5",
            ]
        )
        [result] = fit_members([spec.cfg], check_run(spec))
        losses = result.series["train/loss"]
        assert losses[-1] < losses[0], (optimizer, scheduler, losses)


def test_reduce_on_plateau_lowers_the_rate(make_spec) -> None:  # noqa: ANN001
    spec = make_spec(
        [
            *FAST,
            "scheduler=reduce_on_plateau",
            "scheduler.patience=0",
            "scheduler.mode=max",
            "scheduler.monitor=val/loss",
            "trainer.max_epochs=4",
            "tracking=none",
        ]
    )  # mode=max on a falling loss: every epoch is "no improvement"
    [result] = fit_members([spec.cfg], check_run(spec))
    assert result.series["lr"][-1] < result.series["lr"][0]
