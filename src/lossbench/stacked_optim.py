"""One optimizer for a stack whose members differ in their recipe: optimizer kind, learning
rate and other hyperparameters, and schedule.

Each member steps exactly as ``torch.optim`` steps it when it trains alone (the single-tensor
updates of SGD, RMSprop, Adagrad, Adam/AdamW and NAdam, written once with a column of
hyperparameters per member), up to float rounding: within 1e-5 relative over a run, tested
against training alone in ``tests/test_recipe_stacks.py``.

Hyperparameters and schedules are not re-implemented: each distinct recipe gets a *shadow*
``torch.optim`` optimizer on a dummy parameter, built from the member's own config, and the
member's own ``lossbench.optim`` schedule steps that shadow. At every step the stacked update
reads each member's current lr (and momentum or betas, which OneCycle cycles) from its shadow,
so defaults, validation and every schedule behave as they do alone.

The update is computed on the parameters flattened to ``[K, P]``: a handful of tensor ops per
optimizer kind and step, whatever the number of layers. Each update does its arithmetic in
torch's order (``addcdiv(p, a, b, value=v)`` is ``p + v * a / b``), so members round as they
do alone.
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

Hyper = dict[str, Tensor]  # hyperparameter -> one value per member of a kind, [k, 1]
Update = Callable[[Tensor, Tensor, dict[str, Tensor], Hyper, int], Tensor]


@dataclass(frozen=True)
class Recipe:
    """What a member trains with: a ``torch.optim`` partial and a ``lossbench.optim``
    schedule partial (``None``: a constant rate)."""

    optimizer: Callable[[Iterable[Tensor]], Optimizer]
    scheduler: Callable[..., dict[str, Any]] | None = None


def _col(values: Sequence[float | bool], like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    return torch.tensor(values, dtype=dtype or like.dtype, device=like.device).unsqueeze(1)


def _signed(grad: Tensor, h: Hyper) -> Tensor:
    return torch.where(h["maximize"], -grad, grad) if bool(h["maximize"].any()) else grad


def _l2(grad: Tensor, param: Tensor, h: Hyper) -> Tensor:
    """``grad + weight_decay * param`` (L2 weight decay, as torch adds it to the gradient)."""
    return grad.addcmul(param, h["weight_decay"]) if bool(h["weight_decay"].any()) else grad


def _sgd(p: Tensor, g: Tensor, state: dict[str, Tensor], h: Hyper, step: int) -> Tensor:
    g = _l2(_signed(g, h), p, h)
    momentum = h["momentum"]
    if bool(momentum.any()):
        if "momentum_buffer" not in state:
            buf = g.clone()
        else:
            buf = torch.addcmul(state["momentum_buffer"] * momentum, g, h["1-dampening"])
        state["momentum_buffer"] = buf
        direction = torch.where(h["nesterov"], g.addcmul(buf, momentum), buf)
        g = torch.where(momentum != 0, direction, g)
    return p.addcmul(g, -h["lr"])


def _decay(p: Tensor, g: Tensor, h: Hyper) -> tuple[Tensor, Tensor]:
    """Weight decay as Adam, AdamW and NAdam apply it: decoupled (shrink the weights by
    ``1 - lr * weight_decay``) or L2 (added to the gradient), per member."""
    if not bool(h["weight_decay"].any()):
        return p, g
    decoupled = h["decoupled_weight_decay"]
    shrunk = p * (1 - h["lr_64"] * h["weight_decay_64"]).to(p.dtype)
    return torch.where(decoupled, shrunk, p), torch.where(decoupled, g, _l2(g, p, h))


def _moments(g: Tensor, state: dict[str, Tensor], h: Hyper) -> tuple[Tensor, Tensor]:
    exp_avg = state.get("exp_avg", torch.zeros_like(g)).lerp(g, h["1-beta1"])
    exp_avg_sq = torch.addcmul(state.get("exp_avg_sq", torch.zeros_like(g)) * h["beta2"], g, g * h["1-beta2"])  # fmt: skip
    state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
    return exp_avg, exp_avg_sq


def _adam(p: Tensor, g: Tensor, state: dict[str, Tensor], h: Hyper, step: int) -> Tensor:
    p, g = _decay(p, _signed(g, h), h)
    exp_avg, exp_avg_sq = _moments(g, state, h)
    step_size = (h["lr_64"] / (1 - h["beta1_64"] ** step)).to(p.dtype)
    correction2 = (1 - h["beta2_64"] ** step).sqrt().to(p.dtype)
    second = exp_avg_sq
    if bool(h["amsgrad"].any()):
        state["max_exp_avg_sq"] = torch.maximum(state.get("max_exp_avg_sq", exp_avg_sq), exp_avg_sq)
        second = torch.where(h["amsgrad"], state["max_exp_avg_sq"], exp_avg_sq)
    denom = second.sqrt() / correction2 + h["eps"]
    return p + (-step_size * exp_avg) / denom


def _nadam(p: Tensor, g: Tensor, state: dict[str, Tensor], h: Hyper, step: int) -> Tensor:
    p, g = _decay(p, _signed(g, h), h)
    beta1, decay = h["beta1_64"], h["momentum_decay_64"]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * decay))
    # torch keeps the product of the mu's as a float32 state tensor
    mu_product = state.get("mu_product", torch.ones_like(mu, dtype=p.dtype)) * mu.to(p.dtype)
    state["mu_product"] = mu_product
    exp_avg, exp_avg_sq = _moments(g, state, h)
    correction2 = (1 - h["beta2_64"] ** step).to(p.dtype)
    denom = (exp_avg_sq / correction2).sqrt() + h["eps"]
    product = mu_product.double()
    now = (-h["lr_64"] * (1.0 - mu) / (1.0 - product)).to(p.dtype)
    ahead = (-h["lr_64"] * mu_next / (1.0 - product * mu_next)).to(p.dtype)
    return p + (now * g) / denom + (ahead * exp_avg) / denom


def _rmsprop(p: Tensor, g: Tensor, state: dict[str, Tensor], h: Hyper, step: int) -> Tensor:
    g = _l2(_signed(g, h), p, h)
    alpha = h["alpha"]
    square_avg = torch.addcmul(state.get("square_avg", torch.zeros_like(g)) * alpha, g, g * h["1-alpha"])  # fmt: skip
    state["square_avg"] = square_avg
    avg = square_avg.sqrt()
    if bool(h["centered"].any()):
        grad_avg = state.get("grad_avg", torch.zeros_like(g)).lerp(g, h["1-alpha"])
        state["grad_avg"] = grad_avg
        avg = torch.where(h["centered"], square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt(), avg)  # fmt: skip
    avg = avg + h["eps"]
    momentum = h["momentum"]
    if not bool((momentum > 0).any()):
        return p + (-h["lr"] * g) / avg
    buf = state.get("momentum_buffer", torch.zeros_like(g)) * momentum + g / avg
    state["momentum_buffer"] = buf
    return torch.where(momentum > 0, p.addcmul(buf, -h["lr"]), p + (-h["lr"] * g) / avg)


def _adagrad(p: Tensor, g: Tensor, state: dict[str, Tensor], h: Hyper, step: int) -> Tensor:
    g = _l2(_signed(g, h), p, h)
    if "sum" not in state:
        state["sum"] = h["initial_accumulator_value"].expand_as(g).clone()
    state["sum"] = state["sum"].addcmul(g, g)
    rate = (h["lr_64"] / (1 + (step - 1) * h["lr_decay_64"])).to(p.dtype)
    return p + (-rate * g) / (state["sum"].sqrt() + h["eps"])


# torch.optim class -> (its update, the param-group keys it reads). Adam and AdamW are one kind
# (AdamW is Adam with decoupled weight decay), so members of both share a few tensor ops.
KINDS: dict[type[Optimizer], tuple[str, Update, tuple[str, ...]]] = {
    torch.optim.SGD: ("sgd", _sgd, ("momentum", "dampening", "weight_decay", "nesterov")),
    torch.optim.Adam: (
        "adam",
        _adam,
        ("betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"),
    ),  # fmt: skip
    torch.optim.AdamW: (
        "adam",
        _adam,
        ("betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"),
    ),  # fmt: skip
    torch.optim.NAdam: (
        "nadam",
        _nadam,
        ("betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay"),
    ),  # fmt: skip
    torch.optim.RMSprop: (
        "rmsprop",
        _rmsprop,
        ("alpha", "eps", "weight_decay", "momentum", "centered"),
    ),  # fmt: skip
    torch.optim.Adagrad: (
        "adagrad",
        _adagrad,
        ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
    ),  # fmt: skip
}
_BOOLS = ("nesterov", "amsgrad", "decoupled_weight_decay", "centered", "maximize")
_COMPLEMENTS = ("beta1", "beta2", "alpha", "dampening")
_DOUBLES = ("lr", "beta1", "beta2", "weight_decay", "momentum_decay", "lr_decay")  # also as f64


def _group_values(group: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {"lr": float(group["lr"]), "maximize": bool(group.get("maximize"))}
    for key in keys:
        if key == "betas":
            values["beta1"], values["beta2"] = (float(b) for b in group["betas"])
        else:  # SGD, RMSprop and Adagrad have no decoupled weight decay
            values[key] = group.get(key, False) if key == "decoupled_weight_decay" else group[key]
    return values


class _Kind:
    """The members of a stack that use one optimizer kind: their rows and shadows."""

    def __init__(self, update: Update, keys: tuple[str, ...]) -> None:
        self.update, self.keys = update, keys
        self.rows: list[int] = []
        self.shadows: list[Optimizer] = []  # each member's
        self.index: Tensor | None = None  # the rows; None: every member of the stack
        self._cache: tuple[Any, Hyper] | None = None

    def hyper(self, like: Tensor) -> Hyper:
        """This step's hyperparameters of each member, from its shadow's param group (the
        tensors are rebuilt only when a schedule changed a value)."""
        groups = [_group_values(shadow.param_groups[0], self.keys) for shadow in self.shadows]
        key = tuple(tuple(v.values()) for v in groups)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        hyper: Hyper = {}
        for name in groups[0]:
            column = [v[name] for v in groups]
            if name in _BOOLS:
                hyper[name] = _col(column, like, torch.bool)
                continue
            hyper[name] = _col(column, like)
            if name in _COMPLEMENTS:  # 1 - beta in double precision, then rounded, as torch
                hyper[f"1-{name}"] = _col([1 - v for v in column], like)
            if name in _DOUBLES:  # for scalars torch computes in double precision
                hyper[f"{name}_64"] = _col(column, like, torch.float64)
        self._cache = (key, hyper)
        return hyper


class StackedOptimizer(Optimizer):
    """Steps K stacked members (parameters ``[K, ...]``), member ``k`` with
    ``recipes[member_recipe[k]]``'s optimizer and hyperparameters.

    The schedules are built by :func:`member_schedules`, which Lightning steps. Raises
    ``ValueError`` for an optimizer class it cannot step per member.
    """

    def __init__(
        self, params: Iterable[Tensor], recipes: Sequence[Recipe], member_recipe: Sequence[int]
    ) -> None:
        params = list(params)
        super().__init__(params, {"lr": math.nan})  # the rates live in the shadows
        self.recipes = list(recipes)
        self.member_recipe = list(member_recipe)
        self.n_members = len(self.member_recipe)
        for p in params:
            if p.dim() == 0 or p.shape[0] != self.n_members:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} is not stacked [K, ...]")
        # torch builds (and validates) each recipe's hyperparameters on a dummy parameter
        self.shadows = [r.optimizer([torch.zeros(1, requires_grad=True)]) for r in self.recipes]
        self.kinds: dict[str, _Kind] = {}
        for member, r in enumerate(self.member_recipe):
            shadow = self.shadows[r]
            if type(shadow) not in KINDS:
                supported = ", ".join(sorted(k.__name__ for k in KINDS))
                raise ValueError(
                    f"{type(shadow).__name__} cannot train as a stack member; "
                    f"supported: {supported}"
                )
            name, update, keys = KINDS[type(shadow)]
            kind = self.kinds.setdefault(name, _Kind(update, keys))
            kind.rows.append(member)
            kind.shadows.append(shadow)
        for kind in self.kinds.values():
            if len(kind.rows) < self.n_members:
                kind.index = torch.tensor(kind.rows)
        self.steps = 0

    def member_lrs(self) -> Tensor:
        """Each member's current learning rate, ``[K]``."""
        return torch.tensor([self.shadows[r].param_groups[0]["lr"] for r in self.member_recipe])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every member, each with its own optimizer and current rate."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self.param_groups[0]["params"]
        k = self.n_members
        if any(p.grad is None for p in params):
            raise RuntimeError("every stacked parameter needs a gradient at each step")
        flat = torch.cat([p.reshape(k, -1) for p in params], 1)
        grads = torch.cat([p.grad.reshape(k, -1) for p in params], 1)
        self.steps += 1
        for name, kind in self.kinds.items():
            hyper, state = kind.hyper(flat), self.state[name]
            if kind.index is None:
                flat = kind.update(flat, grads, state, hyper, self.steps)
            else:
                index = kind.index.to(flat.device)
                rows = kind.update(flat[index], grads[index], state, hyper, self.steps)
                flat.index_copy_(0, index, rows)
        sizes = [p[0].numel() for p in params]
        for p, chunk in zip(params, flat.split(sizes, 1), strict=True):
            p.copy_(chunk.view_as(p))
        return loss


