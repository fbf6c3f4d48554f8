"""The LightningModule of a fit (its data module: :mod:`lossbench.fit.batches`).

The module receives its model, losses, optimizer and schedule; it never picks them. It trains K
stacked members at once (K=1 for a plain run) and keeps one row of per-member metrics per epoch
in memory: no ``self.log`` per step, no logger. Whoever runs the fit decides where rows go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lossbench.problem.data import SplitData
from lossbench.problem.losses import Loss, member_penalty
from lossbench.problem.metrics import (
    Metric,
    classification_metrics,
    member_values,
    metric_inputs,
    regression_metrics,
)
from lossbench.problem.models import StackedMLP
from lossbench.recipe.early_stopping import MemberStopping

EpochRow = dict[str, Tensor]  # metric name -> one value per member, [K]


class RecipeModule(pl.LightningModule):
    """Trains stacked members with the given losses and penalties (one per member), optimizer
    and schedule.

    ``optimizer`` binds an optimizer to the stacked parameters (a partial of a torch.optim
    class, or :class:`lossbench.recipe.stacked_optim.StackedOptimizer` for members with different
    recipes); ``scheduler`` follows :mod:`lossbench.recipe.schedules`'s signature and returns one
    Lightning scheduler config or a list of them. After each epoch, ``history`` gains one row:
    train/loss, train/grad_norm, lr (each member's, when the optimizer reports ``member_lrs``)
    and the val/ metrics. ``metrics`` (the config's, for this task: see
    :mod:`lossbench.problem.metrics`) are computed with the built-in ones: on test at the end, and on
    val at the end too, or every epoch for those that say ``every_epoch``.

    A member whose loss becomes NaN or inf has diverged: from that step on its loss is masked
    out (no gradient reaches it; its siblings train on), ``diverged_at`` holds the epoch, and
    the fit stops as soon as every member has diverged. With ``stopping`` (per-member early
    stopping, :mod:`lossbench.recipe.early_stopping`), a member that stops is masked out likewise,
    ``stopped_at`` holds the epoch, and at the fit's end it gets back the weights the rule
    keeps (of that epoch, or of its best). ``on_epoch_end(epoch, row, alive)`` gets each row,
    and which members are alive, while some member is alive (live curves send metrics as they
    come through it).
    """

    def __init__(
        self,
        model: StackedMLP,
        losses: Sequence[Loss],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., dict[str, Any]] | None,
        data: SplitData,
        penalties: Sequence[tuple[str, float]] = (),
        on_epoch_end: Callable[[int, EpochRow, Tensor], None] | None = None,
        metrics: Mapping[str, Metric] | None = None,
        stopping: MemberStopping | None = None,
    ) -> None:
        super().__init__()
        if len(losses) != model.n_members:
            raise ValueError(f"{len(losses)} losses for {model.n_members} members")
        self.model = model
        self.loss_groups, self._loss_order = _group_losses(losses)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.task, self.n_classes = data.task, data.n_classes
        self.y_mean, self.y_std = data.y_mean, data.y_std
        self.penalties = list(penalties) or [("none", 0.0)] * model.n_members
        self.on_epoch_end = on_epoch_end
        self.metrics = dict(metrics or {})
        self._every_epoch = [name for name, m in self.metrics.items() if m.every_epoch]
        self.history: list[EpochRow] = []
        self.end_metrics: EpochRow = {}  # test/*, train/final_loss, end-of-fit diagnostics
        self.extra_row: EpochRow = {}  # this epoch's values from callbacks (diagnostics)
        self.last_step_losses = torch.zeros(model.n_members)
        self._monitor: str | None = None
        self._sums: dict[str, Tensor] = {}
        self._steps = 0
        self._optimizer_steps = 0
        self._val: EpochRow = {}
        self._val_at = -1  # the optimizer step (global_step) whose weights _val describes
        self._lr = torch.zeros(model.n_members)
        self.diverged_at = torch.full((model.n_members,), -1, dtype=torch.long)
        self.stopping = stopping
        self.stopped_at = torch.full((model.n_members,), -1, dtype=torch.long)
        self._kept: dict[int, list[Tensor]] = {}  # member -> weights to restore at the end
        # a run alone whose config has Lightning callbacks: each epoch's row goes to
        # self.log too, where EarlyStopping, ModelCheckpoint, ... read it
        self.log_epoch_metrics = False
        self._objectives = torch.zeros(model.n_members)
        self._evaluated: tuple[int, int] | None = None  # (epoch, batch) last counted
        self._norm_step = -1  # the optimizer step whose gradient norm was counted
        self._masked = False  # some member has diverged or stopped: losses need its mask

    @property
    def latest_val(self) -> EpochRow:
        """The validation loss and metrics of the current weights, ``[K]`` each, as an epoch
        ends: Lightning's validation if it ran after the epoch's last step; at the fit's last
        epoch, one run now if it did not; else empty (this epoch has no validation)."""
        if self._val and self._val_at == self.trainer.global_step:
            return self._val
        if not self._fit_ending():
            return {}
        x, y = self.trainer.datamodule.split("val")
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            self._val = self.evaluate(self.model(x), y, "val", self._every_epoch)
        self._val_at = self.trainer.global_step
        self.model.train(training)
        self._val_at = self.trainer.global_step
        return self._val

    def _fit_ending(self) -> bool:
        """Whether the epoch ending now is the fit's last (max_epochs, max_steps, or stopped)."""
        trainer = self.trainer
        max_steps = trainer.max_steps if trainer.max_steps is not None else -1
        return (
            trainer.should_stop
            or self.current_epoch + 1 >= int(trainer.max_epochs or 1)
            or (max_steps >= 0 and trainer.global_step >= max_steps)
        )

    @property
    def alive(self) -> Tensor:
        """Which members still train (neither diverged nor stopped early), ``[K]`` bool."""
        return (self.diverged_at < 0) & (self.stopped_at.to(self.diverged_at.device) < 0)

    def _mark_diverged(self, finite: Tensor) -> None:
        """Record the current epoch for members whose values just became non-finite."""
        newly = self.alive & ~finite
        self.diverged_at = torch.where(newly, self.current_epoch, self.diverged_at)
        self._update_masked()

    def _update_masked(self) -> None:
        """Note whether some member no longer trains; stop the fit when none does."""
        alive = self.alive
        self._masked = not bool(alive.all())
        if not bool(alive.any()):
            self.trainer.should_stop = True

    def _check_stopping(self, row: EpochRow) -> None:
        """One early-stopping check of the epoch's row: members that stop are masked out from
        now on, and the weights the rule keeps are set aside for the fit's end."""
        rule = self.stopping.rule if self.stopping is not None else None
        if rule is None or not rule.due(self.current_epoch) or rule.monitor not in row:
            return
        improved, stop = self.stopping.update(row[rule.monitor], self.alive)
        keep = improved if rule.restore == "best" else stop
        for member in keep.nonzero().flatten().tolist():
            self._kept[member] = [p[member].detach().clone() for p in self.model.parameters()]
        self.stopped_at = torch.where(stop, self.current_epoch, self.stopped_at)
        self._update_masked()

    @torch.no_grad()
    def _restore_kept(self) -> None:
        """Give members the weights early stopping kept for them."""
        for member, kept in self._kept.items():
            for p, value in zip(self.model.parameters(), kept, strict=True):
                p[member] = value.to(p.device)

    def on_fit_start(self) -> None:
        """Divergence bookkeeping lives on the training device."""
        self.diverged_at = self.diverged_at.to(self.device)

    # -- losses and metrics ----------------------------------------------------------------

    def member_losses(self, output: Tensor, target: Tensor) -> Tensor:
        """Each member's loss under its own loss function, ``[K]``."""
        if target.dim() == 1:  # one batch shared by all members
            target = target.expand(output.shape[:-1])
        if len(self.loss_groups) == 1:
            return self.loss_groups[0][0](output, target)
        values = torch.cat([loss(output[rows], target[rows]) for loss, rows in self.loss_groups])
        if self._loss_order is None:
            return values
        return values[self._loss_order.to(values.device)]

    def evaluate(
        self, output: Tensor, target: Tensor, prefix: str, metrics: Sequence[str] = ()
    ) -> EpochRow:
        """Loss and task metrics of every member on one evaluation split, and the config's
        ``metrics`` named."""
        row = {f"{prefix}/loss": self.member_losses(output, target)}
        if self.task == "regression":
            built_in = regression_metrics(output, target, self.y_mean, self.y_std)
        else:
            built_in = classification_metrics(output, target, self.n_classes)
        row.update({f"{prefix}/{name}": value for name, value in built_in.items()})
        row.update(self.config_metrics(output, target, prefix, metrics))
        return row

    def config_metrics(
        self, output: Tensor, target: Tensor, prefix: str, names: Sequence[str]
    ) -> EpochRow:
        """The config's metrics ``names`` of every member on one split."""
        if not names:
            return {}
        inputs, true = metric_inputs(output, target, self.task, self.y_mean, self.y_std)
        k = output.shape[0]
        return {
            f"{prefix}/{name}": member_values(name, self.metrics[name].fn(inputs, true), k)
            for name in names
        }

    # -- Lightning hooks -------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """Bind the optimizer to the stacked parameters (in the plain model's order: each
        layer's weight, then its bias); build the schedule for this fit."""
        optimizer = self.optimizer_factory(self.model.layer_parameters())
        if hasattr(optimizer, "objectives"):  # a StackedOptimizer's per-member optimizers
            optimizer.objectives = self.member_objectives
        if self.scheduler_factory is None:
            return optimizer
        max_epochs = int(self.trainer.max_epochs or 1)
        steps_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // max_epochs)
        schedules = self.scheduler_factory(
            optimizer, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch
        )
        configs = [schedules] if isinstance(schedules, dict) else list(schedules)
        self._monitor = next((c["monitor"] for c in configs if c.get("monitor")), None)
        if len(configs) == 1:
            return {"optimizer": optimizer, "lr_scheduler": configs[0]}
        return [optimizer], configs

    def member_objectives(self) -> Tensor:
        """Each member's objective (loss + penalty) at the latest evaluation, ``[K]``."""
        return self._objectives

    def lr_scheduler_step(self, scheduler: Any, metric: Any | None) -> None:
        """Step a schedule as Lightning does: also the members' own schedules of a stack
        (:class:`lossbench.recipe.stacked_optim.MemberSchedules`), which are not torch schedulers."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)

    def on_train_epoch_start(self) -> None:
        """Reset the epoch's accumulators; note the rate in effect as the epoch starts."""
        k = self.model.n_members
        dtype = self.model.weights[0].dtype  # float64 in the audit's fit
        self._sums = {
            "train/loss": torch.zeros(k, device=self.device, dtype=dtype),
            "train/grad_norm": torch.zeros(k, device=self.device, dtype=dtype),
        }
        self._steps = 0
        self._optimizer_steps = 0
        optimizer = self.trainer.optimizers[0]
        if hasattr(optimizer, "member_lrs"):
            self._lr = optimizer.member_lrs()
        else:
            self._lr = torch.full((k,), float(optimizer.param_groups[0]["lr"]))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        """Sum of the members' losses: its gradient is each member's own gradient. Diverged
        members contribute nothing. An optimizer that evaluates its closure again at the same
        batch (a line search) does not count that evaluation in train/loss."""
        x, y = batch
        losses = self.member_losses(self.model(x), y)
        penalty = member_penalty(self.model.weight_matrices(), self.penalties)
        objective = losses if penalty is None else losses + penalty
        self._objectives = objective.detach()
        finite = torch.isfinite(self._objectives)
        if not bool(finite.all()):  # one check a step; the masks change only then
            self._mark_diverged(finite)
        # while every member trains, the mask would keep every value as it is
        alive = self.alive if self._masked else None
        if (self.current_epoch, batch_idx) != self._evaluated:
            self._evaluated = (self.current_epoch, batch_idx)
            self.last_step_losses = losses.detach()
            counted = losses.detach() if alive is None else torch.where(alive, losses.detach(), 0.0)
            self._sums["train/loss"] += counted
            self._steps += 1
        return (objective if alive is None else torch.where(alive, objective, 0.0)).sum()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Accumulate each member's gradient norm (over all its parameters), once per
        optimizer step (Lightning calls this after each evaluation of the closure)."""
        if self._norm_step == self.trainer.global_step:
            return
        self._norm_step = self.trainer.global_step
        self._optimizer_steps += 1
        self._sums["train/grad_norm"] += member_grad_norms(optimizer, self.parameters())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Validation loss and metrics of every member."""
        x, y = batch
        self._val = self.evaluate(self.model(x), y, "val", self._every_epoch)
        self._val_at = self.trainer.global_step

    def on_validation_epoch_end(self) -> None:
        """Expose the monitored metric to Lightning (reduce_on_plateau runs alone, K=1)."""
        if self._monitor and self._monitor in self._val:
            self.log(self._monitor, self._val[self._monitor].mean())

    def on_train_epoch_end(self) -> None:
        """Close the epoch's row (validation has run by now) and hand it on."""
        val = self.latest_val  # empty for an epoch without validation of its last weights
        if "val/loss" in val:
            self._mark_diverged(torch.isfinite(val["val/loss"]))
        row = {"train/loss": self._sums["train/loss"] / max(self._steps, 1)}
        # a norm per optimizer step (accumulate_grad_batches: one per several batches)
        row["train/grad_norm"] = self._sums["train/grad_norm"] / max(self._optimizer_steps, 1)
        row["lr"] = self._lr
        row.update(val)
        row.update(self.extra_row)
        self.extra_row = {}
        row = {name: value.detach().cpu() for name, value in row.items()}
        self.history.append(row)
        if self.log_epoch_metrics:  # one member (runs with callbacks train alone)
            for name, value in row.items():
                self.log(name, float(value[0]))
        if self.on_epoch_end is not None and bool(self.alive.any()):
            self.on_epoch_end(self.current_epoch, row, self.alive)
        self._check_stopping(row)

    @torch.no_grad()
    def on_fit_end(self) -> None:
        """Members stopped early get the weights their rule kept; then the final model's loss
        on the whole training split (no dropout)."""
        self._restore_kept()
        x, y = self.trainer.datamodule.split("train")
        self.model.eval()
        self.end_metrics["train/final_loss"] = self.member_losses(self.model(x), y)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """Test loss and metrics of every member, with the final weights; and the config's
        metrics on val that are not computed every epoch (the final weights' values)."""
        x, y = batch
        self.end_metrics.update(self.evaluate(self.model(x), y, "test", list(self.metrics)))
        at_end = [name for name in self.metrics if name not in self._every_epoch]
        if at_end:
            x, y = self.trainer.datamodule.split("val")
            self.end_metrics.update(self.config_metrics(self.model(x), y, "val", at_end))


def member_grad_norms(optimizer: torch.optim.Optimizer, params: Iterable[Tensor]) -> Tensor:
    """Each member's gradient norm over all its parameters, ``[K]``: the norm of the
    parameters' norms. With a stacked optimizer's ``[K, P]`` gradient buffer (each member's
    gradients in one row), one norm per row: the same value (up to float rounding) in one
    kernel instead of two per parameter."""
    rows = optimizer.grad_rows() if hasattr(optimizer, "grad_rows") else None
    if rows is not None:
        return torch.linalg.vector_norm(rows, dim=1)
    norms = [
        torch.linalg.vector_norm(p.grad.flatten(1), dim=1) for p in params if p.grad is not None
    ]
    return torch.linalg.vector_norm(torch.stack(norms), dim=0)


def _group_losses(
    losses: Sequence[Loss],
) -> tuple[list[tuple[Loss, slice | Tensor]], Tensor | None]:
    """The members of each loss function, as a slice of the stack where they are next to each
    other (``fit_members`` orders them so where it can), else as indices; and the order that
    puts the groups' concatenated values back in member order (``None``: already in order).
    Each loss runs once per step."""
    members: dict[Loss, list[int]] = {}
    for member, loss in enumerate(losses):
        members.setdefault(loss, []).append(member)
    groups: list[tuple[Loss, slice | Tensor]] = []
    for loss, rows in members.items():
        contiguous = rows == list(range(rows[0], rows[-1] + 1))
        groups.append((loss, slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows)))
    concatenated = [member for rows in members.values() for member in rows]
    if concatenated == list(range(len(losses))):
        return groups, None
    return groups, torch.argsort(torch.tensor(concatenated))
