"""A trained job's Hydra bookkeeping, as Hydra's ``run_job`` does it, with fewer copies.

For every job, Hydra's ``run_job`` sets Hydra's config twice (each a copy of the big ``hydra``
node), deep-copies the whole config, then the ``hydra`` node again, and writes ``.hydra/*.yaml``
with OmegaConf's pure-Python YAML writer. The launcher does this for every job in the one
process that also records runs and feeds the workers. Two ways here give the same JobReturn,
callbacks and ``.hydra/`` files (the same YAML content) for less:

- :func:`hand_over` works on the job's full config (a fresh copy the launcher owns): one copy of
  the ``hydra`` node fewer, the task part copied instead of the whole config, YAML by libyaml.
- :class:`PlainHandOver`, when no Hydra callback has a job hook: the files are written from
  plain containers (the ``hydra`` node's made once per template), and the JobReturn builds its
  ``cfg`` and ``hydra_cfg`` only if someone reads them: 3-4 ms a job instead of ~21 ms, in the
  process that also records runs and feeds the workers.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, env_override
from hydra.experimental.callback import Callback
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from lossbench.sweep.jobs import ComposedJob, unresolved_task
from lossbench.yaml_text import yaml_text


def _save(cfg: DictConfig | ListConfig, filename: str, output_dir: Path) -> None:
    """What Hydra writes into ``.hydra/``: the config unresolved, enums by name."""
    data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / filename).write_text(yaml_text(data), encoding="utf-8")


def _job_configs(config: DictConfig) -> tuple[DictConfig, DictConfig]:
    """The task config and the ``hydra`` config that ``run_job`` puts in a JobReturn, with
    ``config`` set as Hydra's config (the caller restores the previous one)."""
    HydraConfig.instance().set_config(config)
    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    OmegaConf.set_struct(task_cfg, OmegaConf.is_struct(config))
    # as run_job: a copy that does not keep the whole config alive (set_config's copy
    # interpolates from it) while Hydra holds every JobReturn until the sweep ends
    return task_cfg, copy.deepcopy(HydraConfig.instance().cfg)  # type: ignore[return-value]


def _set_output_dir(config: DictConfig, output_dir: str) -> None:
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)


def hand_over(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_dir_key: str = "hydra.sweep.dir",
    job_subdir_key: str = "hydra.sweep.subdir",
) -> JobReturn:
    """Run ``task_function`` as Hydra's ``run_job`` would (output dir, ``.hydra/`` files,
    ``env_set``, callbacks, JobReturn), on a ``config`` this call may change and keep.

    The process never changes directory, even with ``hydra.job.chdir=true``: the job's work
    was done by its stack, in a worker, and the task function only hands over the result."""
    callbacks = hydra_context.callbacks
    instance = HydraConfig.instance()
    previous = instance.cfg
    output_dir = os.path.join(
        str(OmegaConf.select(config, job_dir_key)), str(OmegaConf.select(config, job_subdir_key))
    )
    _set_output_dir(config, output_dir)
    try:
        ret = JobReturn()
        task_cfg, ret.hydra_cfg = _job_configs(config)
        ret.cfg = task_cfg
        ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)  # type: ignore[assignment]
        # run_job's working dir; this job does not change into it (nothing runs here)
        ret.working_dir = output_dir if config.hydra.job.chdir else os.getcwd()
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if config.hydra.output_subdir is not None:
            hydra_output = Path(config.hydra.runtime.output_dir) / str(config.hydra.output_subdir)
            _save(task_cfg, "config.yaml", hydra_output)
            _save(ret.hydra_cfg, "hydra.yaml", hydra_output)
            _save(config.hydra.overrides.task, "overrides.yaml", hydra_output)
        with env_override(dict(ret.hydra_cfg.hydra.job.env_set)):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as e:  # as run_job: the JobReturn carries the failure
                ret.return_value = e
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        instance.cfg = previous


def has_job_hooks(callbacks: Mapping[str, Any] | None) -> bool:
    """Whether any of ``hydra.callbacks`` (their config) has ``on_job_start`` or
    ``on_job_end``: those need each job's full config, as :func:`hand_over` gives it."""
    for node in (callbacks or {}).values():
        cls = get_class(str(node["_target_"]))
        for hook in ("on_job_start", "on_job_end"):
            if getattr(cls, hook, None) not in (None, getattr(Callback, hook)):
                return True
    return False


def _built(name: str) -> property:
    """A field of :class:`_LazyJobReturn`: the job's configs are built when it is first read
    or set (a value set replaces the built one)."""

    def get(self: _LazyJobReturn) -> Any:
        self._configs()
        return self.__dict__[name]

    def set_(self: _LazyJobReturn, value: Any) -> None:
        self._configs()
        self.__dict__[name] = value

    return property(get, set_)


class _LazyJobReturn(JobReturn):
    """A JobReturn whose ``cfg`` and ``hydra_cfg`` (the job's DictConfigs, as ``run_job``
    gives them) are built the first time either is read."""

    def __init__(self, build: Callable[[], tuple[DictConfig, DictConfig]], **fields: Any) -> None:
        super().__init__(**fields)
        self.__dict__["_build"] = build

    def _configs(self) -> None:
        build = self.__dict__.pop("_build", None)
        if build is not None:
            self.__dict__["_cfg"], self.__dict__["_hydra_cfg"] = build()

    cfg = _built("_cfg")  # type: ignore[assignment]
    hydra_cfg = _built("_hydra_cfg")  # type: ignore[assignment]


