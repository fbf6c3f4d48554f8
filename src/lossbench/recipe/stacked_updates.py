"""The vectorized updates of a stack: the torch.optim classes whose update lossbench writes
once for all members. A hyperparameter is a column (one value per member), or, where every
member of the group has the same value, a float used as torch.optim uses it: fewer small ops a
step, and the same values (a whole fit's 50 members came out bit-identical both ways, with and
without AVX-512; tested within 1e-6).

Each update does its arithmetic in torch's order (``addcdiv(p, a, b, value=v)`` is
``p + v * a / b``), so members round as they do alone: the single-tensor updates of SGD,
RMSprop, Adagrad, Adam/AdamW and NAdam, up to float rounding (within 1e-5 relative over a run,
tested against the plain model in ``tests/test_own_recipes.py``). Members are grouped by update
and options (SGD with Nesterov momentum, AdamW, ...): a group's update is a handful of tensor
ops on its rows of one ``[K, P]`` buffer, done in place on the weights and the state (the same
arithmetic as out of place, so the same bits, with fewer temporaries). Any other optimizer
steps each member through its own instance (:mod:`lossbench.recipe.stacked_optim`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

# hyperparameter -> its value for every member of a group: a float where they all share it (the
# update then uses torch.optim's own scalar forms), else a column of one value per member, [k, 1]
Hyper = dict[str, Tensor | float]
State = dict[str, Tensor]  # a group's optimizer state, [k, P] tensors
Flags = frozenset[str]  # the options on in a group, e.g. {"momentum", "nesterov"}
Update = Callable[[Tensor, Tensor, State, Hyper, int, Flags], None]  # updates in place


def _kept(state: State, key: str, like: Tensor) -> Tensor:
    """``state[key]``, or zeros like ``like`` at the first step (built only then, and kept)."""
    if key not in state:
        state[key] = torch.zeros_like(like)
    return state[key]


def _in(value: Tensor | float, dtype: torch.dtype) -> Tensor | float:
    """A value computed in double precision, in ``dtype`` (a float is rounded by the kernel
    that uses it, as torch.optim's scalars are)."""
    return value.to(dtype) if isinstance(value, Tensor) else value


def _plus_times(base: Tensor, t: Tensor, v: Tensor | float, inplace: bool = True) -> Tensor:
    """``base + t * v`` (in place by default): ``add(t, alpha=v)``, torch.optim's form, for a
    value shared by the group; ``addcmul`` for a column."""
    if isinstance(v, Tensor):
        return base.addcmul_(t, v) if inplace else base.addcmul(t, v)
    return base.add_(t, alpha=v) if inplace else base.add(t, alpha=v)


def _step_by(p: Tensor, rate: Tensor | float, t: Tensor, denom: Tensor) -> None:
    """``p += rate * t / denom``, as torch.optim's ``addcdiv`` with its scalar ``value`` (the
    same arithmetic, in the same order, for a column of rates)."""
    if isinstance(rate, Tensor):
        p.addcdiv_(rate * t, denom)
    else:
        p.addcdiv_(t, denom, value=rate)


def _columns(h: Hyper, keys: Sequence[str], like: Tensor) -> Hyper:
    """``h`` with ``keys`` as ``[k, 1]`` columns (the updates that do column arithmetic)."""
    k = like.shape[0]
    out = dict(h)
    for key in keys:
        if not isinstance(h[key], Tensor):
            dtype = torch.float64 if key.endswith("_64") else like.dtype
            out[key] = torch.full((k, 1), float(h[key]), dtype=dtype, device=like.device)
    return out


def _signed(grad: Tensor, f: Flags) -> Tensor:
    return -grad if "maximize" in f else grad


def _l2(grad: Tensor, param: Tensor, h: Hyper, f: Flags) -> Tensor:
    """``grad + weight_decay * param``: L2 weight decay, added to the gradient as torch does."""
    return (
        _plus_times(grad, param, h["weight_decay"], inplace=False) if "weight_decay" in f else grad
    )


def _sgd(p: Tensor, g: Tensor, state: State, h: Hyper, step: int, f: Flags) -> None:
    g = _l2(_signed(g, f), p, h, f)
    if "momentum" in f:
        if "momentum_buffer" not in state:
            buf = state["momentum_buffer"] = g.clone()
        else:
            buf = _plus_times(state["momentum_buffer"].mul_(h["momentum"]), g, h["1-dampening"])
        g = _plus_times(g, buf, h["momentum"], inplace=False) if "nesterov" in f else buf
    _plus_times(p, g, -h["lr"])


def _decay(p: Tensor, g: Tensor, h: Hyper, f: Flags) -> Tensor:
    """Weight decay as Adam, AdamW and NAdam apply it: decoupled (the weights shrink by
    ``1 - lr * weight_decay``, in place) or L2 (added to the gradient, returned)."""
    if "decoupled" in f and "weight_decay" in f:
        p.mul_(_in(1 - h["lr_64"] * h["weight_decay_64"], p.dtype))
        return g
    return _l2(g, p, h, f)


def _square_average(
    average: Tensor, g: Tensor, keep: Tensor | float, rest: Tensor | float
) -> Tensor:
    """``average * keep + g * g * rest``, in place (Adam's and RMSprop's second moment)."""
    average.mul_(keep)
    if isinstance(rest, Tensor):
        return average.addcmul_(g, g * rest)
    return average.addcmul_(g, g, value=rest)


def _moments(g: Tensor, state: State, h: Hyper) -> tuple[Tensor, Tensor]:
    exp_avg = _kept(state, "exp_avg", g).lerp_(g, h["1-beta1"])
    exp_avg_sq = _square_average(_kept(state, "exp_avg_sq", g), g, h["beta2"], h["1-beta2"])
    return exp_avg, exp_avg_sq


def _adam(p: Tensor, g: Tensor, state: State, h: Hyper, step: int, f: Flags) -> None:
    g = _decay(p, _signed(g, f), h, f)
    exp_avg, second = _moments(g, state, h)
    step_size = _in(h["lr_64"] / (1 - h["beta1_64"] ** step), p.dtype)
    bias2 = 1 - h["beta2_64"] ** step
    correction2 = bias2.sqrt().to(p.dtype) if isinstance(bias2, Tensor) else math.sqrt(bias2)
    if "amsgrad" in f:
        if "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = second.clone()
        second = torch.maximum(state["max_exp_avg_sq"], second, out=state["max_exp_avg_sq"])
    denom = second.sqrt().div_(correction2).add_(h["eps"])
    _step_by(p, -step_size, exp_avg, denom)


def _nadam(p: Tensor, g: Tensor, state: State, h: Hyper, step: int, f: Flags) -> None:
    h = _columns(h, ("lr_64", "beta1_64", "beta2_64", "momentum_decay_64", "eps"), p)
    g = _decay(p, _signed(g, f), h, f)
    beta1, decay = h["beta1_64"], h["momentum_decay_64"]
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * decay))
    # torch keeps the product of the mu's as a float32 state tensor
    if "mu_product" not in state:
        state["mu_product"] = torch.ones_like(mu, dtype=p.dtype)
    mu_product = state["mu_product"].mul_(mu.to(p.dtype))
    exp_avg, exp_avg_sq = _moments(g, state, h)
    correction2 = (1 - h["beta2_64"] ** step).to(p.dtype)
    denom = (exp_avg_sq / correction2).sqrt_().add_(h["eps"])
    product = mu_product.double()
    now = (-h["lr_64"] * (1.0 - mu) / (1.0 - product)).to(p.dtype)
    ahead = (-h["lr_64"] * mu_next / (1.0 - product * mu_next)).to(p.dtype)
    p.add_((now * g).div_(denom)).add_((ahead * exp_avg).div_(denom))


