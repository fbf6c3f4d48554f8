"""One optimizer for a stack: each member steps with its own recipe (optimizer class, learning
rate and other hyperparameters, schedule), exactly as the plain model would alone.

Two ways to step a member, chosen per recipe (:attr:`Recipe.vectorized`):

- **vectorized** (SGD, RMSprop, Adagrad, Adam/AdamW, NAdam with the options
  :mod:`lossbench.recipe.stacked_updates` implements): one update for a whole group of members, a
  column of hyperparameters per member. Each distinct recipe gets a *shadow* ``torch.optim``
  optimizer on a dummy parameter, built from its config, which its own schedule steps: at
  every step the update reads each member's current lr (and momentum or betas, which
  OneCycle cycles) from its shadow, so defaults, validation and schedules behave as alone.
- **per member** (any other optimizer: Adafactor, Muon, a user's class): each member has its
  own instance of its optimizer, over views of its rows of the stack that look exactly like
  the plain model's parameters (weights ``[out, in]``, biases ``[out]``, layer by layer), so
  anything it computes over a whole tensor (a norm, a factored moment, an orthogonalization)
  sees that member alone. Its schedule steps that instance. Its ``step`` gets a closure: the
  first call returns the member's loss of this step (the gradients are in place); a further
  call evaluates the stack again at the current weights (an optimizer that re-evaluates, such
  as a line search, costs a whole stack's step per call).

The parameters and their gradients are views of two ``[K, P]`` buffers (members are rows).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from lossbench.recipe.stacked_updates import VectorGroup, variant


@dataclass(frozen=True)
class Recipe:
    """What a member trains with: an optimizer partial (binds parameters), a
    ``lossbench.recipe.schedules``-style schedule partial (``None``: a constant rate), and whether
    lossbench's vectorized update steps it (else its own instance per member)."""

    optimizer: Callable[[Iterable[Tensor]], Optimizer]
    scheduler: Callable[..., dict[str, Any]] | None = None
    vectorized: bool = True


def group_key(recipe: Recipe) -> str:
    """Members with equal keys are stepped as one group (the same update, in the same form):
    a stack steps fastest with each group's members next to each other."""
    if not recipe.vectorized:
        return "per-member"
    update, _, flags = variant(recipe.optimizer([torch.zeros(1, requires_grad=True)]))
    return ":".join((update.__name__, *sorted(flags)))


class _Member:
    """A member stepped by its own optimizer instance, over views of its rows."""

    def __init__(self, row: int, recipe: Recipe, params: Sequence[Tensor]) -> None:
        self.row = row
        self.params = [p.detach()[row].requires_grad_() for p in params]  # views, plain shapes
        self.optimizer = recipe.optimizer(self.params)
        if not isinstance(self.optimizer, Optimizer):
            raise TypeError(
                f"{type(self.optimizer).__name__} is not a torch.optim.Optimizer: an optimizer "
                "_target_ must build one from the parameters"
            )

    def attach(self, grads: Sequence[Tensor]) -> None:
        """Point each view's gradient at the member's rows of the stacked gradients (again:
        an optimizer may have set them to None)."""
        for p, grad in zip(self.params, grads, strict=True):
            p.grad = grad[self.row]


