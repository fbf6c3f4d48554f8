"""``hydra/sweeper=lossbench``: Hydra's basic grid sweeper, with three changes, and Optuna.

1. Every job is checked before any trains, with lossbench's checks, whatever the launcher.
   lossbench's launcher checks jobs itself (faster, on its workers), so then the sweeper skips
   Hydra's own pass, which composes every job a second time (~70 ms each: 20 s for 300 jobs).
2. A failed job does not end the sweep with that one job's traceback: every job runs, then a
   summary lists the failed ones (and the diverged ones), and the exit code is 1 if any failed
   (0 if every job completed: a diverged run is a result, recorded FAILED with
   ``lossbench.status=diverged``).
3. Ctrl+C or SIGTERM ends the sweep with a line saying so; the interrupted runs were recorded
   KILLED by whoever was running them.

With ``hydra.sweeper.optuna.search`` set, each combination of the swept groups gets an Optuna
study instead (:mod:`lossbench.sweep.hpo`): ``optimizer=sgd,adam`` with
``hydra.sweeper.optuna.search={optimizer.lr: "log(1e-4, 1)"}`` tunes the lr of each optimizer.

(No ``from __future__ import annotations``: Hydra loads plugins outside ``sys.modules``.)
"""

import contextlib
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence  # noqa: UP035 (OmegaConf needs typing forms)

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from lossbench.hydra_private import BasicSweeper

log = logging.getLogger(__name__)


@dataclass
class OptunaConf:
    """``hydra.sweeper.optuna``: tune the ``search`` parameters with Optuna instead of a grid,
    one study per combination of the swept groups (see :mod:`lossbench.sweep.hpo`)."""

    # searched parameters: key -> log(lo, hi) | float(lo, hi) | int(lo, hi) | choice(a, b, ...)
    # untyped, so that `hydra.sweeper.optuna.search={...}` can set it from the command line
    search: Any = None
    n_trials: int = 20  # per study
    trials_per_round: int = 2  # trials of each study launched together
    metric: str = "val/loss"  # the final metric to optimize
    # minimize or maximize; null: as the metric's direction says (val/loss: minimize)
    direction: Optional[str] = None  # noqa: UP045
    penalty: Optional[float] = None  # noqa: UP045 (diverged/failed trials; null: infinitely bad)
    seed: int = 0  # the samplers' seed


@dataclass
class LossbenchSweeperConf:
    """Options of ``hydra/sweeper=lossbench``: Hydra's basic sweeper's, and ``optuna``."""

    _target_: str = "hydra_plugins.lossbench_plugins.sweeper.LossbenchSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045
    optuna: OptunaConf = field(default_factory=OptunaConf)


ConfigStore.instance().store(
    group="hydra/sweeper", name="lossbench", node=LossbenchSweeperConf, provider="lossbench"
)


class LossbenchSweeper(BasicSweeper):
    """Grid sweep over ``hydra.sweeper.params`` and command-line lists, or Optuna studies per
    combination when ``hydra.sweeper.optuna.search`` is set; see the module docstring."""

    def __init__(
        self,
        max_batch_size: Optional[int] = None,  # noqa: UP045
        params: Optional[Dict[str, str]] = None,  # noqa: UP006, UP045
        optuna: Optional[Any] = None,  # noqa: UP045
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.optuna = dict(optuna or {})

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Check every job of the batch before any trains (unless the launcher does); bad
        input exits 2 with its message. Then the sweep's multirun.yaml is written."""
        if not getattr(self.launcher, "checks_jobs", False):
            super().validate_batch_is_legal(batch)
            from lossbench.bad_input import clean_errors
            from lossbench.sweep.checking import check_all
            from lossbench.sweep.executors import InlineExecutor
            from lossbench.sweep.jobs import compose_jobs

            assert self.hydra_context is not None and self.config is not None
            with clean_errors():
                jobs = compose_jobs(self.hydra_context.config_loader, self.config, batch, 0)
                check_all([job.spec for job in jobs], InlineExecutor(), 1)
            self._start_sweep_dir()

    def _start_sweep_dir(self) -> None:
        """The sweep's directory, multirun.yaml and file, once its first batch is checked
        (lossbench's launcher does this itself, after its own checks)."""
        from hydra_plugins.lossbench_plugins.callback import start_sweep_file

        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        if not (sweep_dir / "multirun.yaml").exists():
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        start_sweep_file(self.config)

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        """Run every batch of jobs, then report the failed ones (see the module docstring)."""
        from lossbench.interrupts import Interrupted

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        params = self._parse_config()
        params.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params), self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)  # made once the first batch is checked

        returns: List[Sequence[JobReturn]] = []  # noqa: UP006
        initial_job_idx = 0
        try:
            if self.optuna.get("search"):
                from lossbench.problem.directions import config_directions
                from lossbench.sweep.hpo import run_studies

                combos = [list(job) for batch in self.overrides for job in batch]
                metrics = self.config.get("metrics")  # the directions its entries declare
                entries = OmegaConf.to_container(metrics, resolve=True) if metrics else {}
                declared = config_directions({"metrics": entries})
                returns = run_studies(combos, self._launch_trials, self.optuna, sweep_dir, declared)
            while not self.optuna.get("search") and not self.is_done():
                batch = self.get_job_batch()
                self.validate_batch_is_legal(batch)
                returns.append(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
                initial_job_idx += len(batch)
        except Interrupted as interrupt:
            done = sum(len(r) for r in returns)
            log.error("Sweep %s after %d jobs; outputs in %s", interrupt, done, sweep_dir)
            raise
        summarize([r for batch in returns for r in batch])
        return returns

    def _launch_trials(self, jobs: List[List[str]], initial_job_idx: int) -> Sequence[JobReturn]:  # noqa: UP006
        """Check, then launch, one round of Optuna trials."""
        assert self.launcher is not None
        self.validate_batch_is_legal(jobs)
        return self.launcher.launch(jobs, initial_job_idx=initial_job_idx)


def summarize(returns: Sequence[JobReturn]) -> None:
    """Log diverged and failed jobs; exit with status 1 if any failed."""
    failed = [r for r in returns if r.status == JobStatus.FAILED]
    diverged = [
        r for r in returns
        if r.status == JobStatus.COMPLETED and isinstance(r.return_value, dict)
        and r.return_value.get("diverged")
    ]  # fmt: skip
    for ret in diverged:
        log.warning("diverged: job #%s (%s)", ret.hydra_cfg.hydra.job.num, " ".join(ret.overrides))
    if not failed:
        log.info("All %d jobs completed (%d diverged).", len(returns), len(diverged))
        return
    lines = []
    for ret in failed:
        lines.append(
            f"  job #{ret.hydra_cfg.hydra.job.num} ({' '.join(ret.overrides)}): {_last_error_line(ret)}"
        )
    log.error(
        "%d of %d jobs failed (their tracebacks: traceback.txt in each run's MLflow artifacts):\n%s",
        len(failed),
        len(returns),
        "\n".join(lines),
    )
    sys.exit(1)


def _last_error_line(ret: JobReturn) -> str:
    """The last line of a failed job's exception. The public ``return_value`` re-raises it, and
    writes "Error executing job with overrides: ..." to stderr, which the summary says better."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            ret.return_value  # noqa: B018 (raises)
    except Exception as err:
        lines = str(err).strip().splitlines()
        return lines[-1] if lines else ""
    return ""
