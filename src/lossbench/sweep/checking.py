"""Checking a sweep's runs before any trains: each distinct component built once, on the
workers, which have torch imported already; the first bad run raises, naming its job.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

from lossbench.config.checks import callbacks_member_safe, check_run, check_seed
from lossbench.config.spec import ConfigError, RunSpec
from lossbench.identity import canonical
from lossbench.tracking.datasets import run_facts

# A fact of a run (not of its data: a leading underscore keeps it out of params): every
# callback of its config declares itself member-safe, so it may stack (sweep.plan)
MEMBER_SAFE_FACT = "_callbacks_member_safe"


def _job_error(spec: RunSpec, err: ConfigError) -> ConfigError:
    where = f"job #{spec.job_num}" if spec.job_num is not None else "run"
    return ConfigError(f"{where} ({' '.join(spec.overrides)}): {err}")


def check_specs(specs: Sequence[RunSpec]) -> list[dict[str, Any]]:
    """Check runs (see :func:`lossbench.config.checks.check_run`), building each distinct component
    once; returns the facts of each one's data (:func:`lossbench.tracking.datasets.run_facts`,
    digests included). The first bad run raises, naming its job and
    overrides."""
    facts = []
    seen: dict[str, Any] = {}
    described: dict[int, dict[str, Any]] = {}  # id(data) -> its facts: each digest once
    for spec in specs:
        try:
            data = check_run(spec, seen)
            if id(data) not in described:
                described[id(data)] = run_facts(
                    spec.cfg["dataset"], int(spec.cfg["data_seed"]), data
                )
            fact = described[id(data)]
            if spec.cfg["trainer"].get("callbacks") and callbacks_member_safe(spec.cfg["trainer"]):
                fact = {**fact, MEMBER_SAFE_FACT: True}  # its runs may stack (see stack_key)
            facts.append(fact)
        except ConfigError as err:
            raise _job_error(spec, err) from None
    return facts


def check_all(specs: Sequence[RunSpec], executor: Executor, n_workers: int) -> list[dict[str, Any]]:
    """Check every run before any trains, on the workers (which have torch imported already).

    Runs that differ only in their seed are checked once; each seed is checked here. Returns
    the facts of each run's data; the first bad run raises.
    """
    keys = [canonical({k: v for k, v in spec.cfg.items() if k != "seed"}) for spec in specs]
    first: dict[str, RunSpec] = {}
    for key, spec in zip(keys, specs, strict=True):
        first.setdefault(key, spec)
        try:
            check_seed(spec.cfg)
        except ConfigError as err:
            raise _job_error(spec, err) from None
    distinct = list(first)
    chunks = [chunk for i in range(n_workers) if (chunk := distinct[i::n_workers])]
    futures = [executor.submit(check_specs, [first[k] for k in chunk]) for chunk in chunks]
    facts: dict[str, dict[str, Any]] = {}
    for chunk, future in zip(chunks, futures, strict=True):
        try:
            facts.update(zip(chunk, future.result(), strict=True))
        except ConfigError as err:  # raised on a worker: without the remote traceback
            raise ConfigError(str(err)) from None
    return [facts[key] for key in keys]