class StackedOptimizer(Optimizer):
    """Steps K stacked members (parameters ``[K, ...]``, in the plain model's order), member
    ``k`` with ``recipes[member_recipe[k]]``.

    The schedules are built by :func:`member_schedules`, which Lightning steps. ``objectives``
    (set by the LightningModule) returns each member's objective of the latest evaluation,
    ``[K]``: what a per-member optimizer's closure returns.
    """

    def __init__(
        self, params: Iterable[Tensor], recipes: Sequence[Recipe], member_recipe: Sequence[int]
    ) -> None:
        params = list(params)
        super().__init__(params, {"lr": math.nan})  # the rates live in shadows and members
        self.recipes = list(recipes)
        self.member_recipe = list(member_recipe)
        self.n_members = len(self.member_recipe)
        self.objectives: Callable[[], Tensor] | None = None
        self._closure: Callable[[], Any] | None = None
        for p in params:
            if p.dim() == 0 or p.shape[0] != self.n_members:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} is not stacked [K, ...]")
        # The parameters and their gradients become views of two [K, P] buffers, so that
        # each step updates whole rows without gathering and scattering every parameter.
        # Autograd adds each gradient into its view in place, and warns that the view's
        # strides are not the ones it would choose: a matter of speed only. (Adding the same
        # filter again replaces it: the list does not grow.)
        warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout")
        with torch.no_grad():
            self.flat = torch.cat([p.detach().reshape(self.n_members, -1) for p in params], 1)
        self.flat_grad = torch.zeros_like(self.flat)
        self._grads: list[Tensor] = []
        start = 0
        for p in params:
            width = p[0].numel()
            p.data = self.flat[:, start : start + width].view(p.shape)
            p.grad = self.flat_grad[:, start : start + width].view(p.shape)
            self._grads.append(p.grad)
            start += width
        # vectorized recipes: a shadow each (torch builds and validates its hyperparameters)
        self.shadows: list[Optimizer | None] = [
            r.optimizer([torch.zeros(1, requires_grad=True)]) if r.vectorized else None
            for r in self.recipes
        ]
        self.groups: dict[str, VectorGroup] = {}
        self.members: dict[int, _Member] = {}
        for member, r in enumerate(self.member_recipe):
            shadow = self.shadows[r]
            if shadow is None:
                self.members[member] = _Member(member, self.recipes[r], params)
                continue
            update, keys, flags = variant(shadow)
            key = ":".join((update.__name__, *sorted(flags)))  # as group_key's
            self.groups.setdefault(key, VectorGroup(update, keys, flags)).add(member, r)
        for group in self.groups.values():  # a slice where the rows are next to each other
            rows = group.rows
            contiguous = rows == list(range(rows[0], rows[-1] + 1))
            group.span = slice(rows[0], rows[-1] + 1) if contiguous else torch.tensor(rows)
        self.steps = 0
        # MemberSchedules count their steps here: only they change the shadows' and members'
        # hyperparameters, so the vectorized groups read them again only after one
        self.schedule_steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients in place (their buffer stays; ``set_to_none`` is ignored)."""
        self.flat_grad.zero_()

    def member_lrs(self) -> Tensor:
        """Each member's current learning rate (its first parameter group's), ``[K]``."""
        lrs = []
        for member, r in enumerate(self.member_recipe):
            shadow = self.shadows[r]
            owner = shadow if shadow is not None else self.members[member].optimizer
            lrs.append(float(owner.param_groups[0]["lr"]))
        return torch.tensor(lrs)

    def grad_rows(self) -> Tensor | None:
        """The gradients as ``[K, P]`` rows (each member's, in the plain model's parameter
        order), if every parameter's gradient is still its view of that buffer, else None."""
        params = self.param_groups[0]["params"]
        if all(p.grad is grad for p, grad in zip(params, self._grads, strict=True)):
            return self.flat_grad
        return None

    def _reattach(self) -> None:
        params = self.param_groups[0]["params"]
        for p, grad in zip(params, self._grads, strict=True):
            if p.grad is None:
                raise RuntimeError("every stacked parameter needs a gradient at each step")
            if p.grad is not grad:  # replaced by someone else: back into the buffer
                grad.copy_(p.grad)
                p.grad = grad

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One update of every member, each with its own optimizer and current rate."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._reattach()
        self.steps += 1
        flat, grads = self.flat, self.flat_grad
        for key, group in self.groups.items():
            rows = group.span
            if isinstance(rows, Tensor) and rows.device != flat.device:
                group.span = rows = rows.to(flat.device)
            hyper, state = group.hyper(self.shadows, flat, self.schedule_steps), self.state[key]
            if isinstance(rows, slice):  # a view: updated in place
                group.update(flat[rows], grads[rows], state, hyper, self.steps, group.flags)
            else:
                params = flat.index_select(0, rows)
                group.update(
                    params, grads.index_select(0, rows), state, hyper, self.steps, group.flags
                )
                flat.index_copy_(0, rows, params)
        if self.members:
            first = self.objectives() if self.objectives is not None else None
            for member in self.members.values():
                member.attach(self._grads)
                member.optimizer.step(self._member_closure(member, closure, first))
        return loss

    def _member_closure(
        self, member: _Member, closure: Callable[[], Any] | None, first: Tensor | None
    ) -> Callable[[], Tensor]:
        """A per-member optimizer's closure: the member's objective of this step, then, on each
        further call, the stack evaluated again (gradients included) at the current weights."""
        calls = 0

        def member_closure() -> Tensor:
            nonlocal calls
            calls += 1
            if calls > 1:
                if closure is None or self.objectives is None:
                    raise RuntimeError(
                        f"{type(member.optimizer).__name__} evaluates its closure again, which "
                        "needs the stacked fit's closure"
                    )
                with torch.enable_grad():
                    closure()
                self._reattach()
                for m in self.members.values():
                    m.attach(self._grads)
                return self.objectives()[member.row]
            if first is None:
                raise RuntimeError("the stacked optimizer has no objectives to give its members")
            return first[member.row]

        return member_closure


