"""Writing runs: :class:`Tracker` records runs of one MLflow experiment through MLflow's client
API, in few calls per run.

- A sweep is a parent run (tag ``lossbench.role=sweep``) with one child run per job; every run
  carries the sweep id tag ``lossbench.sweep_id``.
- A run is created RUNNING with its tags, config artifacts and dataset inputs when its
  training starts (``create_run``, ``log_inputs``: see :mod:`lossbench.tracking.datasets`); when it ends, its params, metrics and result tags go in one ``log_batch``
  (split only where MLflow's per-call limits demand), and ``set_terminated`` closes it. While
  runs train, the metrics that have arrived are written every ``tracking.flush_every_s``
  seconds (:meth:`Tracker.log_live`; see :mod:`lossbench.live`), and the rest when they end.
- ``tracking.sql_batches=true`` writes a whole stack's runs to a SQL store in two transactions
  instead (:mod:`lossbench.tracking.sql_batches`), where the installed MLflow is one that path was
  verified against.
"""

from __future__ import annotations

import functools
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lossbench.config import MEMBER_SAFE, RunSpec
from lossbench.identity import NON_RESULT_KEYS, config_hash
from lossbench.interrupts import Interrupted
from lossbench.results import RunResult
from lossbench.tracking import reaping, records, sql_batches
from lossbench.tracking.artifacts import write_artifacts
from lossbench.tracking.datasets import dataset_inputs
from lossbench.tracking.provenance import environment_tags, owner_tags
from lossbench.tracking.store import (
    check_reachable,
    ensure_experiment,
    open_client,
    timed,
    tracking_uri,
)
from lossbench.tracking.sweeps import SweepInfo
from lossbench.yaml_text import yaml_text

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow's limits for one log_batch call
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_OR_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000  # longer param values are truncated (MLflow refuses them)

MODEL_ARTIFACT_PATH = "model"  # tracking.log_model: runs:/<run id>/model
LOGGED_MODELS_TAG = "mlflow.log-model.history"  # mlflow.utils.mlflow_tags.MLFLOW_LOGGED_MODELS

MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``a.b.c -> value`` strings (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        if key == "_partial_":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(value)
        else:
            flat[name] = str(value)
    return flat


def run_params(spec: RunSpec, facts: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A run's params: its resolved config, flattened (no store paths), plus the facts of its
    data (``SplitData.summary()``: task, sizes) as ``data.*``."""
    kept = {k: v for k, v in spec.cfg.items() if k not in NON_RESULT_KEYS}
    params = flatten(kept)
    if facts is not None:  # the dataset's description goes in its inputs, not in params
        params.update(
            {f"data.{k}": str(v) for k, v in facts.items() if k not in ("dataset", MEMBER_SAFE)}
        )
    return {k: v[:MAX_PARAM_LENGTH] for k, v in params.items()}


def run_name(spec: RunSpec) -> str:
    """A readable, deterministic name: ``<dataset>-<loss>-<optimizer>-<scheduler>-s<seed>``,
    e.g. ``moons-focal-adamw-cosine-s3``. Other swept values show as params, not in the name."""
    choices = spec.choices
    dataset = choices.get("dataset") or str(spec.cfg["dataset"].get("name", "data"))
    parts = [dataset, *(choices.get(g, g) for g in ("loss", "optimizer", "scheduler"))]
    return "-".join([*parts, f"s{spec.seed}"])


def result_tags(result: RunResult, run_id: str | None = None) -> dict[str, str]:
    """Tags a result adds: its own (divergence, where it trained), its error's last line, and
    for a logged model (``tracking.log_model``) MLflow's ``mlflow.log-model.history`` (the
    UI's Models column)."""
    tags = dict(result.tags)
    if result.error:
        tags["lossbench.error"] = result.error.strip().splitlines()[-1][:500]
    if result.model_files and run_id is not None:
        tags[LOGGED_MODELS_TAG] = json.dumps([model_history(result.model_files, run_id)])
    return tags


def model_history(files: Mapping[str, bytes], run_id: str) -> dict[str, Any]:
    """What MLflow's ``log_model`` records of a model in ``mlflow.log-model.history``
    (``Model.get_tags_dict()``), read from the saved model's ``MLmodel`` file."""
    import yaml

    mlmodel = yaml.safe_load(files["MLmodel"])
    flavors = {
        name: {k: v for k, v in conf.items() if k != "config"} if isinstance(conf, dict) else conf
        for name, conf in (mlmodel.get("flavors") or {}).items()
    }
    kept = ("utc_time_created", "model_uuid")
    return {
        "run_id": run_id,
        "artifact_path": MODEL_ARTIFACT_PATH,
        **{k: mlmodel[k] for k in kept if k in mlmodel},
        "flavors": flavors,
    }


def metric_rows(
    series: Mapping[str, Sequence[float]],
    final: Mapping[str, float],
    start: int = 0,
    every: int = 1,
    complete: bool = True,
    steps: Mapping[str, Sequence[int]] | None = None,
) -> list[MetricRow]:
    """Per-epoch values of epochs ``start`` on (step = epoch: a value's position in its series,
    or its entry in ``steps`` for a metric not recorded every epoch), then the final values that
    have no series (test/*, time/*) at the last epoch's step.

    With ``every`` > 1 only epochs 0, every, 2*every, ... are written, and the last epoch of a
    ``complete`` series (a run's whole history, not a live part of it). A live part never
    writes an epoch off that grid, so a complete series writes its last epoch when it is off
    the grid, even below ``start``: each epoch is written once, by step, whatever the live
    parts covered."""
    now = int(time.time() * 1000)
    steps = steps or {}
    points = {
        name: list(zip(steps.get(name, range(len(values))), values, strict=True))
        for name, values in series.items()
    }
    last = max((p[-1][0] for p in points.values() if p), default=0)
    rows = [
        (name, float(value), now, step)
        for name, pairs in points.items()
        for step, value in pairs
        if step >= start and step % every == 0
    ]
    if complete:
        rows += [
            (name, float(pairs[-1][1]), now, pairs[-1][0])
            for name, pairs in points.items()
            if pairs and pairs[-1][0] % every != 0
        ]
    rows += [(k, float(v), now, last) for k, v in final.items() if k not in series]
    return rows


def batches(
    metrics: Sequence[Any], params: Sequence[Any], tags: Sequence[Any]
) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    """Split one run's values into as few ``log_batch`` calls as MLflow's limits allow: one,
    unless the run has more than 1,000 values."""
    metrics, params, tags = list(metrics), list(params), list(tags)
    while metrics or params or tags:
        some_params, params = (
            params[:MAX_PARAMS_OR_TAGS_PER_BATCH],
            params[MAX_PARAMS_OR_TAGS_PER_BATCH:],
        )
        some_tags, tags = tags[:MAX_PARAMS_OR_TAGS_PER_BATCH], tags[MAX_PARAMS_OR_TAGS_PER_BATCH:]
        room = min(
            MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(some_params) - len(some_tags)
        )
        some_metrics, metrics = metrics[:room], metrics[room:]
        yield some_metrics, some_params, some_tags


def once_more_if_duplicate(write: Callable[[], T]) -> T:
    """Run a write that adds datasets, once more if another writer added one of them first.

    MLflow's store looks an experiment's dataset up, then inserts it if missing (as does
    :func:`sql_batches.create_runs`): two sweeps writing the same dataset into one experiment
    at the same moment can both miss it, and the second insert breaks the unique constraint
    (experiment, name, digest). Its transaction is rolled back; the second try finds it."""
    try:
        return write()
    except Exception as err:
        if not integrity_error(err):
            raise
        log.info("A dataset was added by another writer meanwhile; writing again (%s)", err)
        return write()


def integrity_error(err: BaseException) -> bool:
    """Whether the database refused a write for a broken constraint: an SQLAlchemy
    ``IntegrityError`` anywhere in the exception's chain (MLflow's store wraps it in an
    ``MlflowException``), whatever the database's words for it (SQLite's "UNIQUE constraint
    failed", MySQL's "Duplicate entry")."""
    from sqlalchemy.exc import IntegrityError

    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, IntegrityError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def flush_interval(value: Any) -> float | None:
    """``tracking.flush_every_s`` as seconds, or ``None`` (null: no live writes)."""
    return None if value is None else float(value)


class Tracker:
    """Writes runs to one MLflow experiment. Construction does no I/O; the store and the
    experiment are created on first use."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        flush_every_s: float | None = 5.0,
        sql_batches: bool = False,
        log_every_n_epochs: int = 1,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        # live curves: metrics of training runs are written at most this often (None: at the end)
        self.flush_every_s = flush_every_s
        self.log_every_n_epochs = log_every_n_epochs  # per-epoch values: every n-th and the last
        self.sql_batches = sql_batches  # ask for batched SQL writes (see module docstring)

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
            bool(tracking.get("sql_batches", False)),
            int(tracking.get("log_every_n_epochs") or 1),
        )

    @functools.cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, after making sure the store exists."""
        return open_client(self.uri)

    @functools.cached_property
    def _sql_store(self) -> Any:
        """The SQL store to write batches to, if asked for and possible; else ``None``."""
        return sql_batches.batch_store(self.client) if self.sql_batches else None

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
        created: list[tuple[str, str]] = []
        with timed():
            try:
                store = self._sql_store
                if store is not None:
                    created = once_more_if_duplicate(
                        lambda: sql_batches.create_runs(
                            store, experiment_id, names, all_tags, params, inputs
                        )
                    )
                    for (_, artifact_uri), files in zip(created, artifacts, strict=True):
                        sql_batches.write_artifacts(artifact_uri, files, self.uri)
                else:
                    for name, run_tags, run_params_, files in zip(
                        names, all_tags, params, artifacts, strict=True
                    ):
                        run = self.client.create_run(experiment_id, run_name=name, tags=run_tags)
                        created.append((run.info.run_id, run.info.artifact_uri))
                        # params at once: a RUNNING run shows its config and is searchable
                        self._log_batch(run.info.run_id, [], run_params_, {})
                        if inputs:
                            run_id = run.info.run_id
                            once_more_if_duplicate(
                                lambda: self.client.log_inputs(run_id, datasets=inputs)  # noqa: B023
                            )
                        write_artifacts(self.client, run.info.run_id, files)
            except BaseException as err:  # the caller never learns these ids: close them here
                status = "KILLED" if isinstance(err, Interrupted) else "FAILED"
                for run_id, _ in created:
                    self.client.set_terminated(run_id, status=status)
                raise
        return [run_id for run_id, _ in created]

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
            store = self._sql_store
            if store is not None:
                sql_batches.log_metrics(store, run_ids, rows)
            else:
                for run_id, run_rows in zip(run_ids, rows, strict=True):
                    if run_rows:
                        self._log_batch(run_id, run_rows, {}, {})

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
            store = self._sql_store
            if store is not None:
                sql_batches.finish_runs(
                    store,
                    run_ids,
                    metrics,
                    [result_tags(r, run_id) for run_id, r in zip(run_ids, results, strict=True)],
                    [r.status for r in results],
                    replace_latest=any(starts),
                )
            else:
                for run_id, run_metrics, result in zip(run_ids, metrics, results, strict=True):
                    self._finish(run_id, run_metrics, result)
        for result in results:  # written: not kept with the results the sweep holds on to
            result.model_files = None

    def finish_run(self, run_id: str, result: RunResult, written_epochs: int = 0) -> None:
        """Write what is left of a run's metrics (``written_epochs`` epochs were written by
        :meth:`log_epochs`) and its final ones, then close it (see :meth:`finish_runs`)."""
        self.finish_runs([run_id], [result], [written_epochs])

    def _finish(self, run_id: str, rows: list[MetricRow], result: RunResult) -> None:
        """One log_batch of what is left to write, then set_terminated."""
        self._log_batch(run_id, rows, {}, result_tags(result, run_id))
        self.client.set_terminated(run_id, status=result.status)

    def _log_batch(
        self,
        run_id: str,
        rows: Sequence[MetricRow],
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        for some_metrics, some_params, some_tags in batches(
            [Metric(*row) for row in rows],
            [Param(k, v) for k, v in params.items()],
            [RunTag(k, v) for k, v in tags.items()],
        ):
            self.client.log_batch(run_id, some_metrics, some_params, some_tags)

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
