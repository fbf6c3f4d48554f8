"""The reference of every run: the plain model, trained by a plain PyTorch loop.

A run's reference is the model ``tracking.log_model`` exports (an ``nn.Sequential`` of
``nn.Linear``, weights ``[out, in]``, biases ``[out]``, in that parameter order), with the
run's init (its seed's stream 0), data order (stream 1: a new permutation each epoch) and
dropout masks (stream 2), its loss and penalty, its optimizer on the plain model's parameters
(``step(closure)``, the closure computing the gradients) and its schedule, stepped per step or
per epoch as it says (after the epoch's validation, with the monitored value for one that
reads a metric). No Lightning, no stacking, no tracking: a stacked fit is a faster way to
compute exactly this, and the tests and the sweep's audit compare the two.

Recorded as a fit records them: per epoch train/loss (the mean of the batches' losses, at each
step's first evaluation), train/grad_norm (the mean over optimizer steps of the norm of all
gradients, before clipping), lr (the first param group's, as the epoch starts), val/* (eval
mode, every epoch: a fit that validates less often records a subset); at the end
train/final_loss, test/*, and the config's metrics. ``trainer.max_steps``,
``accumulate_grad_batches`` and gradient clipping are followed as Lightning follows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossbench.config.checks import epoch_metrics
from lossbench.config.spec import batch_rows, build
from lossbench.problem.data import SplitData, load_dataset
from lossbench.problem.losses import member_penalty
from lossbench.problem.metrics import (
    build_metrics,
    classification_metrics,
    member_values,
    metric_inputs,
    regression_metrics,
)
from lossbench.problem.models import member_generators
from lossbench.recipe.early_stopping import member_stopping
from lossbench.results import RunResult


class PlainModel:
    """Member 0 of the run's model alone (``StackedMLP.member``), trained as an ordinary
    ``nn.Sequential``; dropout masks come from the member's own generator, as in a stack."""

    def __init__(self, cfg: Mapping[str, Any], data: SplitData) -> None:
        seed = int(cfg["seed"])
        stacked = build(cfg["model"])(
            in_features=data.n_features, out_features=data.n_outputs, seeds=[seed]
        )
        self.net: nn.Sequential = stacked.member(0)
        self.dropout = stacked.dropout
        self.dropout_generator = member_generators([seed], stream=2)[0] if self.dropout else None

    def parameters(self) -> list[nn.Parameter]:
        """Each layer's weight, then its bias."""
        return list(self.net.parameters())

    def weight_matrices(self) -> list[Tensor]:
        """The weight matrices, first layer first."""
        return [layer.weight for layer in self.net if isinstance(layer, nn.Linear)]

    def __call__(self, x: Tensor, training: bool) -> Tensor:
        """Outputs ``[B, out]``; dropout (where the model has it) only while ``training``."""
        h = x
        for layer in self.net:
            if isinstance(layer, nn.Dropout):
                if training:
                    keep = 1.0 - self.dropout
                    mask = torch.rand(h.shape, generator=self.dropout_generator) < keep
                    h = h * mask / keep
                continue
            h = layer(h)
        return h


def _evaluate(
    output: Tensor,
    target: Tensor,
    prefix: str,
    loss: Callable[[Tensor, Tensor], Tensor],
    data: SplitData,
    metrics: Mapping[str, Any],
) -> dict[str, float]:
    """Loss, the task's metrics and ``metrics`` (name -> Metric) of one split, as floats."""
    out = output.unsqueeze(0)  # one member; the split's targets are shared, as in a fit
    row = {f"{prefix}/loss": loss(out, target.unsqueeze(0))}
    if data.task == "regression":
        row.update(regression_metrics(out, target, data.y_mean, data.y_std))
    else:
        row.update(classification_metrics(out, target, data.n_classes))
    if metrics:
        inputs, true = metric_inputs(out, target, data.task, data.y_mean, data.y_std)
        for name, metric in metrics.items():
            row[f"{prefix}/{name}"] = member_values(name, metric.fn(inputs, true), 1)
    return {
        (name if name.startswith(f"{prefix}/") else f"{prefix}/{name}"): float(value.reshape(-1)[0])
        for name, value in row.items()
    }


