"""Different optimizers for different parameters of the plain model, as one optimizer.

Muon is meant for the hidden weight matrices only, with AdamW for the biases and the first and
last layers (torch.optim.Muon's documentation). ``by_kind`` sorts a plain model's parameters
(``nn.Sequential`` of ``nn.Linear``, in order: each layer's weight, then its bias) into

- ``hidden``: the weight matrices of the hidden layers (every matrix but the first and last),
- ``rest``: the first and last weight matrices, and the biases unless ``biases`` is given,
- ``biases``: the bias vectors, when given an optimizer of their own,

and steps each set with its own optimizer. ``lr`` is the hidden set's rate (the one a sweep
varies as ``optimizer.lr``); the other sets' rates are in their own configs. A schedule scales
every set's rate from its own base, as it would for param groups::

    _target_: lossbench.recipe.param_sets.by_kind
    _partial_: true
    lr: 0.02
    hidden: {_target_: torch.optim.Muon, _partial_: true, momentum: 0.95}
    rest: {_target_: torch.optim.AdamW, _partial_: true, lr: 0.001}

In a stack each member gets its own (lossbench steps such optimizers per member).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

OptimizerFactory = Callable[..., Optimizer]


class ParamSets(Optimizer):
    """Several optimizers, each over its own parameters, stepped as one: its ``param_groups``
    are theirs (the same dicts, so a schedule changes their rates), and one closure call
    serves them all."""

    def __init__(self, optimizers: Sequence[Optimizer]) -> None:
        params = [p for o in optimizers for group in o.param_groups for p in group["params"]]
        super().__init__(params, {})
        self.optimizers = list(optimizers)
        self.param_groups = [group for o in self.optimizers for group in o.param_groups]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluate the closure once, then step every set's optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero (or drop) every set's gradients."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """Every set's optimizer state."""
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for optimizer, saved in zip(self.optimizers, state_dict["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def by_kind(
    params: Iterable[Tensor],
    *,
    lr: float,
    hidden: OptimizerFactory,
    rest: OptimizerFactory,
    biases: OptimizerFactory | None = None,
) -> ParamSets:
    """``hidden`` (at rate ``lr``) over the hidden weight matrices, ``rest`` over the first
    and last matrices (and the biases, unless ``biases`` is given): see the module docstring.
    ``ValueError`` when the model has no hidden matrix (``lr`` would change nothing)."""
    if "lr" in getattr(hidden, "keywords", {}):
        raise ValueError(
            "the hidden set's rate is the optimizer's lr (optimizer.lr, what sweeps vary); "
            "remove optimizer.hidden.lr"
        )
    params = list(params)
    matrices = [p for p in params if p.dim() == 2]
    vectors = [p for p in params if p.dim() == 1]
    if len(matrices) + len(vectors) != len(params):
        shapes = sorted({tuple(p.shape) for p in params if p.dim() not in (1, 2)})
        raise ValueError(f"by_kind takes weight matrices and bias vectors, not shapes {shapes}")
    inner = matrices[1:-1]
    if not inner:
        raise ValueError(
            f"the model has {len(matrices)} weight matrices, none of them hidden (every matrix "
            "but the first and last): the hidden set's optimizer would train nothing. Use a "
            "model with two hidden layers or more (model.hidden=[64,64])"
        )
    outer = [matrices[0], matrices[-1]] if len(matrices) > 1 else matrices
    sets = [hidden(inner, lr=lr)]
    if biases is None:
        sets.append(rest(_in_order(params, [*outer, *vectors])))
    else:
        sets += [rest(outer), biases(vectors)]
    return ParamSets(sets)


def _in_order(params: Sequence[Tensor], chosen: Sequence[Tensor]) -> list[Tensor]:
    """``chosen`` in the order of ``params`` (the plain model's)."""
    ids = {id(p) for p in chosen}
    return [p for p in params if id(p) in ids]
