"""The Hydra app: ``lossbench-train`` (or ``python -m lossbench.train``).

``train()`` trains and records one run from a composed config; ``main()`` is the thin
``@hydra.main`` wrapper around it. In a multirun, lossbench's own launcher (the default) does not
call ``main`` per job: it stacks compatible jobs into one fit each (see :mod:`lossbench.sweep`).
Other launchers (``hydra/launcher=basic``, ``joblib``, ...) call ``main`` once per job.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lossbench.config import CONF_DIR, RunSpec, check_run
from lossbench.results import RunResult
from lossbench.tracking import SweepInfo, Tracker, new_sweep_id, read_sweep_file

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig | Mapping[str, Any],
    choices: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    sweep: SweepInfo | None = None,
) -> RunResult:
    """Check, train and record one run; returns its metrics.

    Bad input raises :class:`lossbench.config.ConfigError` before anything is trained or written.
    The MLflow run is created RUNNING, receives metrics every ``tracking.flush_every_n_epochs``
    epochs, and ends FINISHED, or FAILED/KILLED if training raised.
    """
    spec = RunSpec.from_task_config(cfg, choices, overrides)
    data = check_run(spec)
    from lossbench.training import fit_members  # Lightning is imported only to train

    tracker = Tracker.from_config(spec.cfg["tracking"])
    if tracker is None:
        [result] = fit_members([spec.cfg], data)
        return result

    run_id = tracker.start_run(spec, data.summary(), sweep or SweepInfo(new_sweep_id()))
    written = 0
    series: dict[str, list[float]] = {}

    def flush(epoch: int, row: Mapping[str, Any]) -> None:
        nonlocal written
        for name, values in row.items():
            series.setdefault(name, []).append(float(values[0]))
        every = tracker.flush_every_n_epochs
        if every and (epoch + 1) % every == 0:
            tracker.log_epochs(run_id, series, start=written)
            written = epoch + 1
            log.info("epoch %d: %s", epoch + 1, _summary(series))

    try:
        [result] = fit_members([spec.cfg], data, on_epoch_end=flush)
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        partial = RunResult(series=series, status=status, error=traceback.format_exc())
        tracker.finish_run(run_id, partial, written_epochs=written)
        raise
    tracker.finish_run(run_id, result, written_epochs=written)
    log.info("run %s finished: %s", run_id, _summary(result.series))
    return result


def _summary(series: Mapping[str, Sequence[float]]) -> str:
    keys = ("train/loss", "val/loss", "val/acc", "val/rmse")
    return " ".join(f"{k}={series[k][-1]:.4f}" for k in keys if series.get(k))


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> dict[str, float]:
    """Train one run (a job of a multirun, or a single run) and record it in MLflow."""
    hydra_cfg = HydraConfig.get()
    sweep = None
    if hydra_cfg.mode == RunMode.MULTIRUN:
        sweep = read_sweep_file(hydra_cfg.sweep.dir)
    result = train(cfg, hydra_cfg.runtime.choices, list(hydra_cfg.overrides.task), sweep)
    return result.final


if __name__ == "__main__":
    main()
