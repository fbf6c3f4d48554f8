"""``hydra/launcher=lossbench``: check every job first, stack runs that differ only in seed and
loss into one fit, train stacks in parallel worker processes, and record every job in MLflow.

The work is done by :mod:`lossbench.sweep`; this class adapts it to Hydra's Launcher interface,
so that each job still gets its output directory, callbacks and JobReturn.
"""

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

SUMMARY_FILE = "lossbench-summary.json"  # in the sweep dir: counts and where the time went


@dataclass
class LossbenchLauncherConf:
    """Options of ``hydra/launcher=lossbench`` (set as ``hydra.launcher.<name>=...``).

    (No ``from __future__ import annotations`` in this module: Hydra loads plugins outside
    ``sys.modules``, where dataclasses cannot resolve string annotations.)
    """

    _target_: str = "hydra_plugins.lossbench_plugins.launcher.LossbenchLauncher"
    # worker processes; null or -1: all cores; 1: train in this process
    n_jobs: Optional[int] = None  # noqa: UP045 (OmegaConf needs typing.Optional)
    stack: bool = True  # train runs differing only in seed and loss as one stacked model
    max_members: int = 64  # at most this many runs per stack


ConfigStore.instance().store(
    group="hydra/launcher", name="lossbench", node=LossbenchLauncherConf, provider="lossbench"
)


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


class ComposedJob:
    """One job of a sweep: its run spec now, its full Hydra config when run_job needs it."""

    def __init__(
        self, template: DictConfig, parsed: list[Override], plain: list[Override], idx: int
    ) -> None:
        self.template, self.parsed, self.plain, self.idx = template, parsed, plain, idx
        self._config: DictConfig | None = None
        self.spec: Any = None

    def config(self) -> DictConfig:
        """The job's config, as ``load_sweep_config`` gives it (built on first use)."""
        if self._config is None:
            cfg = copy.deepcopy(self.template)
            ConfigLoaderImpl._apply_overrides_to_config(self.plain, cfg)
            app = [o for o in self.parsed if not o.is_hydra_override()]
            naming = cfg.hydra.job.config.override_dirname
            with read_write(cfg.hydra), open_dict(cfg):
                cfg.hydra.overrides.task = [o.input_line for o in app]
                cfg.hydra.job.override_dirname = get_overrides_dirname(
                    overrides=app,
                    kv_sep=naming.kv_sep,
                    item_sep=naming.item_sep,
                    exclude_keys=naming.exclude_keys,
                )
                cfg.hydra.job.id = self.idx
                cfg.hydra.job.num = self.idx
            self._config = cfg
        return self._config

    def release(self) -> None:
        """Drop the full config once Hydra has what it needs from it."""
        self._config = None


