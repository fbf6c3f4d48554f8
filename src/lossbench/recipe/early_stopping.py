"""Early stopping per member: each member of a stack watches its own metric and stops on its own.

``early_stopping=val_loss`` (``conf/early_stopping/``) configures it: ``monitor`` (a metric the
run records every epoch: ``val/loss``, ``val/acc``, ... or ``train/loss``), ``mode`` (``min``
or ``max``), ``patience`` (checks in a row without improvement before stopping), ``min_delta``
(an improvement must beat the best by more than this), ``check_every_n_epochs`` (check at
every n-th epoch that has a validation) and ``restore`` (``final``: the weights of the epoch
it stopped at, as Lightning's ``EarlyStopping`` leaves them; ``best``: those of its best
checked epoch; they give the test metrics and the logged model).

The rule is Lightning's ``EarlyStopping``: at each check, an improvement (``current`` beats
``best`` by more than ``min_delta``) resets the wait; otherwise the wait grows, and a member
stops when it reaches ``patience``. So a member of a stack stops at the epoch it would stop at
trained alone with Lightning's ``EarlyStopping``. A stopped member is masked out, as a
diverged one is, keeps its metrics up to the epoch it stopped at and is recorded FINISHED with
``lossbench.stopped_epoch``; the fit ends when every member has stopped or ``max_epochs`` is
reached.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MODES = ("min", "max")
RESTORE = ("final", "best")
KEYS = ("monitor", "mode", "patience", "min_delta", "check_every_n_epochs", "restore")


@dataclass(frozen=True)
class StoppingRule:
    """An ``early_stopping`` config, checked."""

    monitor: str = "val/loss"
    mode: str = "min"
    patience: int = 5
    min_delta: float = 0.0
    check_every_n_epochs: int = 1
    restore: str = "final"

    @classmethod
    def of(cls, node: Mapping[str, Any], recorded: set[str]) -> StoppingRule:
        """From a config node; ``ValueError`` naming a bad value and the valid choices
        (``recorded``: the metrics the run records every epoch)."""
        unknown = sorted(set(node) - set(KEYS))
        if unknown:
            raise ValueError(f"unknown early_stopping key(s) {unknown}; valid: {', '.join(KEYS)}")
        rule = cls(**dict(node))
        if rule.monitor not in recorded:
            raise ValueError(
                f"early_stopping.monitor={rule.monitor!r} is not recorded every epoch by this run; "
                f"choose one of {', '.join(sorted(recorded))}"
            )
        if rule.mode not in MODES:
            raise ValueError(f"early_stopping.mode={rule.mode!r} is not one of {', '.join(MODES)}")
        if (
            isinstance(rule.patience, bool)
            or not isinstance(rule.patience, int)
            or rule.patience < 0
        ):
            raise ValueError(f"early_stopping.patience={rule.patience!r} must be an integer >= 0")
        if not isinstance(rule.min_delta, int | float) or not rule.min_delta >= 0:
            raise ValueError(f"early_stopping.min_delta={rule.min_delta!r} must be a number >= 0")
        every = rule.check_every_n_epochs
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(
                f"early_stopping.check_every_n_epochs={every!r} must be an integer >= 1"
            )
        if rule.restore not in RESTORE:
            raise ValueError(
                f"early_stopping.restore={rule.restore!r} is not one of {', '.join(RESTORE)}"
            )
        return rule

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is a check (given that it has its metric)."""
        return (epoch + 1) % self.check_every_n_epochs == 0


class MemberStopping:
    """The state of a :class:`StoppingRule` for K members: each one's best value and wait."""

    def __init__(self, rule: StoppingRule, members: int) -> None:
        self.rule = rule
        worst = torch.inf if rule.mode == "min" else -torch.inf
        self.best = torch.full((members,), worst, dtype=torch.float32)
        self.wait = torch.zeros(members, dtype=torch.long)

    def update(self, current: Tensor, active: Tensor) -> tuple[Tensor, Tensor]:
        """One check of every member's ``current`` value: which members improved, and which
        stop now (of the ``active`` ones), ``[K]`` bool each."""
        current = current.detach().to("cpu", torch.float32)
        active = active.cpu()
        delta = self.rule.min_delta
        if self.rule.mode == "min":  # as Lightning's: monitor_op(current - min_delta, best)
            improved = (current + delta) < self.best
        else:
            improved = (current - delta) > self.best
        improved &= active
        self.best = torch.where(improved, current, self.best)
        self.wait = torch.where(improved, 0, self.wait + active.long())
        stop = active & ~improved & (self.wait >= self.rule.patience)
        return improved, stop


def member_stopping(
    cfg: Mapping[str, Any], recorded: set[str], members: int
) -> MemberStopping | None:
    """The per-member early stopping a run config asks for (``early_stopping``), if any, for
    ``members`` members of a fit that records ``recorded`` every epoch
    (:func:`lossbench.config.checks.epoch_metrics`)."""
    node = cfg.get("early_stopping")
    if not node:
        return None
    return MemberStopping(StoppingRule.of(node, recorded), members)