_SUBDIRS_BY_NUMBER = ("${hydra.job.num}", "${hydra.job.id}")  # Hydra's default, and its twin


def _is_plain_yaml(node: Any) -> bool:
    if isinstance(node, dict):
        return all(isinstance(k, str) and _is_plain_yaml(v) for k, v in node.items())
    if isinstance(node, list):
        return all(_is_plain_yaml(v) for v in node)
    return node is None or isinstance(node, (bool, int, float, str))


class PlainHandOver:
    """:func:`hand_over` for the launcher's jobs, without a DictConfig per job: the same
    ``.hydra/`` files and the same JobReturn, for sweeps whose Hydra callbacks have no job
    hooks (:func:`has_job_hooks`) and whose task function only hands over a result.

    :meth:`applies` says which jobs qualify: a task config of plain YAML values, a sweep dir
    that is the same for every job and a subdir named by the job's number (Hydra's defaults).
    Others go through :func:`hand_over`."""

    def __init__(self) -> None:
        self._templates: dict[int, tuple[Any, dict[str, Any] | None, str]] = {}

    def _template(self, job: ComposedJob) -> tuple[dict[str, Any] | None, str]:
        """The template's ``hydra`` node as plain YAML data and its sweep dir; ``None`` when
        it does not qualify."""
        key = id(job.template)
        if key not in self._templates:
            cfg = job.template.config()
            hydra = OmegaConf.to_container(cfg.hydra, resolve=False, enum_to_str=True)
            assert isinstance(hydra, dict)
            subdir, sweep = hydra["sweep"]["subdir"], str(hydra["sweep"]["dir"])
            qualifies = (
                _is_plain_yaml(hydra)
                and (subdir in _SUBDIRS_BY_NUMBER or "${" not in str(subdir))
                and "${" not in re.sub(r"\$\{now:[^}]*\}", "", sweep)  # the same for every job
                and _is_plain_yaml(job.template.task)
            )
            sweep_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
            # the template is kept alive with its entry, so that its id stays its own
            self._templates[key] = (job.template, hydra if qualifies else None, sweep_dir)
        _, hydra, sweep_dir = self._templates[key]
        return hydra, sweep_dir

    def _parts(self, job: ComposedJob) -> tuple[dict[str, Any], str, dict[str, Any]] | None:
        """The template's hydra node and sweep dir and the job's unresolved task config, or
        ``None`` when the job does not qualify."""
        template_hydra, sweep_dir = self._template(job)
        task = unresolved_task(job) if template_hydra is not None else None
        return None if template_hydra is None or task is None else (template_hydra, sweep_dir, task)

    def applies(self, job: ComposedJob) -> bool:
        """Whether this job can be handed over from plain containers."""
        return self._parts(job) is not None

    def __call__(self, job: ComposedJob, outcome: Callable[[], Any]) -> JobReturn | None:
        """Write the job's ``.hydra/`` files and return its JobReturn, with ``outcome()``'s
        value (COMPLETED) or exception (FAILED); ``None`` (nothing done) when the job does not
        qualify (:meth:`applies`)."""
        parts = self._parts(job)
        if parts is None:
            return None
        template_hydra, sweep_dir, task = parts
        lines = job.task_lines()
        subdir = template_hydra["sweep"]["subdir"]
        output_dir = os.path.join(
            sweep_dir, str(job.idx) if subdir in _SUBDIRS_BY_NUMBER else str(subdir)
        )
        hydra = {**template_hydra}
        hydra["overrides"] = {**hydra["overrides"], "task": list(lines)}
        hydra["job"] = {
            **hydra["job"],
            "override_dirname": job.override_dirname(),
            "id": str(job.idx),  # HydraConf types it str
            "num": job.idx,
        }
        hydra["runtime"] = {**hydra["runtime"], "output_dir": os.path.abspath(output_dir)}
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        if hydra["output_subdir"] is not None:
            files = Path(hydra["runtime"]["output_dir"]) / str(hydra["output_subdir"])
            files.mkdir(parents=True, exist_ok=True)
            (files / "config.yaml").write_text(yaml_text(task), encoding="utf-8")
            (files / "hydra.yaml").write_text(yaml_text({"hydra": hydra}), encoding="utf-8")
            (files / "overrides.yaml").write_text(yaml_text(list(lines)), encoding="utf-8")

        def configs() -> tuple[DictConfig, DictConfig]:
            config = job.config()
            job.release()
            _set_output_dir(config, output_dir)
            previous = HydraConfig.instance().cfg
            try:
                return _job_configs(config)
            finally:
                HydraConfig.instance().cfg = previous

        ret = _LazyJobReturn(
            configs,
            overrides=list(lines),
            working_dir=output_dir if hydra["job"]["chdir"] else os.getcwd(),
            task_name=JobRuntime.instance().get("name"),
        )
        try:
            ret.return_value = outcome()
            ret.status = JobStatus.COMPLETED
        except Exception as e:  # as run_job: the JobReturn carries the failure
            ret.return_value = e
            ret.status = JobStatus.FAILED
        return ret
