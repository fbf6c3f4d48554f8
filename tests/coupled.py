"""An optimizer whose instances share state: right alone, coupled in a stack (each member's
instance moves the scale the others use). The audit must catch it. Importable by the CLI's
workers: tests/ is on PYTHONPATH."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


class SharedScale(torch.optim.Optimizer):
    """SGD whose step is scaled by a running mean of gradient norms kept on the class (shared
    by every instance in the process: the bug)."""

    scale = [1.0]

    def __init__(self, params: Any, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        norm = float(sum(p.grad.square().sum() for g in self.param_groups for p in g["params"]))
        SharedScale.scale[0] = 0.5 * SharedScale.scale[0] + 0.5 * norm**0.5
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] / (1.0 + SharedScale.scale[0]))
        return loss