@dataclass
class Fit:
    """The Trainer options a plain loop follows as Lightning does (the others that change the
    computation are refused by :mod:`lossbench.config.trainer_options`)."""

    max_epochs: int
    max_steps: int = -1  # optimizer steps; -1: none
    accumulate: int = 1  # accumulate_grad_batches
    clip_value: float | None = None  # gradient_clip_val
    clip_algorithm: str = "norm"

    @classmethod
    def of(cls, trainer: Mapping[str, Any]) -> Fit:
        """From a ``trainer`` config."""
        return cls(
            int(trainer["max_epochs"]),
            int(trainer.get("max_steps") or -1),
            int(trainer.get("accumulate_grad_batches") or 1),
            trainer.get("gradient_clip_val"),
            str(trainer.get("gradient_clip_algorithm") or "norm"),
        )

    def clip(self, params: list[nn.Parameter]) -> None:
        """Clip the gradients as Lightning does before an optimizer step."""
        if self.clip_value is None:
            return
        if self.clip_algorithm == "value":
            nn.utils.clip_grad_value_(params, self.clip_value)
        else:
            nn.utils.clip_grad_norm_(params, self.clip_value)


def _step(
    optimizer: torch.optim.Optimizer,
    model: PlainModel,
    objective: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    window: list[tuple[Tensor, Tensor]],
    fit: Fit,
) -> tuple[list[Tensor], Tensor, float]:
    """One optimizer step over a window of ``fit.accumulate`` batches, as Lightning takes it:
    gradients zeroed at the window's first batch, each batch's objective divided by the
    window's size, the last one's backward in the step's closure, clipped after it. Returns
    the batches' losses, the last objective and the gradient norm of the step's first
    evaluation (an optimizer may evaluate its closure again)."""
    losses: list[Tensor] = []
    optimizer.zero_grad()
    for xb, yb in window[:-1]:
        loss, total = objective(xb, yb)
        (total / fit.accumulate).backward()
        losses.append(loss.detach())
    first: list[Any] = []
    xb, yb = window[-1]

    def closure() -> Tensor:
        if len(window) == 1:
            optimizer.zero_grad()
        loss, total = objective(xb, yb)
        (total / fit.accumulate).backward()
        if not first:
            squares = [p.grad.square().sum() for p in model.parameters() if p.grad is not None]
            first.extend([loss.detach(), total.detach(), float(torch.stack(squares).sum().sqrt())])
        fit.clip(model.parameters())
        return total

    optimizer.step(closure)
    if not first:
        raise RuntimeError(f"{type(optimizer).__name__}.step() did not call its closure")
    return [*losses, first[0]], first[1], first[2]


