"""A sweep's jobs, composed fast, equal to what Hydra's ``load_sweep_config`` gives each job.

A Hydra composition costs ~70-120 ms, and a sweep of 300 jobs over 4 losses x 5 optimizers x 3
schedulers has 60 combinations of group options. Three things keep that cheap:

1. Plain value overrides (``seed=3``, ``optimizer.lr=0.1``) are applied to a composed config
   afterwards, as Hydra applies them itself; to the resolved spec directly when the config has
   no interpolations.
2. Combinations of group options are assembled from single-group changes: Hydra composes the
   sweep's first combination (the base) and the combinations that change one group of it (a
   grid lists those first: 1 + 3 + 4 + 2 = 10 compositions for the example above, however many
   seeds or learning rates). A combination changing several groups takes, for each changed
   group, the parts of the config where that group's composition differs from the base.
   Nothing is composed only to assemble: a combination whose single-group changes Hydra has
   not composed yet is composed itself.
3. Assembling is only done when it is exact: when the changed groups' options write disjoint
   parts of the config. What an option writes is read from its own file (its keys under its
   package); options with a defaults list of their own, overlapping writes, or a difference
   from the base that an option's keys do not explain are composed by Hydra instead.

Used by lossbench's launcher and sweeper (``src/hydra_plugins/lossbench_plugins``) and claims.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from lossbench.config.spec import RunSpec
from lossbench.hydra_private import get_overrides_dirname
from lossbench.sweep.assembly import Composer, Template, copy_plain, needs_omegaconf

log = logging.getLogger(__name__)


def _is_plain_value(override: Override, loader: ConfigLoader) -> bool:
    """``key=value`` on a key that is not a config group: applying it to a composed config
    gives the same result as composing with it (Hydra applies such overrides last)."""
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not override.is_sweep_override()
        and not override.is_hydra_override()
        and not loader.repository.group_exists(override.key_or_group)  # type: ignore[attr-defined]
    )


def _apply_values(cfg: DictConfig, plain: Sequence[Override]) -> None:
    """Apply plain ``key=value`` overrides to a composed config as Hydra applies them when it
    composes (OmegaConf.update with merge), failing with the same messages."""
    for override in plain:
        try:
            OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except (ConfigAttributeError, ConfigKeyError) as err:
            raise ConfigCompositionException(
                f"Could not override '{override.key_or_group}'."
                f"\nTo append to your config use +{override.input_line}"
            ) from err
        except OmegaConfBaseException as err:
            raise ConfigCompositionException(
                f"Error merging override {override.input_line}"
            ) from err


class ComposedJob:
    """One job of a sweep: its run spec now, its full Hydra config when run_job needs it."""

    def __init__(
        self, template: Template, parsed: list[Override], plain: list[Override], idx: int
    ) -> None:
        self.template, self.parsed, self.plain, self.idx = template, parsed, plain, idx
        self._config: DictConfig | None = None
        self.spec: RunSpec | None = None

    def config(self) -> DictConfig:
        """The job's config, as ``load_sweep_config`` gives it (built on first use)."""
        if self._config is None:
            cfg = self.template.config()
            _apply_values(cfg, self.plain)
            with read_write(cfg.hydra), open_dict(cfg):
                cfg.hydra.overrides.task = self.task_lines()
                cfg.hydra.job.override_dirname = self.override_dirname()
                cfg.hydra.job.id = self.idx
                cfg.hydra.job.num = self.idx
            self._config = cfg
        return self._config

    def task_lines(self) -> list[str]:
        """The job's overrides that are not Hydra's own (``hydra.overrides.task``)."""
        return [o.input_line for o in self.parsed if not o.is_hydra_override()]

    def override_dirname(self) -> str:
        """``hydra.job.override_dirname``, as Hydra names it from the task overrides."""
        naming = self.template.naming
        return get_overrides_dirname(
            overrides=[o for o in self.parsed if not o.is_hydra_override()],
            kv_sep=naming["kv_sep"],
            item_sep=naming["item_sep"],
            exclude_keys=naming["exclude_keys"],
        )

    def release(self) -> None:
        """Drop the full config once Hydra has what it needs from it."""
        self._config = None