class MemberSchedules:
    """The members' own schedules that step at one ``interval`` (Lightning steps this object
    as it steps a scheduler of that interval)."""

    def __init__(self, optimizer: StackedOptimizer, schedulers: Sequence[Any]) -> None:
        self.optimizer = optimizer  # Lightning checks that a schedule belongs to the optimizer
        self.schedulers = list(schedulers)
        self.stepped = False

    def step(self, metric: Any = None) -> None:
        """Advance every member's schedule by one step (or epoch); ``metric``: the monitored
        value, for a schedule that reads one (a run alone's)."""
        self.optimizer.schedule_steps += 1  # the members' hyperparameters may have changed
        if self.stepped:
            self._step(metric)
            return
        self.stepped = True
        with warnings.catch_warnings():
            # torch warns at a schedule's first step that its optimizer has not stepped: the
            # shadow optimizers never step themselves (the stacked one does their work)
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self._step(metric)

    def _step(self, metric: Any) -> None:
        for scheduler in self.schedulers:
            if metric is None:
                scheduler.step()
            else:
                scheduler.step(metric)

    def state_dict(self) -> dict[str, Any]:
        """The members' schedulers' states."""
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.schedule_steps += 1
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)


def member_schedules(
    optimizer: StackedOptimizer, *, max_epochs: int, steps_per_epoch: int
) -> list[dict[str, Any]]:
    """Each recipe's schedule on its shadow optimizer (vectorized recipes) or on each member's
    own optimizer, as Lightning scheduler configs: one per interval (``step``, ``epoch``) that
    some member's schedule uses."""
    owners: list[tuple[Recipe, Optimizer]] = []
    for recipe, shadow in zip(optimizer.recipes, optimizer.shadows, strict=True):
        if shadow is not None:
            owners.append((recipe, shadow))
    for member in optimizer.members.values():
        owners.append((optimizer.recipes[optimizer.member_recipe[member.row]], member.optimizer))
    by_interval: dict[str, list[Any]] = {}
    for recipe, owner in owners:
        if recipe.scheduler is None:
            continue
        config = recipe.scheduler(owner, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)
        if config.get("monitor") or int(config.get("frequency", 1)) != 1:
            if optimizer.n_members == 1:  # a run alone: Lightning steps it with its metric
                return [{**config, "scheduler": MemberSchedules(optimizer, [config["scheduler"]])}]
            raise ValueError("a schedule reading a metric cannot step a stack member")
        by_interval.setdefault(config["interval"], []).append(config["scheduler"])
    return [
        {"scheduler": MemberSchedules(optimizer, schedulers), "interval": interval, "frequency": 1}
        for interval, schedulers in by_interval.items()
    ]