def train_plain(
    cfg: Mapping[str, Any], data: SplitData | None = None, exact: bool = False
) -> RunResult:
    """Train one run's plain model with a plain loop; its per-epoch series and final metrics
    (a run whose objective becomes NaN or inf stops there, as a diverged member does).

    ``exact``: in float64 (the same init, data and masks, the arithmetic 2^29 times finer), to
    see how far float32 rounding moves this training (the audit's allowance)."""
    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(int(cfg["seed"]))  # as Lightning's seed_everything, for a user's code
    if data is None:
        data = load_dataset(cfg["dataset"], int(cfg["data_seed"]))
    model = PlainModel(cfg, data)
    dtype = torch.float64 if exact else torch.float32
    model.net.to(dtype)
    loss_fn = build(cfg["loss"])
    penalty = (str(cfg["penalty"]["kind"]), float(cfg["penalty"]["strength"]))
    metrics = build_metrics(cfg.get("metrics"), data.task)
    every_epoch = {n: m for n, m in metrics.items() if m.every_epoch}
    split = {name: torch.from_numpy(getattr(data, name)) for name in
             ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")}  # fmt: skip
    for name, tensor in split.items():
        if tensor.is_floating_point():
            split[name] = tensor.to(dtype)
    x, y = split["x_train"], split["y_train"]
    n, batch = len(y), batch_rows(cfg["batch_size"], data)
    fit = Fit.of(cfg["trainer"])
    steps_per_epoch = math.ceil(math.ceil(n / batch) / fit.accumulate)
    max_epochs = fit.max_epochs
    optimizer = build(cfg["optimizer"])(model.parameters())
    schedule = None
    if cfg.get("scheduler"):
        schedule = build(cfg["scheduler"])(
            optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch
        )
    order = member_generators([int(cfg["seed"])], stream=1)[0]

    def objective(xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        loss = loss_fn(model(xb, training=True).unsqueeze(0), yb.unsqueeze(0))[0]
        extra = member_penalty([w.unsqueeze(0) for w in model.weight_matrices()], [penalty])
        return loss, loss if extra is None else loss + extra[0]

    stopping = member_stopping(cfg, epoch_metrics(cfg, data.task), 1)
    kept: list[Tensor] | None = None  # early stopping's weights, restored at the end
    stopped_at = -1
    series: dict[str, list[float]] = {}
    diverged_at, steps = -1, 0
    for epoch in range(max_epochs):
        lr = float(optimizer.param_groups[0]["lr"])
        losses: list[Tensor] = []
        norms: list[float] = []
        batches = [slice(None)] if batch >= n else torch.randperm(n, generator=order).split(batch)
        windows = [batches[i : i + fit.accumulate] for i in range(0, len(batches), fit.accumulate)]
        for window in windows:
            batch_losses, total, norm = _step(
                optimizer, model, objective, [(x[rows], y[rows]) for rows in window], fit
            )
            losses += batch_losses
            norms.append(norm)
            steps += 1
            if not math.isfinite(float(total)):
                diverged_at = epoch
                break
            if schedule is not None and schedule["interval"] == "step":
                schedule["scheduler"].step()
            if steps == fit.max_steps:
                break
        if diverged_at >= 0:
            break
        with torch.no_grad():
            val = _evaluate(model(split["x_val"], training=False), split["y_val"], "val",
                            loss_fn, data, every_epoch)  # fmt: skip
        if not math.isfinite(val["val/loss"]):
            diverged_at = epoch
            break
        row = {"train/loss": float(torch.stack(losses).mean()), "lr": lr, **val}
        row["train/grad_norm"] = sum(norms) / len(norms)
        for name, value in row.items():
            series.setdefault(name, []).append(value)
        if schedule is not None and schedule["interval"] == "epoch":
            monitor = schedule.get("monitor")
            if monitor:
                schedule["scheduler"].step(row[monitor])
            else:
                schedule["scheduler"].step()
        if stopping is not None and stopping.rule.due(epoch):
            current = torch.tensor([row[stopping.rule.monitor]])
            improved, stop = stopping.update(current, torch.tensor([True]))
            if bool(stop[0] if stopping.rule.restore == "final" else improved[0]):
                kept = [p.detach().clone() for p in model.parameters()]
            if bool(stop[0]):
                stopped_at = epoch
                break
        if steps == fit.max_steps:
            break
    if kept is not None:
        with torch.no_grad():
            for p, value in zip(model.parameters(), kept, strict=True):
                p.copy_(value)
    final = {name: values[-1] for name, values in series.items()}
    if diverged_at >= 0:
        return RunResult(series, final, status="FAILED",
                         tags={"lossbench.status": "diverged",
                               "lossbench.diverged_epoch": str(diverged_at)})  # fmt: skip
    with torch.no_grad():
        final["train/final_loss"] = float(loss_fn(model(x, training=False)[None], y[None])[0])
        final.update(_evaluate(model(split["x_test"], training=False), split["y_test"], "test",
                               loss_fn, data, metrics))  # fmt: skip
        at_end = {n: m for n, m in metrics.items() if not m.every_epoch}
        if at_end:
            val_end = _evaluate(model(split["x_val"], training=False), split["y_val"], "val",
                                loss_fn, data, at_end)  # fmt: skip
            final.update({k: v for k, v in val_end.items() if k[4:] in at_end})
    tags = {"lossbench.stopped_epoch": str(stopped_at)} if stopped_at >= 0 else {}
    return RunResult(series, final, tags=tags)