def _rmsprop(p: Tensor, g: Tensor, state: State, h: Hyper, step: int, f: Flags) -> None:
    g = _l2(_signed(g, f), p, h, f)
    square_avg = _square_average(_kept(state, "square_avg", g), g, h["alpha"], h["1-alpha"])
    if "centered" in f:
        grad_avg = _kept(state, "grad_avg", g).lerp_(g, h["1-alpha"])
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_().add_(h["eps"])
    else:
        avg = square_avg.sqrt().add_(h["eps"])
    if "momentum" not in f:
        _step_by(p, -h["lr"], g, avg)
        return
    buf = _kept(state, "momentum_buffer", g).mul_(h["momentum"]).add_(g / avg)
    _plus_times(p, buf, -h["lr"])


def _adagrad(p: Tensor, g: Tensor, state: State, h: Hyper, step: int, f: Flags) -> None:
    h = _columns(h, ("initial_accumulator_value", "lr_64", "lr_decay_64"), p)
    g = _l2(_signed(g, f), p, h, f)
    if "sum" not in state:
        state["sum"] = h["initial_accumulator_value"].expand_as(g).clone()
    total = state["sum"].addcmul_(g, g)
    rate = (h["lr_64"] / (1 + (step - 1) * h["lr_decay_64"])).to(p.dtype)
    p.add_((-rate * g).div_(total.sqrt().add_(h["eps"])))


