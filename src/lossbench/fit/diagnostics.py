"""Optional per-run measurements, switched on by the ``diagnostics`` config, recorded as ordinary
run metrics (claims read them; they never recompute them). Off, they cost nothing.

All are computed for every stacked member at once, ``[K]`` values. Per epoch (step = epoch):

- ``layer_grad_norms``: ``grad_norm/layer{i}``, the gradient norm of layer i's weight and bias,
  mean over the epoch's steps (layer 0 takes the inputs; the last one is the output layer).
- ``update_size``: ``update/size``, the L2 norm of each step's parameter change, mean over the
  epoch's steps.

At the end of training:

- ``step_loss_noise``: ``train/step_loss_noise``, the standard deviation of the change in
  training loss from one step to the next, over the second half of training.
- ``weights``: ``weights/norm/layer{i}`` (Frobenius norm of the weight matrix) and
  ``weights/near_zero_share/layer{i}`` (share of weights with ``|w| < near_zero``).
- ``dead_units``: ``units/dead_share``, the share of hidden units whose pre-activation is <= 0
  for every training row (a dead ReLU gets no gradient; a leaky one still does).
- ``target``: ``{metric: val/acc, value: 0.9}`` gives ``target/epochs``, the first epoch (1, 2,
  ...) whose value reaches the target ("reaches": at or above it where higher is better, at or
  below otherwise, as :mod:`lossbench.problem.directions` says), NaN if none does (censored),
  and ``target/reached``. The metric is one the run records every epoch on validation
  (checked before training: :func:`lossbench.config.checks.check_run`); with validation every
  k epochs, the first validated epoch that reaches it.
- ``coefficients``: for a model without hidden layer on a regression task, the learned
  ``coef/w{i}`` and ``coef/b``, and ordinary least squares on the same training rows:
  ``ols/w{i}``, ``ols/b`` with 95% t-intervals ``ols/w{i}_low``, ``ols/w{i}_high``, ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from lossbench.analysis.stats import t_bounds
from lossbench.problem.directions import higher_is_better

FLAGS = (
    "layer_grad_norms",
    "update_size",
    "step_loss_noise",
    "weights",
    "dead_units",
    "coefficients",
)


def check_diagnostics(cfg: Mapping[str, Any]) -> None:
    """Raise ValueError for unknown diagnostics keys or a malformed target."""
    valid = (*FLAGS, "near_zero", "target")
    unknown = sorted(set(cfg) - set(valid))
    if unknown:
        raise ValueError(f"unknown diagnostics {unknown}; valid: {', '.join(valid)}")
    target = cfg.get("target")
    if target is not None and (
        not isinstance(target, Mapping) or set(target) != {"metric", "value"}
    ):
        raise ValueError(f"diagnostics.target={target!r} must be {{metric: ..., value: ...}}")
    if not float(cfg.get("near_zero", 1e-3)) > 0:
        raise ValueError(f"diagnostics.near_zero={cfg.get('near_zero')} must be > 0")


class Diagnostics(pl.Callback):
    """Adds the enabled measurements to the RecipeModule's rows (``extra_row``) and final
    metrics (``end_metrics``)."""

    def __init__(
        self, cfg: Mapping[str, Any], x_train: Tensor, data_facts: Mapping[str, Any]
    ) -> None:
        check_diagnostics(cfg)
        self.cfg = dict(cfg)
        self.x_train = x_train
        self.task = data_facts["task"]
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._before: list[Tensor] = []
        self._step_losses: list[Tensor] = []
        self._reached: Tensor | None = None
        self._counted = -1  # the global step whose gradient was measured

    @staticmethod
    def wanted(cfg: Mapping[str, Any] | None) -> bool:
        """Whether any diagnostic is on."""
        return bool(cfg) and (any(cfg.get(f) for f in FLAGS) or cfg.get("target") is not None)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: Any) -> None:  # noqa: D102
        self._sums, self._steps = {}, 0  # _steps: optimizer steps (not batches)

    def _add(self, name: str, value: Tensor) -> None:
        self._sums[name] = self._sums.get(name, 0) + value.detach()

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: Any, optimizer: Any) -> None:  # noqa: D102
        if self._counted == trainer.global_step:  # the closure evaluated again: counted once
            return
        self._counted = trainer.global_step
        self._steps += 1
        model = module.model
        if self.cfg.get("layer_grad_norms"):
            for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
                square = w.grad.square().sum(dim=(1, 2)) + b.grad.square().sum(dim=1)
                self._add(f"grad_norm/layer{i}", square.sqrt())
        if self.cfg.get("update_size"):
            self._before = [p.detach().clone() for p in model.parameters()]

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:  # noqa: D102
        if self.cfg.get("update_size") and self._before and trainer.global_step != self._counted:
            moved = sum(
                (p.detach() - old).square().flatten(1).sum(1)
                for p, old in zip(module.model.parameters(), self._before, strict=True)
            )
            self._add("update/size", moved.sqrt())
            self._before = []
        if (
            self.cfg.get("step_loss_noise")
            and trainer.current_epoch >= (trainer.max_epochs or 1) // 2
        ):
            self._step_losses.append(module.last_step_losses.detach().clone())

    def on_train_epoch_end(self, trainer: pl.Trainer, module: Any) -> None:  # noqa: D102
        steps = max(self._steps, 1)
        module.extra_row.update({name: total / steps for name, total in self._sums.items()})
        target = self.cfg.get("target")
        if target is not None and target["metric"] in module.latest_val:
            value = module.latest_val[target["metric"]]
            # the direction its metrics: entry declares, else the built-in metric's
            declared = {name: m.higher_is_better for name, m in module.metrics.items()}
            higher = higher_is_better(target["metric"], declared)
            hit = value >= target["value"] if higher else value <= target["value"]
            if self._reached is None:
                self._reached = torch.full_like(value, math.nan)
            first = torch.isnan(self._reached) & hit
            self._reached = torch.where(first, float(trainer.current_epoch + 1), self._reached)

    @torch.no_grad()
    def on_fit_end(self, trainer: pl.Trainer, module: Any) -> None:  # noqa: D102
        model, out = module.model, module.end_metrics
        if self.cfg.get("target") is not None and self._reached is not None:
            out["target/epochs"] = self._reached
            out["target/reached"] = (~torch.isnan(self._reached)).float()
        if self.cfg.get("step_loss_noise"):
            losses = torch.stack(self._step_losses) if len(self._step_losses) > 2 else None
            k = model.n_members
            out["train/step_loss_noise"] = (
                losses.diff(dim=0).std(dim=0) if losses is not None else torch.full((k,), math.nan)
            )
        if self.cfg.get("weights"):
            threshold = float(self.cfg.get("near_zero", 1e-3))
            for i, w in enumerate(model.weights):
                out[f"weights/norm/layer{i}"] = w.square().sum(dim=(1, 2)).sqrt()
                out[f"weights/near_zero_share/layer{i}"] = (
                    (w.abs() < threshold).float().mean(dim=(1, 2))
                )
        if self.cfg.get("dead_units") and len(model.weights) > 1:
            x = self.x_train.to(module.device, model.weights[0].dtype)
            dead, units = 0, 0
            h = x
            for w, b in zip(model.weights[:-1], model.biases[:-1], strict=True):
                pre = torch.matmul(h, w.transpose(1, 2)) + b.unsqueeze(1)  # [K, N, width]
                dead = dead + (pre <= 0).all(dim=1).float().sum(dim=1)
                units += pre.shape[-1]
                h = model.activation(pre)
            out["units/dead_share"] = dead / units
        if self.cfg.get("coefficients") and len(model.weights) == 1 and self.task == "regression":
            w, b = model.weights[0], model.biases[0]  # [K, 1, F], [K, 1]
            for i in range(w.shape[2]):
                out[f"coef/w{i}"] = w[:, 0, i]
            out["coef/b"] = b[:, 0]
            y = trainer.datamodule.data.y_train
            for name, value in ols(self.x_train.cpu().numpy(), y).items():
                out[name] = torch.full((model.n_members,), value)


def ols(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Ordinary least squares with intercept: coefficients and their 95% t-intervals."""
    n, p = x.shape
    design = np.column_stack([x.astype(float), np.ones(n)])
    beta, *_ = np.linalg.lstsq(design, y.astype(float), rcond=None)
    dof = n - p - 1
    residual = y - design @ beta
    sigma2 = float(residual @ residual) / dof if dof > 0 else math.nan
    se = np.sqrt(np.diag(sigma2 * np.linalg.pinv(design.T @ design)))
    lows, highs = t_bounds(beta, se, dof)
    names = [f"w{i}" for i in range(p)] + ["b"]
    out = {}
    for name, value, low, high in zip(names, beta, lows, highs, strict=True):
        out[f"ols/{name}"] = float(value)
        out[f"ols/{name}_low"] = float(low)
        out[f"ols/{name}_high"] = float(high)
    return out
