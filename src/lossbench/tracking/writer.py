"""Writing runs: :class:`Tracker` records the runs of one MLflow experiment, in few writes.

- A sweep is a parent run (tag ``lossbench.role=sweep``) with one child run per job; every run
  carries the sweep id tag ``lossbench.sweep_id``.
- A run is created RUNNING with its tags, params, config artifacts and dataset inputs when its
  training starts (see :mod:`lossbench.tracking.datasets`); while it trains, the metrics that
  have arrived are written every ``tracking.flush_every_s`` seconds (:meth:`Tracker.log_live`;
  see :mod:`lossbench.sweep.live`); when it ends, the rest of its metrics and its result tags,
  and it is closed.
- What is written is built by :mod:`lossbench.tracking.payloads`; how, by the write path
  :mod:`lossbench.tracking.write_paths` chooses (batched SQL where verified, else MLflow's API),
  said once per process on stderr.
"""

from __future__ import annotations

import functools
import logging
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench.config.spec import RunSpec
from lossbench.identity import config_hash
from lossbench.results import RunResult
from lossbench.tracking import reaping, records
from lossbench.tracking.artifacts import write_artifacts
from lossbench.tracking.datasets import dataset_inputs
from lossbench.tracking.payloads import (
    MODEL_ARTIFACT_PATH,
    flush_interval,
    metric_rows,
    result_tags,
    run_name,
    run_params,
)
from lossbench.tracking.provenance import environment_tags, owner_tags
from lossbench.tracking.store import (
    check_reachable,
    ensure_experiment,
    open_client,
    timed,
    tracking_uri,
)
from lossbench.tracking.sweeps import SweepInfo
from lossbench.tracking.write_paths import WritePath, choose, parse_setting
from lossbench.yaml_text import yaml_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
_announced: set[tuple[str, str]] = set()  # (store, path): said once per process


