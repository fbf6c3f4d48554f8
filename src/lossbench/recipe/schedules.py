"""Learning-rate schedules, one signature for all:
``schedule(optimizer, *, max_epochs, steps_per_epoch) -> Lightning lr_scheduler config``.

Optimizers need no wrapper: configs name ``torch.optim`` classes with ``_partial_: true`` and the
LightningModule binds them to its parameters. Schedules do need one, because several depend on
the length of training, which only the trainer and the data know.

Each returns the dict Lightning expects from ``configure_optimizers``: the scheduler, whether it
steps per ``epoch`` or per ``step``, and for reduce_on_plateau the metric it monitors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

SchedulerConfig = dict[str, Any]


def _config(scheduler: Any, interval: str = "epoch", **extra: Any) -> SchedulerConfig:
    return {"scheduler": scheduler, "interval": interval, "frequency": 1, **extra}


def constant(optimizer: Optimizer, *, max_epochs: int, steps_per_epoch: int) -> SchedulerConfig:
    """A fixed learning rate."""
    return _config(sched.ConstantLR(optimizer, factor=1.0, total_iters=0))


def step(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    step_size: int = 10,
    gamma: float = 0.5,
) -> SchedulerConfig:
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""
    _check_positive(step_size=step_size, gamma=gamma)
    return _config(sched.StepLR(optimizer, step_size=step_size, gamma=gamma))


@dataclass(frozen=True)
class _Piecewise:
    """Factor of the base rate: ``factors[i]`` from epoch ``milestones[i]`` on (picklable)."""

    milestones: tuple[int, ...]
    factors: tuple[float, ...]

    def __call__(self, epoch: int) -> float:
        factor = 1.0
        for milestone, f in zip(self.milestones, self.factors, strict=True):
            if epoch >= milestone:
                factor = f
        return factor


def multistep(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    milestones: Sequence[int] = (30, 40),
    gamma: float = 0.1,
    factors: Sequence[float] | None = None,
) -> SchedulerConfig:
    """Piecewise-constant rate that changes at the given epochs.

    With ``factors``, the rate is ``base * factors[i]`` from ``milestones[i]`` on (the article's
    "0.5x after epoch 50, 0.1x after epoch 100" is ``milestones=[50, 100], factors=[0.5, 0.1]``).
    Without, it is multiplied by ``gamma`` at each milestone, as torch's MultiStepLR.
    """
    milestones = tuple(int(m) for m in milestones)
    if list(milestones) != sorted(milestones) or any(m <= 0 for m in milestones):
        raise ValueError(f"scheduler.milestones={list(milestones)} must be increasing epochs > 0")
    if factors is None:
        _check_positive(gamma=gamma)
        return _config(sched.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma))
    if len(factors) != len(milestones):
        raise ValueError(
            f"scheduler.factors has {len(factors)} values for {len(milestones)} milestones"
        )
    _check_positive(**{f"factors[{i}]": f for i, f in enumerate(factors)})
    piecewise = _Piecewise(milestones, tuple(float(f) for f in factors))
    return _config(sched.LambdaLR(optimizer, lr_lambda=piecewise))


def exponential(
    optimizer: Optimizer, *, max_epochs: int, steps_per_epoch: int, gamma: float = 0.95
) -> SchedulerConfig:
    """Multiply the rate by ``gamma`` after every epoch."""
    _check_positive(gamma=gamma)
    return _config(sched.ExponentialLR(optimizer, gamma=gamma))


def cosine(
    optimizer: Optimizer, *, max_epochs: int, steps_per_epoch: int, eta_min: float = 0.0
) -> SchedulerConfig:
    """Cosine annealing from the base rate to ``eta_min`` over the whole run, stepped per batch."""
    total = max(1, max_epochs * steps_per_epoch)
    return _config(sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min), "step")


@dataclass(frozen=True)
class _WarmupCosine:
    """Factor of the base rate: linear warm-up, then cosine decay to ``final`` (picklable)."""

    warmup: int
    total: int
    final: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.1,
    final_factor: float = 0.0,
) -> SchedulerConfig:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay, per batch."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"scheduler.warmup_fraction={warmup_fraction} must be in [0, 1)")
    total = max(1, max_epochs * steps_per_epoch)
    warmup = max(1, round(warmup_fraction * total)) if warmup_fraction else 0
    factor = _WarmupCosine(warmup, total, float(final_factor))
    return _config(sched.LambdaLR(optimizer, lr_lambda=factor), "step")


class WarmupStableDecay:
    """Factor of the base rate at a step: linear warm-up to 1 over ``warmup`` steps, 1 until
    ``decay_start``, then linear decay to ``final`` at ``total`` (a class, not a closure:
    picklable, as a schedule's state must be)."""

    def __init__(self, warmup: int, decay_start: int, total: int, final: float) -> None:
        self.warmup, self.decay_start, self.total, self.final = warmup, decay_start, total, final

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if step < self.decay_start:
            return 1.0
        progress = min(1.0, (step - self.decay_start) / max(1, self.total - self.decay_start))
        return 1.0 + (self.final - 1.0) * progress


def wsd(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    warmup_fraction: float = 0.05,
    decay_fraction: float = 0.2,
    final_factor: float = 0.0,
) -> SchedulerConfig:
    """Warmup-stable-decay, per step: a linear warm-up over ``warmup_fraction`` of the steps, the
    base rate, then a linear decay to ``final_factor`` times it over the last
    ``decay_fraction``. Written as a user would write a schedule of their own: the signature
    every schedule has, torch's ``LambdaLR``, and the Lightning scheduler config it returns."""
    if not (
        warmup_fraction >= 0.0 and decay_fraction >= 0.0 and warmup_fraction + decay_fraction <= 1.0
    ):
        raise ValueError(
            f"scheduler.warmup_fraction={warmup_fraction} and decay_fraction={decay_fraction} must "
            "be >= 0 with a sum <= 1"
        )
    total = max(1, max_epochs * steps_per_epoch)
    warmup = round(warmup_fraction * total)
    decay_start = total - round(decay_fraction * total)
    factor = WarmupStableDecay(warmup, decay_start, total, float(final_factor))
    scheduler = sched.LambdaLR(optimizer, lr_lambda=factor)
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}


def onecycle(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> SchedulerConfig:
    """Smith's one-cycle policy with the optimizer's lr as the peak, per batch.

    Momentum (or Adam's beta1) is cycled too when the optimizer has one.
    """
    defaults = optimizer.defaults
    cycle_momentum = bool(defaults.get("momentum")) or "betas" in defaults
    peak = [group["lr"] for group in optimizer.param_groups]
    return _config(
        sched.OneCycleLR(
            optimizer,
            max_lr=peak,
            total_steps=max(2, max_epochs * steps_per_epoch),
            pct_start=pct_start,
            div_factor=div_factor,
            final_div_factor=final_div_factor,
            cycle_momentum=cycle_momentum,
        ),
        "step",
    )


def reduce_on_plateau(
    optimizer: Optimizer,
    *,
    max_epochs: int,
    steps_per_epoch: int,
    monitor: str = "val/loss",
    mode: str = "min",
    factor: float = 0.5,
    patience: int = 5,
    min_lr: float = 0.0,
) -> SchedulerConfig:
    """Multiply the rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    It reads a metric of the whole fit, so runs using it are never stacked with others.
    """
    plateau = sched.ReduceLROnPlateau(
        optimizer, mode=mode, factor=factor, patience=patience, min_lr=min_lr
    )
    return _config(plateau, monitor=monitor)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"scheduler.{name}={value} must be > 0")