# torch.optim class -> its update and the param-group values it reads (AdamW is Adam with
# decoupled weight decay: one update for both).
_ADAM_KEYS = ("beta1", "beta2", "eps", "weight_decay")
KINDS: dict[type[Optimizer], tuple[Update, tuple[str, ...]]] = {
    torch.optim.SGD: (_sgd, ("momentum", "dampening", "weight_decay")),
    torch.optim.Adam: (_adam, _ADAM_KEYS),
    torch.optim.AdamW: (_adam, _ADAM_KEYS),
    torch.optim.NAdam: (_nadam, (*_ADAM_KEYS, "momentum_decay")),
    torch.optim.RMSprop: (_rmsprop, ("alpha", "eps", "weight_decay", "momentum")),
    torch.optim.Adagrad: (
        _adagrad,
        ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
    ),  # fmt: skip
}
_COMPLEMENTS = ("beta1", "beta2", "alpha", "dampening")  # also as 1 - value
_DOUBLES = ("lr", "beta1", "beta2", "weight_decay", "momentum_decay", "lr_decay")  # also as f64


_BETAS = {"beta1": 0, "beta2": 1}  # their place in a param group's ``betas``


def _value(group: dict[str, Any], key: str) -> float:
    if key in _BETAS:
        return float(group.get("betas", (math.nan, math.nan))[_BETAS[key]])
    return float(group[key])


def _values(group: dict[str, Any], keys: Sequence[str]) -> tuple[float, ...]:
    """A param group's ``lr`` and ``keys`` (``beta1``, ``beta2``: its betas), as floats."""
    return (float(group["lr"]), *(_value(group, key) for key in keys))


def variant(shadow: Optimizer) -> tuple[Update, tuple[str, ...], Flags]:
    """How a member steps: its update, the values it reads, and the options that change the
    update's form (they never change during a run: schedules change values, not options)."""
    if type(shadow) not in KINDS:
        supported = ", ".join(sorted(k.__name__ for k in KINDS))
        raise ValueError(
            f"{type(shadow).__name__} cannot train as a stack member; supported: {supported}"
        )
    update, keys = KINDS[type(shadow)]
    group = shadow.param_groups[0]
    flags = {
        "maximize": group.get("maximize"),
        "weight_decay": group.get("weight_decay"),
        "momentum": group.get("momentum"),
        "nesterov": group.get("nesterov"),
        "decoupled": group.get("decoupled_weight_decay"),
        "amsgrad": group.get("amsgrad"),
        "centered": group.get("centered"),
    }
    return update, keys, frozenset(name for name, on in flags.items() if on)


class VectorGroup:
    """Members stepped by the same update in the same form: their rows of the stack and the
    recipes they use."""

    def __init__(self, update: Update, keys: tuple[str, ...], flags: Flags) -> None:
        self.update, self.keys, self.flags = update, keys, flags
        self.rows: list[int] = []
        self.recipes: list[int] = []  # distinct recipes of the group
        self.slots: list[int] = []  # each row's index into recipes
        self.span: slice | Tensor = slice(0)  # its rows: a slice where they are contiguous
        self._values: list[tuple[float, ...]] = []
        self._hyper: Hyper = {}
        self._version: int | None = None  # of the shadows' values last read

    def add(self, member: int, recipe: int) -> None:
        """Add a member that trains with ``recipe``."""
        if recipe not in self.recipes:
            self.recipes.append(recipe)
        self.rows.append(member)
        self.slots.append(self.recipes.index(recipe))

    def hyper(self, shadows: Sequence[Any], like: Tensor, version: int | None = None) -> Hyper:
        """This step's hyperparameters, read from the recipes' shadows: a float where every
        member has the same value, else a column ``[k, 1]`` (rebuilt only when a schedule has
        changed one of its values). ``version`` counts the changes the shadows may have had:
        the same one as the last call's, and they are not read again."""
        if version is not None and version == self._version and self._hyper:
            return self._hyper
        self._version = version
        values = [_values(shadows[r].param_groups[0], self.keys) for r in self.recipes]
        if values == self._values:
            return self._hyper

        def column(per_recipe: list[float], dtype: torch.dtype) -> Tensor | float:
            if all(v == per_recipe[0] for v in per_recipe):
                return per_recipe[0]  # torch.optim's own scalar (kernels round it to dtype)
            # one tensor made from a flat list (indexing a tensor of the recipes' values costs
            # more; a schedule that changes every step remakes the lr's every step)
            per_member = [per_recipe[slot] for slot in self.slots]
            return torch.tensor(per_member, dtype=dtype, device=like.device).unsqueeze(1)

        for i, name in enumerate(("lr", *self.keys)):
            per_recipe = [v[i] for v in values]
            if self._values and per_recipe == [v[i] for v in self._values]:
                continue
            self._hyper[name] = column(per_recipe, like.dtype)
            if name in _COMPLEMENTS:  # 1 - beta in double precision, then rounded, as torch
                self._hyper[f"1-{name}"] = column([1 - v for v in per_recipe], like.dtype)
            if name in _DOUBLES:  # torch computes its scalars in double precision
                self._hyper[f"{name}_64"] = column(per_recipe, torch.float64)
        self._values = values
        return self._hyper
