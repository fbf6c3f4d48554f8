"""``hydra.callbacks.lossbench_sweep``: a sweep's file and parent run, whatever the launcher.

Before the first job, it starts the sweep's file (:mod:`lossbench.tracking.sweeps`); after the
last one, it ends the sweep's parent run FINISHED. If the process exits mid-sweep instead (a job
failed, Ctrl+C), it ends it at exit, FAILED or KILLED.

(No ``from __future__ import annotations``: Hydra loads plugins outside ``sys.modules``.)
"""

import atexit
import logging
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Starts the sweep's file before the first job and ends the sweep's parent run after the
    last one (or at exit); see the module docstring."""

    def __init__(self) -> None:
        self._sweep_dir: Optional[str] = None  # noqa: UP045

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the sweep's file; the store is not touched until a run is written. With
        lossbench's launcher or sweeper, they start it once the jobs are checked (bad input
        writes nothing)."""
        self._sweep_dir = str(config.hydra.sweep.dir)
        atexit.register(self._close_at_exit)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        if launcher.endswith("LossbenchLauncher") or sweeper.endswith("LossbenchSweeper"):
            return
        start_sweep_file(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """End the parent run: the sweep completed."""
        from lossbench.tracking.sweeps import close_sweep

        if self._sweep_dir is not None:
            atexit.unregister(self._close_at_exit)
            close_sweep(self._sweep_dir, "FINISHED")

    def _close_at_exit(self) -> None:
        from lossbench.tracking.sweeps import close_sweep, exit_status

        if self._sweep_dir is not None:
            close_sweep(self._sweep_dir, exit_status())


def start_sweep_file(config: DictConfig) -> None:
    """Start a sweep's file from its composed config (overrides, report settings, store), if
    it has none yet; see :func:`lossbench.tracking.sweeps.open_sweep`."""
    from lossbench.tracking.store import tracking_uri
    from lossbench.tracking.sweeps import open_sweep, sweep_started

    sweep_dir = str(config.hydra.sweep.dir)
    if sweep_started(sweep_dir):
        return
    report = OmegaConf.to_container(config.report, resolve=True) if "report" in config else None
    overrides = [str(o) for o in config.hydra.overrides.task]
    tracking = OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else {}
    store = tracking_uri(tracking) if tracking.get("enabled", True) else None  # type: ignore[union-attr]
    sweep_id = open_sweep(sweep_dir, overrides, report, store)  # type: ignore[arg-type]
    log.info("Sweep %s; outputs in %s", sweep_id, sweep_dir)