class MemberSchedules:
    """The members' own schedules that step at one ``interval`` (Lightning steps this object
    as it steps a scheduler of that interval)."""

    def __init__(self, optimizer: StackedOptimizer, schedulers: Sequence[Any]) -> None:
        self.optimizer = optimizer  # Lightning checks that a schedule belongs to the optimizer
        self.schedulers = list(schedulers)

    def step(self) -> None:
        """Advance every member's schedule by one step (or epoch)."""
        with warnings.catch_warnings():
            # the shadow optimizers never step themselves (the stacked one does their work)
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            for scheduler in self.schedulers:
                scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        """The members' schedulers' states."""
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)


def member_schedules(
    optimizer: StackedOptimizer, *, max_epochs: int, steps_per_epoch: int
) -> list[dict[str, Any]]:
    """Each recipe's schedule on its shadow optimizer, as Lightning scheduler configs: one per
    interval (``step``, ``epoch``) that some member's schedule uses."""
    by_interval: dict[str, list[Any]] = {}
    for recipe, shadow in zip(optimizer.recipes, optimizer.shadows, strict=True):
        if recipe.scheduler is None:
            continue
        config = recipe.scheduler(shadow, max_epochs=max_epochs, steps_per_epoch=steps_per_epoch)
        if config.get("monitor") or int(config.get("frequency", 1)) != 1:
            raise ValueError("a schedule reading a metric cannot step a stack member")
        by_interval.setdefault(config["interval"], []).append(config["scheduler"])
    return [
        {"scheduler": MemberSchedules(optimizer, schedulers), "interval": interval, "frequency": 1}
        for interval, schedulers in by_interval.items()
    ]
