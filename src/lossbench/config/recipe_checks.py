"""Dry runs of a recipe's components on the plain model, before anything trains: what a user's
own optimizer, schedule or loss must do, checked with a message that says what to fix.

The signatures (one per component kind):

- **optimizer**: ``optimizer(params) -> torch.optim.Optimizer`` (a class with
  ``_partial_: true``), over the plain model's parameters (each layer's weight ``[out, in]``,
  then its bias ``[out]``); its ``step(closure)`` calls ``closure()`` (under
  ``torch.enable_grad()``), which computes the gradients and returns the loss;
- **schedule**: ``schedule(optimizer, *, max_epochs, steps_per_epoch, **options)`` returning
  Lightning's scheduler config: ``{"scheduler": <has .step()>, "interval": "step" | "epoch"}``
  (and ``"monitor": "val/loss"`` for one that reads a metric: such runs train alone);
- **loss**: ``loss(output [K, B, out], target [K, B]) -> Tensor [K]``, one finite value per
  stacked member, differentiable.

Each raises ``ValueError`` naming what is wrong; :func:`lossbench.config.checks.check_run` adds the
config group.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

REFUSED = {
    "SparseAdam": "SparseAdam steps sparse gradients (embeddings), and these MLPs' gradients "
    "are dense: use Adam, or Adafactor for a memory-light optimizer",
}


def _name(thing: Any) -> str:
    target = getattr(thing, "func", thing)  # a partial's class or function
    return getattr(target, "__qualname__", type(target).__name__)


def check_optimizer(
    factory: Callable[..., Any], plain: nn.Module, objective: Callable[[], Tensor]
) -> Optimizer:
    """Build the optimizer on the plain model and take one step with a closure that computes
    ``objective()``'s gradients; returns the optimizer (for the schedule's check)."""
    name = _name(factory)
    if name in REFUSED:
        raise ValueError(REFUSED[name])
    try:
        optimizer = factory(plain.parameters())
    except Exception as err:
        raise ValueError(f"{name}(params, ...) raised {type(err).__name__}: {err}") from None
    if not isinstance(optimizer, Optimizer):
        raise ValueError(
            f"{name} gave {type(optimizer).__name__}, not a torch.optim.Optimizer: an optimizer "
            "_target_ is an Optimizer class (or a function returning one) taking the parameters "
            "first, with _partial_: true"
        )
    name = type(optimizer).__name__
    calls = 0

    def closure() -> Tensor:
        nonlocal calls
        calls += 1
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    try:
        optimizer.step(closure)
    except Exception as err:
        raise ValueError(
            f"{name} failed on its first step, on the plain model ({type(err).__name__}: {err}); "
            "fix the class or its hyperparameters"
        ) from None
    if calls == 0:
        raise ValueError(
            f"{name}.step() did not call its closure: lossbench, as Lightning, computes the "
            "gradients in the closure. Call `loss = closure()` under torch.enable_grad() at "
            "the start of step(), as torch.optim's optimizers do"
        )
    bad = [tuple(p.shape) for p in plain.parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ValueError(f"{name}'s first step made weights of shapes {bad} NaN or inf")
    return optimizer


def check_schedule(factory: Callable[..., Any], optimizer: Optimizer, max_epochs: int) -> None:
    """Build the schedule on the optimizer and check the config it returns."""
    name = _name(factory)
    try:
        config = factory(optimizer, max_epochs=max_epochs, steps_per_epoch=1)
    except Exception as err:
        if isinstance(err, ValueError):  # a validation message, naming the key
            raise ValueError(str(err)) from None
        raise ValueError(f"{name} raised {type(err).__name__}: {err}") from None
    valid = (
        isinstance(config, dict)
        and callable(getattr(config.get("scheduler"), "step", None))
        and config.get("interval") in ("step", "epoch")
    )
    if not valid:
        raise ValueError(
            f"{name} returned {config!r}: a schedule returns Lightning's scheduler config, "
            '{"scheduler": <an LRScheduler>, "interval": "step" or "epoch"} (see '
            "lossbench.recipe.schedules.wsd for an example)"
        )


def check_loss(loss: Callable[[Tensor, Tensor], Any], output: Tensor, target: Tensor) -> None:
    """The loss of ``output [1, B, out]`` against ``target [1, B]``: one finite value per
    member, with a gradient."""
    name = _name(type(loss)) if not callable(getattr(loss, "func", None)) else _name(loss)
    value = loss(output, target)
    if not isinstance(value, Tensor) or value.shape != (1,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"{name} returned {shape}; a loss returns one value per stacked member: "
            "loss(output [K, B, out], target [K, B]) -> Tensor [K]"
        )
    if not math.isfinite(float(value[0].detach())):
        raise ValueError(f"{name} is {float(value[0].detach())} on a few rows: it must be finite")
    if value.grad_fn is None:
        raise ValueError(
            f"{name} has no gradient (it was computed outside autograd, e.g. with .item(), "
            "NumPy or torch.no_grad()): the model could not learn from it"
        )