def _has_interpolation(node: Any) -> bool:
    if isinstance(node, dict):
        return any(_has_interpolation(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_interpolation(v) for v in node)
    return isinstance(node, str) and "${" in node


def _with_values(cfg: dict[str, Any], plain: list[Override]) -> dict[str, Any] | None:
    """``cfg`` with plain overrides applied as OmegaConf.update(merge=True) would, or ``None``
    when that needs OmegaConf (a missing key, an interpolation in a value)."""
    cfg = copy.deepcopy(cfg)
    for override in plain:
        value = override.value()
        if _has_interpolation(value):
            return None
        *path, last = override.key_or_group.split(".")
        node = cfg
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            return None
        if isinstance(value, dict) and isinstance(node[last], dict):
            merged = _with_values(node[last], [])  # a copy
            assert merged is not None
            _merge(merged, value)
            node[last] = merged
        else:
            node[last] = value
    return cfg


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def compose_jobs(
    loader: ConfigLoader,
    master: DictConfig,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
) -> list[ComposedJob]:
    """Each job's run spec and (lazily) its full config, equal to what
    ``loader.load_sweep_config`` gives, but composing only once per distinct set of group
    overrides: a composition costs ~70 ms, so a 300-job sweep over 60 group combinations would
    spend 20 s on it. Plain value overrides such as ``seed=3`` are applied afterwards, which is
    what Hydra does too; to the resolved spec directly when the config has no interpolations."""
    from lossbench.config import RunSpec

    parser = OverridesParser.create()
    templates: dict[tuple[str, ...], tuple[DictConfig, Any, bool]] = {}
    jobs = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        parsed = parser.parse_overrides(list(overrides))
        plain = [o for o in parsed if _is_plain_value(o, loader)]
        structural = tuple(o.input_line for o in parsed if o not in plain)
        if structural not in templates:
            template = loader.load_sweep_config(master, list(structural))
            HydraConfig.instance().set_config(template)  # for ${hydra:...} interpolations
            task = OmegaConf.masked_copy(template, [k for k in template if k != "hydra"])
            direct = not _has_interpolation(OmegaConf.to_container(task, resolve=False))
            templates[structural] = (template, RunSpec.from_hydra_config(template), direct)
        template, template_spec, direct = templates[structural]
        job = ComposedJob(template, parsed, plain, idx)
        cfg = _with_values(template_spec.cfg, plain) if direct else None
        if cfg is not None:
            app = [o.input_line for o in parsed if not o.is_hydra_override()]
            job.spec = RunSpec(cfg, dict(template_spec.choices), app, idx)
        else:
            HydraConfig.instance().set_config(job.config())
            job.spec = RunSpec.from_hydra_config(job.config())
        jobs.append(job)
    return jobs


class _Recorded:
    """Task function for run_job: hands over a run that has already trained and been recorded."""

    def __init__(self, result: Any) -> None:
        self.result = result

    def __call__(self, cfg: DictConfig) -> Any:
        if self.result.status != "FINISHED":
            raise RuntimeError(f"run {self.result.status}:\n{self.result.error}")
        return self.result.final


class LossbenchLauncher(Launcher):
    """Stacks compatible jobs and trains them in parallel; see the module docstring."""

    checks_jobs = True  # lossbench's sweeper leaves checking every job to this launcher

    def __init__(
        self,
        n_jobs: Optional[int] = None,  # noqa: UP045
        stack: bool = True,
        max_members: int = 64,
    ) -> None:
        self.n_jobs = n_jobs
        self.stack = stack
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Keep what launch() needs (Hydra calls this before launching)."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Run one batch of jobs; returns their JobReturns in job order."""
        from lossbench import sweep as sw

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        # Workers start importing torch and Lightning now, while jobs are composed and checked.
        n_workers = sw.worker_count(self.n_jobs, len(job_overrides))
        executor = sw.make_executor(n_workers)
        try:
            return self._launch(job_overrides, initial_job_idx, sweep_dir, executor, n_workers)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _launch(
        self,
        job_overrides: Sequence[Sequence[str]],
        initial_job_idx: int,
        sweep_dir: Path,
        executor: Any,
        n_workers: int,
    ) -> Sequence[JobReturn]:
        from lossbench import sweep as sw
        from lossbench.tracking import mlflow_seconds, read_sweep_file

        assert self.config is not None and self.hydra_context is not None
        start = time.perf_counter()
        jobs = compose_jobs(
            self.hydra_context.config_loader, self.config, job_overrides, initial_job_idx
        )
        specs = [job.spec for job in jobs]
        composed = time.perf_counter()
        facts = sw.check_all(specs, executor, n_workers)
        checked = time.perf_counter()
        stacks = sw.plan_stacks(specs, facts, self.stack, self.max_members)
        n_workers = min(n_workers, len(stacks))
        log.info(
            "Launching %d jobs as %d stacked fit(s) on %d worker(s) (composed in %.1fs, "
            "checked in %.1fs); sweep dir %s",
            len(specs),
            len(stacks),
            n_workers,
            composed - start,
            checked - composed,
            sweep_dir,
        )
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.debug("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))

        returns: dict[int, JobReturn] = {}

        def hand_over(job: int, result: Any) -> None:
            # the job's output dir, .hydra/ files, callbacks and JobReturn, as Hydra gives them;
            # no per-job log file: the job's work was done (and logged) by its stack
            returns[job] = run_job(
                hydra_context=self.hydra_context,
                task_function=_Recorded(result),
                config=jobs[job].config(),
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
                configure_logging=False,
            )
            jobs[job].release()  # the JobReturn holds its own copies

        runner = sw.StackRunner(read_sweep_file(sweep_dir), hand_over)
        runner.run(stacks, executor, n_workers)
        summary = {
            "runs": len(specs),
            "statuses": dict(runner.statuses),
            "stacks": len(stacks),
            "workers": n_workers,
            "compose_seconds": round(composed - start, 3),
            "check_seconds": round(checked - composed, 3),
            "train_seconds": round(time.perf_counter() - checked, 3),
            "mlflow_seconds": round(mlflow_seconds(), 3),
        }
        (sweep_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        log.info(
            "%d runs (%s) in %.1fs of training; MLflow writes took %.1fs",
            len(specs),
            ", ".join(f"{n} {status}" for status, n in sorted(runner.statuses.items())),
            summary["train_seconds"],
            summary["mlflow_seconds"],
        )
        return [returns[job] for job in range(len(jobs))]