class Tracker:
    """Writes runs to one MLflow experiment. Construction does no I/O; the store and the
    experiment are created on first use."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        flush_every_s: float | None = 5.0,
        sql_batches: str | bool = "auto",
        log_every_n_epochs: int = 1,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        # live curves: metrics of training runs are written at most this often (None: at the end)
        self.flush_every_s = flush_every_s
        self.log_every_n_epochs = log_every_n_epochs  # per-epoch values: every n-th and the last
        self.sql_batches = parse_setting(sql_batches)  # auto, True or False (write_paths.choose)

    @classmethod
    def from_config(cls, tracking: Mapping[str, Any], uri: str | None = None) -> Tracker | None:
        """The tracker a ``tracking`` config asks for (writing to ``uri`` if given), or
        ``None`` for ``tracking=none``."""
        if not tracking.get("enabled", True):
            return None
        return cls(
            uri or tracking_uri(tracking),
            str(tracking.get("experiment") or "lossbench"),
            flush_interval(tracking.get("flush_every_s")),
            parse_setting(tracking.get("sql_batches", "auto")),
            int(tracking.get("log_every_n_epochs") or 1),
        )

    @functools.cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, after making sure the store exists."""
        return open_client(self.uri)

    @functools.cached_property
    def path(self) -> WritePath:
        """How this tracker writes runs (:func:`lossbench.tracking.write_paths.choose`); said
        on stderr once per process and store."""
        path, why = choose(self.client, self.uri, self.sql_batches)
        if (self.uri, path.name) not in _announced:
            _announced.add((self.uri, path.name))
            print(f"lossbench: writing runs to {self.uri} with {path.name}: {why}", file=sys.stderr)
        return path

    @functools.cached_property
    def experiment_id(self) -> str:
        """The experiment's id, creating the experiment if needed."""
        return ensure_experiment(self.client, self.uri, self.experiment)

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Fail fast, with a message, if the store cannot be reached (instead of MLflow's
        minutes of retries)."""
        check_reachable(self.uri, timeout)

    # -- sweeps ----------------------------------------------------------------------------

    def start_sweep(
        self,
        sweep_id: str,
        overrides: Sequence[str],
        sweep_dir: str,
        report: Mapping[str, Any] | None = None,
    ) -> SweepInfo:
        """Create the parent run of a sweep; ``report`` settings (target, axes) become tags."""
        tags = {
            "lossbench.role": "sweep",
            "lossbench.sweep_id": sweep_id,
            "lossbench.overrides": " ".join(overrides)[:5000],
            "lossbench.sweep_dir": sweep_dir,
            "mlflow.source.name": "lossbench-train",
            **{f"lossbench.report.{k}": str(v) for k, v in (report or {}).items() if v is not None},
            **environment_tags(),
            **owner_tags(),
        }
        experiment_id = self.experiment_id
        with timed():
            run = self.client.create_run(experiment_id, run_name=f"sweep-{sweep_id}", tags=tags)
        return SweepInfo(sweep_id, run.info.run_id)

    def start_study(self, sweep_id: str, parent_run_id: str, label: str) -> str:
        """Create the run of one HPO study, under its sweep's parent run; its trials go under
        it. Returns its id."""
        tags = {
            "lossbench.role": "study",
            "lossbench.sweep_id": sweep_id,
            "lossbench.study": label,
            "mlflow.parentRunId": parent_run_id,
            "mlflow.source.name": "lossbench-train",
            **owner_tags(),
        }
        with timed():
            run = self.client.create_run(self.experiment_id, run_name=f"study {label}", tags=tags)
        return run.info.run_id

    def end_sweep(self, sweep: SweepInfo, status: str = "FINISHED") -> None:
        """Close the parent run of a sweep."""
        if sweep.parent_run_id:
            with timed():
                self.client.set_terminated(sweep.parent_run_id, status=status)

    def reap(
        self, all_experiments: bool = False, older_than_hours: float | None = None
    ) -> list[str]:
        """Mark stale RUNNING runs of this experiment (or of all) KILLED; returns their ids
        (see :mod:`lossbench.tracking.reaping`)."""
        ids = reaping.experiment_ids(self.client, None if all_experiments else self.experiment)
        return reaping.reap(self.client, ids, older_than_hours)

    def completed_runs(self) -> dict[str, records.RunRecord]:
        """Config hash -> the latest completed run of this experiment with that config."""
        return records.completed_runs(self.client, self.experiment)

    def latest_runs(self) -> dict[str, records.RunRecord]:
        """Config hash -> the latest run of that config, preferring completed ones."""
        return records.latest_runs(self.client, self.experiment)

    def adopt(self, run_ids: Sequence[str], sweep: SweepInfo) -> None:
        """Mark completed runs as part of ``sweep`` (which used them instead of training)."""
        with timed():
            for run_id in run_ids:
                self.client.set_tag(run_id, records.in_sweep_tag(sweep.sweep_id), "true")

    # -- runs ------------------------------------------------------------------------------

    def run_tags(
        self,
        spec: RunSpec,
        facts: Mapping[str, Any] | None,
        sweep: SweepInfo | None,
        members: int,
    ) -> dict[str, str]:
        """The tags of a run: sweep, Hydra choices, seed, config hash, environment."""
        tags = {
            "lossbench.role": "run",
            "lossbench.seed": str(spec.seed),
            "lossbench.config_hash": config_hash(spec.cfg),
            "lossbench.members": str(members),
            "lossbench.torch_threads": str(spec.cfg.get("threads", 1)),
            "lossbench.overrides": " ".join(spec.overrides)[:5000],
            "mlflow.source.name": "lossbench-train",
            **{f"lossbench.choice.{g}": c for g, c in spec.choices.items()},
            **environment_tags(),
            **owner_tags(),
        }
        if sweep is not None:
            tags["lossbench.sweep_id"] = sweep.sweep_id
            tags[records.in_sweep_tag(sweep.sweep_id)] = "true"
            if sweep.parent_run_id:
                tags["mlflow.parentRunId"] = sweep.parent_run_id
            study = sweep.study_of(spec.overrides)
            if study is not None:
                tags["lossbench.study"], tags["mlflow.parentRunId"] = study
        if facts is not None:
            tags["lossbench.task"] = str(facts["task"])
        return tags

    def start_runs(
        self,
        specs: Sequence[RunSpec],
        facts: Mapping[str, Any] | None = None,
        sweep: SweepInfo | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Create RUNNING runs (one stack's) with their tags, params and config artifacts (so a
        running run shows its config in the UI and answers ``params.x = ...`` searches).

        ``facts`` describe their data (``SplitData.summary()``, and under ``dataset`` what
        :func:`lossbench.tracking.datasets.dataset_facts` says: each run then gets one
        MLflow dataset input per split); ``tags`` are added to (or replace) the usual ones."""
        experiment_id = self.experiment_id
        names = [run_name(spec) for spec in specs]
        extra = dict(tags or {})
        all_tags = [self.run_tags(spec, facts, sweep, len(specs)) for spec in specs]
        stack_id = uuid.uuid4().hex  # to re-train a stacked run exactly, repro trains its stack
        for index, run_tags in enumerate(all_tags):
            run_tags.update(
                {"lossbench.stack_id": stack_id, "lossbench.stack_index": str(index), **extra}
            )
        params = [run_params(spec, facts) for spec in specs]
        artifacts = [
            {
                "config.yaml": yaml_text(spec.cfg),
                "overrides.yaml": yaml_text(list(spec.overrides)),
            }
            for spec in specs
        ]
        described = (facts or {}).get("dataset")
        inputs = dataset_inputs(described) if described else []
        with timed():
            return self.path.create(experiment_id, names, all_tags, params, inputs, artifacts)

    def start_run(
        self,
        spec: RunSpec,
        facts: Mapping[str, Any] | None = None,
        sweep: SweepInfo | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Create one RUNNING run; see :meth:`start_runs`."""
        return self.start_runs([spec], facts, sweep, tags)[0]

    def log_epochs(
        self,
        run_id: str,
        series: Mapping[str, Sequence[float]],
        start: int = 0,
        steps: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        """Write one training run's per-epoch values from epoch ``start`` on (see
        :meth:`log_live`)."""
        self.log_live([run_id], [series], [start], [steps or {}])

    def log_live(
        self,
        run_ids: Sequence[str],
        series: Sequence[Mapping[str, Sequence[float]]],
        written: Sequence[int],
        steps: Sequence[Mapping[str, Sequence[int]]] | None = None,
    ) -> None:
        """Write the per-epoch values that arrived while runs (one stack's) train: run i's
        from epoch ``written[i]`` on (``steps[i]``: each value's epoch, where not its position);
        in one transaction on the SQL path."""
        every = self.log_every_n_epochs
        steps = steps or [{} for _ in series]
        rows = [
            metric_rows(s, {}, start, every, complete=False, steps=st)
            for s, start, st in zip(series, written, steps, strict=True)
        ]
        with timed():
            self.path.log_metrics(run_ids, rows)

    def finish_runs(
        self,
        run_ids: Sequence[str],
        results: Sequence[RunResult],
        written: Sequence[int] | None = None,
    ) -> None:
        """Write the params, metrics and result tags of runs (one stack's), then close them:
        every epoch's metrics, or from epoch ``written[i]`` on for those :meth:`log_live`
        wrote earlier. A run that did not finish gets its error as ``traceback.txt`` and its
        last line as a tag."""
        starts = written or [0] * len(results)
        metrics = [
            metric_rows(r.series, r.final, start, self.log_every_n_epochs, steps=r.steps)
            for r, start in zip(results, starts, strict=True)
        ]
        with timed():
            for run_id, result in zip(run_ids, results, strict=True):
                if result.error:
                    self._log_traceback(run_id, result.error)
                self._log_model(run_id, result)
            self.path.finish(
                run_ids,
                metrics,
                [result_tags(r, run_id) for run_id, r in zip(run_ids, results, strict=True)],
                [r.status for r in results],
                replace_latest=any(starts),
            )
        for result in results:  # written: not kept with the results the sweep holds on to
            result.model_files = None

    def finish_run(self, run_id: str, result: RunResult, written_epochs: int = 0) -> None:
        """Write what is left of a run's metrics (``written_epochs`` epochs were written by
        :meth:`log_epochs`) and its final ones, then close it (see :meth:`finish_runs`)."""
        self.finish_runs([run_id], [result], [written_epochs])

    def _log_model(self, run_id: str, result: RunResult) -> None:
        """A model the worker saved (``tracking.log_model``) into the run's ``model``
        artifacts: files written back to a directory, one ``log_artifacts`` call."""
        if not result.model_files:
            return
        with tempfile.TemporaryDirectory(prefix="lossbench-model-") as tmp:
            for name, content in result.model_files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
            self.client.log_artifacts(run_id, tmp, MODEL_ARTIFACT_PATH)

    def _log_traceback(self, run_id: str, error: str) -> None:
        write_artifacts(self.client, run_id, {"traceback.txt": error})
