"""A trained job's Hydra bookkeeping, as Hydra's ``run_job`` does it, with fewer copies.

For every job, Hydra's ``run_job`` sets Hydra's config twice (each a copy of the big ``hydra``
node), deep-copies the whole config, then the ``hydra`` node again, and writes ``.hydra/*.yaml``
with OmegaConf's pure-Python YAML writer. The launcher does this for every job in the one
process that also records runs and feeds the workers; at 300 jobs, that was 15 s of the sweep's
critical path. Here the job's config is already a fresh copy that the launcher owns, so
:func:`hand_over` builds the same JobReturn, calls the same callbacks and writes the same files
(the same YAML content, read back) with one copy of the ``hydra`` node fewer, the task part
copied instead of the whole config, and YAML written by libyaml where PyYAML has it.
"""

import copy
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, env_override
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from lossbench.yaml_text import yaml_text


def _save(cfg: DictConfig | ListConfig, filename: str, output_dir: Path) -> None:
    """What Hydra writes into ``.hydra/``: the config unresolved, enums by name."""
    data = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / filename).write_text(yaml_text(data), encoding="utf-8")


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
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    instance.set_config(config)
    try:
        ret = JobReturn()
        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        OmegaConf.set_struct(task_cfg, OmegaConf.is_struct(config))
        ret.cfg = task_cfg
        # as run_job: a copy that does not keep the whole config alive (set_config's copy
        # interpolates from it) while Hydra holds every JobReturn until the sweep ends
        ret.hydra_cfg = copy.deepcopy(instance.cfg)
        ret.overrides = OmegaConf.to_container(config.hydra.overrides.task)
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