def unresolved_task(job: ComposedJob) -> dict[str, Any] | None:
    """The job's task config (without ``hydra``) unresolved, as plain containers, as
    ``OmegaConf.to_container(resolve=False)`` gives it; ``None`` when applying its values
    needs OmegaConf."""
    return _with_values(job.template.task, job.plain, unresolved=True)


def _with_values(
    cfg: dict[str, Any], plain: list[Override], unresolved: bool = False
) -> dict[str, Any] | None:
    """A copy of ``cfg`` with plain overrides applied as OmegaConf.update(merge=True) would,
    or ``None`` when that needs OmegaConf (a missing key; an interpolation in a value, unless
    the result stays ``unresolved``, where it is kept as written)."""
    cfg = copy_plain(cfg)
    for override in plain:
        value = copy_plain(override.value())  # the override is shared by other jobs
        if needs_omegaconf(value) and not unresolved:
            return None
        *path, last = override.key_or_group.split(".")
        node = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            return None
        if isinstance(value, dict) and isinstance(node[last], dict):
            _merge(node[last], value)
        else:
            node[last] = value
    return cfg


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _reads_hydra(node: Any) -> bool:
    """Whether an interpolation in ``node`` may read the ``hydra`` node (a job's own)."""
    if isinstance(node, dict):
        return any(_reads_hydra(v) for v in node.values())
    if isinstance(node, list):
        return any(_reads_hydra(v) for v in node)
    return isinstance(node, str) and "${" in node and "hydra" in node


def _hydra_config(template: Template) -> DictConfig:
    """What ``HydraConfig`` holds while a job of ``template`` is resolved."""
    instance = HydraConfig.instance()
    previous = instance.cfg
    instance.set_config(template.config())
    try:
        return instance.cfg  # type: ignore[return-value]
    finally:
        instance.cfg = previous


def compose_jobs(
    loader: ConfigLoader,
    master: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[ComposedJob]:
    """Each job's run spec and (lazily) its full config, equal to what
    ``loader.load_sweep_config`` gives, composing as few configs as the module docstring says."""
    parser = OverridesParser.create()
    parsed_lines: dict[str, tuple[Override, bool]] = {}  # line -> (override, is plain)
    composer = Composer(loader, master)
    hydra_configs: dict[int, DictConfig] = {}  # by template, while composing
    jobs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        for line in overrides:
            if line not in parsed_lines:
                [override] = parser.parse_overrides([line])
                parsed_lines[line] = (override, _is_plain_value(override, loader))
        parsed = [parsed_lines[line][0] for line in overrides]
        plain = [parsed_lines[line][0] for line in overrides if parsed_lines[line][1]]
        structural = [parsed_lines[line][0] for line in overrides if not parsed_lines[line][1]]
        template = composer.template(structural)
        job = ComposedJob(template, parsed, plain, idx)
        cfg = _with_values(template.spec().cfg, plain) if template.direct else None
        if cfg is not None:
            job.spec = RunSpec(cfg, dict(template.spec().choices), job.task_lines(), idx)
        elif (task := unresolved_task(job)) is not None and not _reads_hydra(task):
            # resolved on the task alone, as from_hydra_config resolves it, with the template's
            # Hydra config set (resolvers read the choices): no full config per job
            if id(template) not in hydra_configs:
                hydra_configs[id(template)] = _hydra_config(template)
            HydraConfig.instance().cfg = hydra_configs[id(template)]
            job.spec = RunSpec.from_task_config(
                OmegaConf.create(task), template.choices, job.task_lines(), idx
            )
        else:
            HydraConfig.instance().set_config(job.config())  # for ${hydra:...} interpolations
            job.spec = RunSpec.from_hydra_config(job.config())
        jobs.append(job)
    log.debug(
        "%d jobs: %d configs, %d composed by Hydra",
        len(jobs),
        len(composer.templates),
        len(composer.composed),
    )
    return jobs
