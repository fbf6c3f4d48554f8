"""The Hydra app: ``lossbench-train`` (or ``python -m lossbench.train``).

``train()`` trains and records one run from a composed config; ``main()`` is the thin
``@hydra.main`` wrapper around it. In a multirun, lossbench's own launcher (the default) does not
call ``main`` per job: it stacks compatible jobs into one fit each (see :mod:`lossbench.sweep`).
Other launchers (``hydra/launcher=basic``, ``joblib``, ...) call ``main`` once per job.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from lossbench.config.checks import check_run
from lossbench.config.spec import CONF_DIR, RunSpec
from lossbench.identity import config_hash
from lossbench.interrupts import Interrupted, interrupts
from lossbench.results import RunResult
from lossbench.sweep.live import MemberRow
from lossbench.tracking.datasets import run_facts
from lossbench.tracking.store import StoreUnreachable
from lossbench.tracking.sweeps import (
    SweepInfo,
    mark_interrupted,
    new_sweep_id,
    sweep_parent,
    sweep_store,
)
from lossbench.tracking.writer import Tracker

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig | Mapping[str, Any],
    choices: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    sweep_dir: str | Path | None = None,
) -> RunResult:
    """Check, train and record one run; returns its metrics.

    - Bad input raises :class:`lossbench.config.spec.ConfigError` before anything is trained or
      written; an unreachable store raises before anything is trained.
    - A config that already has a FINISHED run in the experiment is not trained again (its
      recorded metrics are returned) unless ``rerun=true``.
    - The MLflow run is created RUNNING (in the sweep of ``sweep_dir``, if given), receives
      metrics every ``tracking.flush_every_s`` seconds, and ends FINISHED; FAILED (with
      ``traceback.txt``) if training raised; KILLED on Ctrl+C or SIGTERM.
    """
    spec = RunSpec.from_task_config(cfg, choices, overrides)
    data = check_run(spec)
    store = sweep_store(sweep_dir) if sweep_dir is not None else None
    tracker = Tracker.from_config(spec.cfg["tracking"], store)
    if tracker is not None:
        tracker.check_reachable()
        stored = (
            None if spec.cfg.get("rerun") else tracker.completed_runs().get(config_hash(spec.cfg))
        )
        if stored is not None:
            log.info(
                "Already completed in experiment %r: not trained again (rerun=true to train it)",
                tracker.experiment,
            )
            return stored.result()
    from lossbench.fit.training import fit_members  # Lightning is imported only to train

    if tracker is None:
        with interrupts():
            [result] = fit_members([spec.cfg], data)
        return result

    if sweep_dir is not None:
        sweep = sweep_parent(sweep_dir, tracker)
    else:
        tracker.reap()
        sweep = SweepInfo(new_sweep_id())
    facts = run_facts(spec.cfg["dataset"], int(spec.cfg["data_seed"]), data)
    run_id = tracker.start_run(spec, facts, sweep)
    written = 0
    series: dict[str, list[float]] = {}
    steps: dict[str, list[int]] = {}
    last_flush = time.monotonic()

    def flush(epoch: int, rows: Sequence[MemberRow]) -> None:
        nonlocal written, last_flush
        for name, value in (rows[0] or {}).items():
            series.setdefault(name, []).append(value)
            steps.setdefault(name, []).append(epoch)
        every = tracker.flush_every_s
        if every is not None and time.monotonic() - last_flush >= every:
            tracker.log_epochs(run_id, series, start=written, steps=steps)
            written = epoch + 1
            last_flush = time.monotonic()
            log.info("epoch %d: %s", epoch + 1, _summary(series))

    try:
        with interrupts():
            [result] = fit_members([spec.cfg], data, on_epoch_end=flush)
    except Interrupted as interrupt:
        mark_interrupted()
        killed = RunResult(series, steps=steps, status="KILLED", error=str(interrupt))
        tracker.finish_run(run_id, killed, written)
        log.error("Run %s %s: recorded KILLED", run_id, interrupt)
        raise
    except Exception:
        failed = RunResult(series, steps=steps, status="FAILED", error=traceback.format_exc())
        tracker.finish_run(run_id, failed, written)
        raise
    tracker.finish_run(run_id, result, written)
    if result.diverged:
        log.warning(
            "Run %s %s: recorded FAILED with lossbench.status=diverged", run_id, result.error
        )
    else:
        log.info("Run %s finished: %s", run_id, _summary(result.series))
    log.info(
        "Recorded as run %s in experiment %r of %s. Browse it: lossbench-ui (or make ui), then "
        "http://127.0.0.1:5000; train it again and compare: lossbench-repro %s",
        run_id,
        tracker.experiment,
        tracker.uri,
        run_id,
    )
    return result


def _summary(series: Mapping[str, Sequence[float]]) -> str:
    keys = ("train/loss", "val/loss", "val/acc", "val/rmse")
    return " ".join(f"{k}={series[k][-1]:.4f}" for k in keys if series.get(k))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> dict[str, float]:
    """Train one run (a job of a multirun, or a single run) and record it in MLflow."""
    hydra_cfg = HydraConfig.get()
    sweep_dir = hydra_cfg.sweep.dir if hydra_cfg.mode == RunMode.MULTIRUN else None
    if sweep_dir is None:  # a single run: bad input exits 2 (normally caught by preflight)
        from lossbench.bad_input import clean_errors

        with clean_errors():
            return train(
                cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task)
            ).job_return()
    try:
        result = train(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task), sweep_dir)
    except StoreUnreachable as err:  # Hydra prints a CompactHydraException without a traceback
        raise CompactHydraException(str(err)) from None
    return result.job_return()


def preflight(argv: Sequence[str]) -> None:
    """Check a single run's config (and that its store can be reached) before Hydra makes its
    output directory, so that bad input leaves no file behind; exits 2 with the message.
    Multiruns are checked by the launcher or sweeper, before they write anything; anything this
    cannot compose as ``main`` would (another config path or name) is left to ``main``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    from lossbench.bad_input import clean_errors
    from lossbench.hydra_private import get_args_parser

    try:
        args = get_args_parser().parse_args(list(argv))
    except SystemExit:  # Hydra's own parser will say what is wrong
        return
    other = (args.multirun, args.help, args.hydra_help, args.cfg, args.info, args.config_path,
             args.config_name, args.config_dir, args.shell_completion, args.experimental_rerun)  # fmt: skip
    if any(other):
        return
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(args.overrides), return_hydra_config=True)
    except HydraException:  # a bad override: Hydra says so, before making any directory
        return
    finally:
        GlobalHydra.instance().clear()
    if cfg.hydra.mode == RunMode.MULTIRUN:  # an experiment preset that sweeps
        return
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} and usual_lr_times
    with clean_errors():
        spec = RunSpec.from_hydra_config(cfg)
        check_run(spec)
        tracker = Tracker.from_config(spec.cfg["tracking"])
        if tracker is not None:
            tracker.check_reachable()


def cli() -> None:
    """Entry point of ``lossbench-train``: bad input exits 2 with its message before anything
    is written; otherwise Hydra's, exiting 130/143 on Ctrl+C/SIGTERM once the interrupted runs
    are recorded KILLED."""
    try:
        preflight(sys.argv[1:])
        main()
    except Interrupted as interrupt:
        sys.exit(interrupt.exit_code)
    finally:
        # Everything is recorded and closed. Python's garbage collections at exit would walk
        # every object of the modules a sweep imports (MLflow, pandas, SQLAlchemy: ~1-2 s);
        # frozen objects are left to the OS. atexit handlers (logging's flush) still run.
        gc.freeze()


if __name__ == "__main__":
    cli()
