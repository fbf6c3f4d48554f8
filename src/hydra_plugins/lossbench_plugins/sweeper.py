"""``hydra/sweeper=lossbench``: Hydra's basic grid sweeper, without its second composition of
every job when the launcher checks every job itself.

Hydra's basic sweeper composes each job's config once to validate it, then the launcher composes
it again: at ~70 ms a composition, a 300-job sweep spends 20 s before the first job. lossbench's
launcher composes each distinct group combination once and checks every job more thoroughly
(losses, optimizers and schedules are built on dummies), so the sweeper's pass is redundant.
With any other launcher, the sweeper validates as Hydra's does.

(No ``from __future__ import annotations``: Hydra loads plugins outside ``sys.modules``.)
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence  # noqa: UP035 (OmegaConf needs typing forms)

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class LossbenchSweeperConf:
    """Options of ``hydra/sweeper=lossbench``: the same as Hydra's basic sweeper."""

    _target_: str = "hydra_plugins.lossbench_plugins.sweeper.LossbenchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="lossbench", node=LossbenchSweeperConf, provider="lossbench"
)


class LossbenchSweeper(BasicSweeper):
    """Grid sweep over ``hydra.sweeper.params`` and command-line lists; see the module docstring."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Skip Hydra's composition of every job when the launcher checks every job itself."""
        if getattr(self.launcher, "checks_jobs", False):
            return
        super().validate_batch_is_legal(batch)


__all__: list[str] = ["LossbenchSweeper", "LossbenchSweeperConf"]
