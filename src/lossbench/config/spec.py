"""Run configs: what one requested run is (:class:`RunSpec`), the error bad input raises, the
resolvers configs use, and how a config node is built. The checks are in
:mod:`lossbench.config.checks`.

No torch or Lightning at import (building a node imports what it names).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

if TYPE_CHECKING:
    from lossbench.problem.data import SplitData

CONF_DIR = Path(__file__).resolve().parents[3] / "conf"
GROUPS = (
    "dataset", "model", "loss", "optimizer", "scheduler", "trainer", "early_stopping", "tracking",
)  # fmt: skip


class ConfigError(CompactHydraException, ValueError):
    """A run config that cannot be trained; the message names the bad value and the choices.
    (Hydra prints a CompactHydraException as its message alone, without a traceback.)"""


# What a config read back from a store (repro) may instantiate. A run in a shared store is
# untrusted input: a crafted config.yaml must not be able to name os.system as a _target_.
ALLOWED_TARGETS = ("pytorch_lightning.Trainer",)
ALLOWED_TARGET_PREFIXES = ("torch.optim.", "lossbench.")


def _allows(entry: str, target: str) -> bool:
    """Whether an allow-list entry names ``target``: the same name, or a module or package
    above it (``mypkg`` and ``mypkg.`` allow ``mypkg.metrics.auroc``, not ``mypkgs.x``)."""
    return target == entry.rstrip(".") or target.startswith(entry.rstrip(".") + ".")


def check_targets(cfg: Any, path: str = "", allow: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` if any ``_target_`` in a config (at any depth) is outside the
    allow-list: torch.optim.*, torch.optim.lr_scheduler.*, lossbench.*, pytorch_lightning.Trainer,
    and what ``allow`` names (the user's own choice, e.g. ``lossbench-repro --allow-target``:
    a name, or a module or package prefix). Never extended by what the config itself says.
    """
    if isinstance(cfg, Mapping):
        for key, value in cfg.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                allowed = value in ALLOWED_TARGETS or (
                    isinstance(value, str)
                    and (
                        value.startswith(ALLOWED_TARGET_PREFIXES)
                        or any(_allows(entry, value) for entry in allow if entry.strip("."))
                    )
                )
                if not allowed:
                    extra = "".join(f", {entry}" for entry in allow)
                    raise ConfigError(
                        f"{where}={value!r} is not allowed in a config read from a store; "
                        "allowed: torch.optim.*, torch.optim.lr_scheduler.*, lossbench.*, "
                        f"pytorch_lightning.Trainer{extra}. If you trust it (your own metric, "
                        f"say), allow it: lossbench-repro --allow-target {value} (or its package)"
                    )
            else:
                check_targets(value, where, allow)
    elif isinstance(cfg, list | tuple):
        for i, value in enumerate(cfg):
            check_targets(value, f"{path}[{i}]", allow)


@dataclass
class RunSpec:
    """One requested run: its resolved config (plain containers, no ``hydra`` node), the Hydra
    choice of each config group, and the overrides that produced it."""

    cfg: dict[str, Any]
    choices: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    job_num: int | None = None

    @classmethod
    def from_task_config(
        cls,
        cfg: DictConfig | Mapping[str, Any],
        choices: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
        job_num: int | None = None,
    ) -> RunSpec:
        """From a composed task config (as ``@hydra.main`` passes it)."""
        if isinstance(cfg, DictConfig):
            try:
                container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
            except InterpolationResolutionError as err:  # e.g. usual_lr_times: a clear message
                detail = str(err).splitlines()[0]
                detail = detail.removeprefix("ConfigError raised while resolving interpolation: ")
                raise ConfigError(f"{err.full_key}: {detail}") from None
        else:
            container = json.loads(json.dumps(dict(cfg)))
        assert isinstance(container, dict)
        container.pop("hydra", None)
        return cls(container, run_choices(choices or {}), list(overrides), job_num)

    @classmethod
    def from_hydra_config(cls, cfg: DictConfig) -> RunSpec:
        """From a full composed config that still holds its ``hydra`` node (a sweep job's)."""
        hydra = cfg.hydra
        choices = OmegaConf.to_container(hydra.runtime.choices)
        overrides = OmegaConf.to_container(hydra.overrides.task)
        job_num = hydra.job.get("num")
        task = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return cls.from_task_config(task, choices, overrides, job_num)  # type: ignore[arg-type]

    @property
    def seed(self) -> int:
        """The training seed."""
        return int(self.cfg["seed"])


def usual_lr_times(factor: Any, *, _root_: DictConfig) -> float:
    """``${usual_lr_times:0.3}``: the chosen optimizer's entry in the config's ``usual_lr``
    table times ``factor``, to 3 significant digits. A Hydra sweep is a Cartesian product;
    sweeping ``optimizer.lr`` over these gives each optimizer its own lr grid, and the run's
    config holds the resulting number (conf/experiment/bench_lr.yaml)."""
    from hydra.core.hydra_config import HydraConfig

    name = str(HydraConfig.get().runtime.choices.get("optimizer"))
    table = _root_.get("usual_lr") or {}
    if name not in table:
        raise ConfigError(
            f"usual_lr has no entry for optimizer={name}; it has: "
            f"{', '.join(table) or 'nothing (no usual_lr table in this config)'}"
        )
    return float(f"{float(table[name]) * float(factor):.3g}")


if not OmegaConf.has_resolver("usual_lr_times"):
    OmegaConf.register_new_resolver("usual_lr_times", usual_lr_times)
if not OmegaConf.has_resolver("file_sha256"):  # dataset=file: the content hash joins the config
    from lossbench.problem.datafile import file_sha256

    OmegaConf.register_new_resolver("file_sha256", file_sha256)


def run_choices(choices: Mapping[str, Any]) -> dict[str, str]:
    """The Hydra choices a run keeps: those of its config groups and its experiment."""
    return {g: str(c) for g, c in choices.items() if g in (*GROUPS, "experiment")}


def build(node: Any, **kwargs: Any) -> Any:
    """Instantiate a ``_target_`` config node with plain Python containers as arguments."""
    from hydra.utils import instantiate

    return instantiate(node, _convert_="all", **kwargs)


def batch_rows(batch_size: Any, data: SplitData) -> int:
    """Rows per step: ``full`` means the whole training split."""
    n_train = len(data.y_train)
    if batch_size == "full":
        return n_train
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer or 'full'")
    if batch_size > n_train:
        raise ConfigError(
            f"batch_size={batch_size} is larger than the {n_train} training rows of "
            f"{data.name}; use batch_size=full for full-batch training"
        )
    return batch_size


def build_trainer(node: Mapping[str, Any], **kwargs: Any) -> Any:
    """The Lightning Trainer of a ``trainer`` config, without Lightning's banners and tips
    (they would repeat on every fit of a sweep; warnings still show)."""
    import logging
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # Lightning's hint where SLURM is installed but the fit was not started by srun: lossbench
    # submits its own jobs (hydra.launcher.executor=slurm), and each fit trains on one device
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    return build(node, **kwargs)
