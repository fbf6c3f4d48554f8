"""All MLflow writing lives here.

- The store: a local SQLite file ``<root>/mlflow.db`` with artifacts under ``<root>/artifacts``
  unless ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` says otherwise. It is created once, under a
  file lock, before any job starts: processes creating a fresh SQLite store at the same moment
  can corrupt it.
- A sweep is a parent run (tag ``lossbench.role=sweep``) with one child run per job; every run
  carries the sweep id tag ``lossbench.sweep_id``.
- Runs are written in few batched calls: params and tags at the start, metrics every
  ``flush_every_n_epochs`` epochs for a run training in this process, or all at once at the end.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import json
import logging
import os
import platform
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lossbench.config import NON_RESULT_KEYS, RunSpec, config_hash
from lossbench.results import RunResult

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# A progress bar per small artifact download is noise in a command's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SWEEP_FILE = "lossbench-sweep.json"  # in the Hydra sweep dir: how jobs find their parent run
VERSIONED_PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "mlflow", "scikit-learn", "numpy")
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000


def tracking_uri(tracking: Mapping[str, Any]) -> str:
    """The store to write to: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the local
    SQLite store under ``tracking.root`` (made absolute here, once)."""
    if tracking.get("uri"):
        return str(tracking["uri"])
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(str(tracking.get("root") or "mlruns")).expanduser().resolve()
    return f"sqlite:///{root / 'mlflow.db'}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else ``None``."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


@contextmanager
def _store_lock(uri: str) -> Iterable[None]:
    """Serialize store creation across processes (SQLite only; servers handle their own)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@functools.cache
def git_commit() -> tuple[str, bool]:
    """(commit of the lossbench checkout, whether it has uncommitted changes); 'unknown' outside git."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(dirty)


@functools.cache
def environment_tags() -> dict[str, str]:
    """Tags describing where a run trained: package versions, platform, git commit."""
    from importlib.metadata import PackageNotFoundError, version

    tags = {
        "lossbench.platform": platform.platform(),
        "lossbench.python": platform.python_version(),
    }
    for package in VERSIONED_PACKAGES:
        try:
            tags[f"lossbench.version.{package}"] = version(package)
        except PackageNotFoundError:
            tags[f"lossbench.version.{package}"] = "not installed"
    commit, dirty = git_commit()
    tags["mlflow.source.git.commit"] = commit
    tags["lossbench.git_dirty"] = str(dirty).lower()
    return tags


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
    if facts is not None:
        params.update({f"data.{k}": str(v) for k, v in facts.items()})
    return {k: v[:MAX_PARAM_LENGTH] for k, v in params.items()}


def run_name(spec: RunSpec) -> str:
    """A readable, deterministic name: ``<dataset>-<loss>-<optimizer>-<scheduler>-s<seed>``,
    e.g. ``moons-focal-adamw-cosine-s3``. Other swept values show as params, not in the name."""
    choices = spec.choices
    dataset = choices.get("dataset") or str(spec.cfg["dataset"].get("name", "data"))
    parts = [dataset, *(choices.get(g, g) for g in ("loss", "optimizer", "scheduler"))]
    return "-".join([*parts, f"s{spec.seed}"])


_mlflow_seconds = 0.0


@contextmanager
def _timed() -> Iterable[None]:
    global _mlflow_seconds
    start = time.perf_counter()
    try:
        yield
    finally:
        _mlflow_seconds += time.perf_counter() - start


def mlflow_seconds() -> float:
    """Time this process has spent in MLflow calls (store creation and writes)."""
    return _mlflow_seconds


def in_sweep_tag(sweep_id: str) -> str:
    """The tag marking a run as part of a sweep: the sweep that trained it, and any later
    sweep that found it already completed and used it instead of training it again."""
    return f"lossbench.in_sweep.{sweep_id}"


@dataclass(frozen=True)
class SweepInfo:
    """How the jobs of one sweep find their parent run."""

    sweep_id: str
    parent_run_id: str | None = None
    # an HPO sweep's studies: (the overrides naming the study, its label, its run id)
    studies: tuple[tuple[tuple[str, ...], str, str], ...] = ()

    def study_of(self, overrides: Sequence[str]) -> tuple[str, str] | None:
        """The (label, run id) of the study a job with ``overrides`` is a trial of, if any."""
        given = set(overrides)
        for study_overrides, label, run_id in self.studies:
            if given.issuperset(study_overrides):
                return label, run_id
        return None


def new_sweep_id() -> str:
    """A sortable, unique sweep id: UTC time plus a random suffix."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def owner_tags() -> dict[str, str]:
    """Which process writes a run: host, pid and the pid's start time (pids are reused)."""
    import psutil

    me = psutil.Process()
    return {
        "lossbench.host": socket.gethostname(),
        "lossbench.pid": str(me.pid),
        "lossbench.pid_start": f"{me.create_time():.3f}",
    }


def _owner_alive(tags: Mapping[str, str]) -> bool:
    import psutil

    try:
        process = psutil.Process(int(tags["lossbench.pid"]))
        return f"{process.create_time():.3f}" == tags.get("lossbench.pid_start")
    except (psutil.Error, KeyError, ValueError):
        return False


def stale_runs(
    tracker: Tracker, all_experiments: bool = False, older_than_hours: float | None = None
) -> list[Any]:
    """RUNNING runs whose writer is gone (this host), or older than ``older_than_hours``."""
    client = tracker.client
    if all_experiments:
        ids = [e.experiment_id for e in client.search_experiments()]
    else:
        found = client.get_experiment_by_name(tracker.experiment)
        ids = [found.experiment_id] if found else []
    if not ids:
        return []
    running = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=50_000)
    host, now = socket.gethostname(), time.time() * 1000
    stale = []
    for run in running:
        tags = run.data.tags
        if "lossbench.pid" not in tags:
            continue  # not ours: nothing to go by
        orphan = tags.get("lossbench.host") == host and not _owner_alive(tags)
        old = older_than_hours is not None and now - run.info.start_time > older_than_hours * 3.6e6
        if orphan or old:
            stale.append(run)
    return stale


class StoreUnreachable(CompactHydraException, RuntimeError):
    """The tracking store cannot be reached (Hydra prints it without a traceback)."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`StoreUnreachable` quickly if the store behind ``uri`` cannot be reached:
    an HTTP server that does not answer, a database that refuses connections, a SQLite file in
    a directory that cannot be created or written."""
    import urllib.error
    import urllib.request

    db = sqlite_path(uri)
    scheme = uri.split(":", 1)[0].lower()
    try:
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
                raise StoreUnreachable(f"tracking store {uri}: {db.parent} is not writable")
        elif scheme in ("http", "https"):
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        elif scheme.startswith(("postgresql", "mysql", "mssql")):
            from sqlalchemy import create_engine

            arg = {"connect_timeout": int(timeout)} if not scheme.startswith("mssql") else {}
            engine = create_engine(uri, connect_args=arg)
            with engine.connect():
                pass
            engine.dispose()
    except StoreUnreachable:
        raise
    except (OSError, urllib.error.URLError, Exception) as err:  # noqa: BLE001 (driver errors vary)
        raise StoreUnreachable(
            f"tracking store {uri} is unreachable ({type(err).__name__}: {err}). Start the server, "
            "fix tracking.uri / MLFLOW_TRACKING_URI, or train without recording: tracking=none"
        ) from err


class Tracker:
    """Writes runs to one MLflow experiment. Construction does no I/O; the store and the
    experiment are created on first use."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        flush_every_n_epochs: int = 10,
        sql_batches: bool = True,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.flush_every_n_epochs = flush_every_n_epochs
        self.sql_batches = sql_batches  # False: MLflow's client API only, even for SQL stores
        self._artifact_uris: dict[str, str] = {}

    @classmethod
    def from_config(cls, tracking: Mapping[str, Any], uri: str | None = None) -> Tracker | None:
        """The tracker a ``tracking`` config asks for (writing to ``uri`` if given), or
        ``None`` for ``tracking=none``."""
        if not tracking.get("enabled", True):
            return None
        return cls(
            uri or tracking_uri(tracking),
            str(tracking.get("experiment") or "lossbench"),
            int(tracking.get("flush_every_n_epochs") or 0),
        )

    @functools.cached_property
    def client(self) -> MlflowClient:
        """The MLflow client, after making sure the store exists."""
        from mlflow import MlflowClient

        with _timed(), _store_lock(self.uri):
            client = MlflowClient(tracking_uri=self.uri)
            client.search_experiments(max_results=1)  # creates/upgrades the schema, once
        return client

    @functools.cached_property
    def _sql_store(self) -> Any:
        """MLflow's SQLAlchemy store behind the client, if it is one and batches are on."""
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = getattr(getattr(self.client, "_tracking_client", None), "store", None)
        return store if self.sql_batches and isinstance(store, SqlAlchemyStore) else None

    @functools.cached_property
    def experiment_id(self) -> str:
        """The experiment's id, creating the experiment if needed."""
        client = self.client
        with _timed(), _store_lock(self.uri):  # two sweeps may create it at once
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            db = sqlite_path(self.uri)
            location = (db.parent / "artifacts" / self.experiment).as_uri() if db else None
            # the UI then opens on the experiment's runs (model training), not on GenAI traces
            kind = {"mlflow.experimentKind": "custom_model_development"}
            return client.create_experiment(self.experiment, artifact_location=location, tags=kind)

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
        with _timed():
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
        with _timed():
            run = self.client.create_run(self.experiment_id, run_name=f"study {label}", tags=tags)
        return run.info.run_id

    def end_sweep(self, sweep: SweepInfo, status: str = "FINISHED") -> None:
        """Close the parent run of a sweep."""
        if sweep.parent_run_id:
            with _timed():
                self.client.set_terminated(sweep.parent_run_id, status=status)

    def reap(
        self, all_experiments: bool = False, older_than_hours: float | None = None
    ) -> list[str]:
        """Mark stale runs KILLED: RUNNING runs of this host whose process is gone (killed by
        SIGKILL, or the machine went down), and with ``older_than_hours``, RUNNING runs of any
        host started longer ago. Returns their ids."""
        stale = stale_runs(self, all_experiments, older_than_hours)
        with _timed():
            for run in stale:
                self.client.set_tag(run.info.run_id, "lossbench.reaped", "true")
                self.client.set_terminated(run.info.run_id, status="KILLED")
        if stale:
            log.warning("Marked %d stale RUNNING run(s) KILLED in %s", len(stale), self.uri)
        return [run.info.run_id for run in stale]

    def completed_runs(self) -> dict[str, RunRecord]:
        """Config hash -> the latest completed run of this experiment with that config:
        FINISHED, or diverged (a result too: training it again would diverge again)."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return {}
        done: dict[str, RunRecord] = {}
        queries = (
            "tags.`lossbench.role` = 'run' and attributes.status = 'FINISHED'",
            "tags.`lossbench.role` = 'run' and tags.`lossbench.status` = 'diverged'",
        )
        with _timed():
            for query in queries:
                for run in _search_all(self.client, [found.experiment_id], query):
                    record = RunRecord.of(run)
                    key = record.tags.get("lossbench.config_hash", "")
                    if key not in done or run.info.start_time > done[key].start_time:
                        done[key] = record
        return done

    def latest_runs(self) -> dict[str, RunRecord]:
        """Config hash -> this experiment's run of that config: the latest completed one if
        there is one (see :meth:`completed_runs`), else the latest of any status."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return {}
        latest: dict[str, RunRecord] = {}
        with _timed():
            for run in _search_all(
                self.client, [found.experiment_id], "tags.`lossbench.role` = 'run'"
            ):
                record = RunRecord.of(run)
                key = record.tags.get("lossbench.config_hash", "")
                if key not in latest or record.start_time > latest[key].start_time:
                    latest[key] = record
        return {**latest, **self.completed_runs()}

    def adopt(self, run_ids: Sequence[str], sweep: SweepInfo) -> None:
        """Mark completed runs as part of ``sweep`` (which used them instead of training)."""
        with _timed():
            for run_id in run_ids:
                self.client.set_tag(run_id, in_sweep_tag(sweep.sweep_id), "true")

    def check_reachable(self, timeout: float = 5.0) -> None:
        """Fail fast, with a message, if the store cannot be reached (instead of MLflow's
        minutes of retries)."""
        check_reachable(self.uri, timeout)

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
            tags[in_sweep_tag(sweep.sweep_id)] = "true"
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
        """Create RUNNING runs (one stack's) with their params, tags and config artifacts.

        ``facts`` describe their data (``SplitData.summary()``); ``tags`` are added to (or
        replace) the usual ones."""
        experiment_id = self.experiment_id
        names = [run_name(spec) for spec in specs]
        extra = dict(tags or {})
        tags = [self.run_tags(spec, facts, sweep, len(specs)) for spec in specs]
        stack_id = uuid.uuid4().hex  # to re-train a stacked run exactly, repro trains its stack
        for index, run_tags in enumerate(tags):
            run_tags.update(
                {"lossbench.stack_id": stack_id, "lossbench.stack_index": str(index), **extra}
            )
        params = [run_params(spec, facts) for spec in specs]
        artifacts = [
            {
                "config.yaml": yaml.safe_dump(spec.cfg, sort_keys=False),
                "overrides.yaml": yaml.safe_dump(list(spec.overrides)),
            }
            for spec in specs
        ]
        with _timed():
            if self._sql_store is not None:
                created = _sql_create_runs(self._sql_store, experiment_id, names, tags, params)
            else:
                created = [
                    self._api_create_run(experiment_id, *run)
                    for run in zip(names, tags, params, strict=True)
                ]
            for (run_id, artifact_uri), files in zip(created, artifacts, strict=True):
                self._artifact_uris[run_id] = artifact_uri
                _write_artifacts(artifact_uri, files, self.uri)
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
        self, run_id: str, series: Mapping[str, Sequence[float]], start: int = 0
    ) -> None:
        """Write per-epoch values from epoch ``start`` on, batched (step = epoch)."""
        with _timed():
            self._api_log_metrics(run_id, _metric_rows(series, {}, start))

    def finish_runs(self, run_ids: Sequence[str], results: Sequence[RunResult]) -> None:
        """Write the metrics of runs that have none yet (one stack's), then close them. A run
        that did not finish gets its error as ``traceback.txt`` and its last line as a tag."""
        metrics = [_metric_rows(r.series, r.final) for r in results]
        with _timed():
            for run_id, result in zip(run_ids, results, strict=True):
                if result.error:
                    self._log_traceback(run_id, result.error)
            if self._sql_store is not None:
                _sql_finish_runs(self._sql_store, run_ids, metrics, results)
                return
            for run_id, run_metrics, result in zip(run_ids, metrics, results, strict=True):
                self._api_log_metrics(run_id, run_metrics)
                self._api_close(run_id, result)

    def finish_run(self, run_id: str, result: RunResult, written_epochs: int = 0) -> None:
        """Write what is left of a run's metrics (``written_epochs`` epochs were written by
        :meth:`log_epochs`) and its final ones, then close it."""
        if written_epochs == 0:
            self.finish_runs([run_id], [result])
            return
        with _timed():
            if result.error:
                self._log_traceback(run_id, result.error)
            self._api_log_metrics(run_id, _metric_rows(result.series, result.final, written_epochs))
            self._api_close(run_id, result)

    def _log_traceback(self, run_id: str, error: str) -> None:
        uri = self._artifact_uris.get(run_id) or self.client.get_run(run_id).info.artifact_uri
        _write_artifacts(uri, {"traceback.txt": error}, self.uri)

    # MLflow's client API: for stores other than SQL ones, and for runs that already hold data.

    def _api_create_run(
        self, experiment_id: str, name: str, tags: Mapping[str, str], params: Mapping[str, str]
    ) -> tuple[str, str]:
        from mlflow.entities import Param

        run = self.client.create_run(experiment_id, run_name=name, tags=dict(tags))
        batch = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(batch), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=batch[i : i + MAX_PARAMS_PER_BATCH])
        return run.info.run_id, run.info.artifact_uri

    def _api_log_metrics(self, run_id: str, rows: list[MetricRow]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(*row) for row in rows]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS_PER_BATCH])

    def _api_close(self, run_id: str, result: RunResult) -> None:
        for key, value in _result_tags(result).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status=result.status)


def _result_tags(result: RunResult) -> dict[str, str]:
    """Tags a result adds: its own (e.g. divergence) and the last line of its error."""
    tags = dict(result.tags)
    if result.error:
        tags["lossbench.error"] = result.error.strip().splitlines()[-1][:500]
    return tags


def _write_artifacts(artifact_uri: str, files: Mapping[str, str], tracking_uri: str) -> None:
    """Write small text files into a run's artifact location (known: no need to fetch the
    run, as log_artifacts would)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(tmp)


MetricRow = tuple[str, float, int, int]  # key, value, timestamp (ms), step


def _metric_rows(
    series: Mapping[str, Sequence[float]], final: Mapping[str, float], start: int = 0
) -> list[MetricRow]:
    """Per-epoch values from epoch ``start`` (step = epoch), then the final values that have
    no series (test/*, time/*) at the last epoch's step."""
    now = int(time.time() * 1000)
    rows = [
        (name, float(value), now, step)
        for name, values in series.items()
        for step, value in enumerate(values[start:], start=start)
    ]
    last = max((len(v) for v in series.values()), default=1) - 1
    rows += [(k, float(v), now, last) for k, v in final.items() if k not in series]
    return rows


# Writing a stack's runs to an SQL store in two transactions.
#
# MLflow's client creates, fills and closes runs one call at a time, each building one ORM
# object per value and re-reading the run: ~30 ms per run of a sweep here, the largest cost of
# recording it. MLflow has no batch API for runs, so for SQL stores a stack's runs are created
# (with tags and params) in one transaction and finished (metrics, status) in another, through
# MLflow's own table models and session, with the same values its create_run, log_batch and
# set_terminated would write: same validation, same NaN/inf handling, same latest_metrics rule.
# tests/test_tracking.py checks that both paths read back the same through MLflow's API.


def _sql_create_runs(
    store: Any,
    experiment_id: str,
    names: Sequence[str],
    tags: Sequence[Mapping[str, str]],
    params: Sequence[Mapping[str, str]],
) -> list[tuple[str, str]]:
    """Create RUNNING runs with their tags and params; returns (run id, artifact URI) each."""
    from mlflow.entities import LifecycleStage, RunStatus, SourceType
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.uri import append_to_uri_path
    from mlflow.utils.validation import _validate_param, _validate_tag
    from sqlalchemy import insert

    experiment = store.get_experiment(experiment_id)
    if experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        raise MlflowException(f"experiment {experiment.name!r} is deleted")
    now = int(time.time() * 1000)
    created, run_rows, tag_rows, param_rows = [], [], [], []
    for name, run_tags, run_params_ in zip(names, tags, params, strict=True):
        run_id = uuid.uuid4().hex
        artifact_uri = append_to_uri_path(experiment.artifact_location, run_id, "artifacts")
        created.append((run_id, artifact_uri))
        run_rows.append(
            {
                "run_uuid": run_id,
                "name": name,
                "artifact_uri": artifact_uri,
                "experiment_id": int(experiment_id),
                "source_type": SourceType.to_string(SourceType.UNKNOWN),
                "source_name": "",
                "entry_point_name": "",
                "user_id": run_tags.get(MLFLOW_USER, "unknown"),
                "status": RunStatus.to_string(RunStatus.RUNNING),
                "start_time": now,
                "end_time": None,
                "deleted_time": None,
                "source_version": "",
                "lifecycle_stage": LifecycleStage.ACTIVE,
            }
        )
        for key, value in {**run_tags, MLFLOW_RUN_NAME: name}.items():
            _validate_tag(key, value)
            tag_rows.append({"run_uuid": run_id, "key": key, "value": value})
        for key, value in run_params_.items():
            _validate_param(key, value)
            param_rows.append({"run_uuid": run_id, "key": key, "value": value})
    with store.ManagedSessionMaker(read_only=False) as session:
        session.execute(insert(SqlRun.__table__), run_rows)
        for table, rows in ((SqlTag, tag_rows), (SqlParam, param_rows)):
            if rows:
                session.execute(insert(table.__table__), rows)
    return created


def _sql_finish_runs(
    store: Any,
    run_ids: Sequence[str],
    metrics: Sequence[list[MetricRow]],
    results: Sequence[RunResult],
) -> None:
    """Write the first metrics of runs (and their latest values), error tags, and statuses."""
    from mlflow.entities import RunStatus
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
    from mlflow.utils.validation import _validate_metric, _validate_tag
    from sqlalchemy import bindparam, insert, update

    metric_rows, latest_rows, tag_rows, status_rows = [], [], [], []
    now = int(time.time() * 1000)
    for run_id, rows, result in zip(run_ids, metrics, results, strict=True):
        latest: dict[str, dict[str, Any]] = {}
        for key, value, timestamp, step in rows:
            if key not in latest:  # one check per key: the values are floats we made
                _validate_metric(key, value, timestamp, step)
            is_nan, value = store.sanitize_metric_value(value)
            row = {
                "run_uuid": run_id,
                "key": key,
                "value": value,
                "timestamp": timestamp,
                "step": step,
                "is_nan": is_nan,
            }
            metric_rows.append(row)
            best = latest.get(key)  # MLflow's rule: the largest (step, timestamp, value)
            if best is None or (step, timestamp, value) > (
                best["step"],
                best["timestamp"],
                best["value"],
            ):
                latest[key] = row
        latest_rows.extend(latest.values())
        for key, value in _result_tags(result).items():
            _validate_tag(key, value)
            tag_rows.append({"run_uuid": run_id, "key": key, "value": value})
        status = RunStatus.to_string(RunStatus.from_string(result.status))
        status_rows.append({"id": run_id, "status": status, "end_time": now})
    set_status = (
        update(SqlRun.__table__)
        .where(SqlRun.__table__.c.run_uuid == bindparam("id"))
        .values(status=bindparam("status"), end_time=bindparam("end_time"))
    )
    with store.ManagedSessionMaker(read_only=False) as session:
        for table, rows in (
            (SqlMetric, metric_rows),
            (SqlLatestMetric, latest_rows),
            (SqlTag, tag_rows),
        ):
            if rows:
                session.execute(insert(table.__table__), rows)
        session.connection().execute(set_status, status_rows)


# ---------------------------------------------------------------------------------------------
# Reading sweeps back (the report and the claims read through here).


class NotInStore(LookupError):
    """The store has no such experiment or sweep; the message says what it does have."""


@dataclass
class RunRecord:
    """One run as the store holds it."""

    run_id: str
    name: str
    status: str  # MLflow's: FINISHED, FAILED, KILLED, RUNNING
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # latest values
    start_time: int = 0

    @classmethod
    def of(cls, run: Any) -> RunRecord:
        """From an MLflow Run."""
        return cls(
            run.info.run_id,
            run.info.run_name,
            run.info.status,
            dict(run.data.tags),
            dict(run.data.params),
            dict(run.data.metrics),
            run.info.start_time,
        )

    def result(self) -> RunResult:
        """What the run produced, as training returns it (final metrics only)."""
        keep = ("lossbench.status", "lossbench.diverged_epoch")
        tags = {k: v for k, v in self.tags.items() if k in keep}
        return RunResult(final=dict(self.metrics), status=self.status, tags=tags)

    @property
    def outcome(self) -> str:
        """finished, diverged, failed, killed or running."""
        if self.tags.get("lossbench.status") == "diverged":
            return "diverged"
        return {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(
            self.status, "running"
        )


@dataclass
class SweepRecord:
    """A sweep: its parent run's tags and its runs."""

    uri: str
    experiment: str
    sweep_id: str
    parent_run_id: str | None
    tags: dict[str, str]
    runs: list[RunRecord]


def _search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Any]:
    """Every run matching the filter, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=5000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _experiments(client: MlflowClient, experiment: str | None) -> list[Any]:
    if experiment is None:
        return list(client.search_experiments())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise NotInStore(f"no experiment {experiment!r} in this store; experiments: {names}")
    return [found]


def load_sweep(uri: str, experiment: str | None = None, sweep_id: str | None = None) -> SweepRecord:
    """A sweep and its runs: ``sweep_id``, or the latest sweep (of ``experiment``, if given)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiments = _experiments(client, experiment)
    ids = [e.experiment_id for e in experiments]
    role = "tags.`lossbench.role` = 'sweep'"
    which = f" and tags.`lossbench.sweep_id` = '{sweep_id}'" if sweep_id else ""
    parents = client.search_runs(
        ids, role + which, order_by=["attributes.start_time DESC"], max_results=1
    )
    if parents:
        parent = parents[0]
        sweep_id = parent.data.tags["lossbench.sweep_id"]
        experiment_id, parent_id, parent_tags = (
            parent.info.experiment_id,
            parent.info.run_id,
            dict(parent.data.tags),
        )
    elif sweep_id:  # a sweep by another launcher may have runs and no parent
        found = client.search_runs(ids, f"tags.`lossbench.sweep_id` = '{sweep_id}'", max_results=1)
        if not found:
            raise NotInStore(f"no sweep {sweep_id!r} in {uri}")
        experiment_id, parent_id, parent_tags = found[0].info.experiment_id, None, {}
    else:
        where = f"experiment {experiment!r}" if experiment else "this store"
        raise NotInStore(f"no lossbench sweep in {where}: run `lossbench-train -m ...` first")
    filter_string = f"tags.`{in_sweep_tag(sweep_id)}` = 'true' and tags.`lossbench.role` = 'run'"
    runs = [RunRecord.of(r) for r in _search_all(client, [experiment_id], filter_string)]
    if not runs:
        raise NotInStore(f"sweep {sweep_id} has no runs")
    name = client.get_experiment(experiment_id).name
    return SweepRecord(uri, name, sweep_id, parent_id, parent_tags, runs)


def metric_histories(uri: str, run_ids: Sequence[str], key: str) -> dict[str, list[float]]:
    """Each run's per-epoch values of one metric, ordered by step."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    histories = {}
    for run_id in run_ids:
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        histories[run_id] = [m.value for m in points]
    return histories


def log_report(uri: str, run_id: str, path: Path, artifact_path: str = "report") -> None:
    """Attach a report (a directory, or one file) to a run (the sweep's parent), for the
    MLflow UI."""
    from mlflow import MlflowClient

    with _timed():
        client = MlflowClient(uri)
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


# ---------------------------------------------------------------------------------------------
# Sweep bookkeeping shared by the main process and the jobs (which may be other processes).
#
# A sweep's file in its Hydra sweep dir holds its id, its overrides and report settings, and,
# once created, its parent run. The parent run is created by whoever writes the sweep's first
# run (the launcher after checking every job, or the first job), so that a sweep stopped by bad
# input writes nothing to the store.


def _sweep_file(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / SWEEP_FILE


@contextmanager
def _sweep_lock(sweep_dir: str | Path) -> Iterable[dict[str, Any]]:
    """The sweep file's contents, locked against the sweep's other processes; written back."""
    path = _sweep_file(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads(path.read_text()) if path.exists() else {}
        yield state
        path.write_text(json.dumps(state, indent=2))


def open_sweep(
    sweep_dir: str | Path,
    overrides: Sequence[str],
    report: Mapping[str, Any] | None = None,
    store_uri: str | None = None,
) -> str:
    """Start a sweep's file (no store writes); returns the new sweep id. ``store_uri`` is the
    store as the launching process resolved it, for jobs that run elsewhere (see
    :func:`sweep_store`)."""
    with _sweep_lock(sweep_dir) as state:
        state.clear()
        state.update(
            sweep_id=new_sweep_id(),
            overrides=list(overrides),
            report={k: v for k, v in (report or {}).items() if v is not None},
            parent_run_id=None,
            store_uri=store_uri,
        )
        return state["sweep_id"]


def sweep_store(sweep_dir: str | Path) -> str | None:
    """The store the sweep was launched into. Jobs of remote launchers (Ray, SLURM) run in
    another working directory and environment, where ``$MLFLOW_TRACKING_URI`` or the relative
    local store would point elsewhere; they write here instead."""
    path = _sweep_file(sweep_dir)
    return json.loads(path.read_text()).get("store_uri") if path.exists() else None


def sweep_parent(sweep_dir: str | Path, tracker: Tracker) -> SweepInfo:
    """The sweep's parent run, created on first call (across processes). Creating it first
    marks the experiment's stale RUNNING runs KILLED (see :func:`reap`)."""
    with _sweep_lock(sweep_dir) as state:
        if not state.get("sweep_id"):  # a sweep started without lossbench's callback
            state.update(sweep_id=new_sweep_id(), overrides=[], report={})
        if not state.get("parent_run_id"):
            tracker.reap()
            info = tracker.start_sweep(
                state["sweep_id"], state["overrides"], str(sweep_dir), state["report"]
            )
            state.update(parent_run_id=info.parent_run_id, uri=tracker.uri)
        for study in state.get("studies", []):
            if not study.get("run_id"):
                study["run_id"] = tracker.start_study(
                    state["sweep_id"], state["parent_run_id"], study["label"]
                )
        return _sweep_info(state)


def _sweep_info(state: Mapping[str, Any]) -> SweepInfo:
    studies = tuple(
        (tuple(s["overrides"]), s["label"], s["run_id"])
        for s in state.get("studies", [])
        if s.get("run_id")
    )
    return SweepInfo(state["sweep_id"], state.get("parent_run_id"), studies)


def open_studies(sweep_dir: str | Path, studies: Sequence[tuple[Sequence[str], str]]) -> None:
    """Record an HPO sweep's studies (the overrides naming each, its label) in the sweep's
    file; their runs are created with the sweep's parent run (no store writes here)."""
    with _sweep_lock(sweep_dir) as state:
        state["studies"] = [
            {"overrides": list(overrides), "label": label, "run_id": None}
            for overrides, label in studies
        ]


def log_studies(sweep_dir: str | Path, best: Mapping[str, Mapping[str, Any]], metric: str) -> None:
    """Record each study's best trial on its run (params ``best.<name>``, metric
    ``best/<metric>``), and all of them on the sweep's parent run as ``optuna_best.json``."""
    path = _sweep_file(sweep_dir)
    state = json.loads(path.read_text()) if path.exists() else {}
    if not state.get("parent_run_id"):
        return  # no trial reached the store (tracking=none)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client, now = MlflowClient(state["uri"]), int(time.time() * 1000)
    with _timed():
        for study in state.get("studies", []):
            found = best.get(study["label"])
            if not study.get("run_id") or found is None:
                continue
            params = [Param(f"best.{k}", str(v)) for k, v in found["params"].items()]
            value = found["value"]
            metrics = [Metric(f"best/{metric}", float(value), now, 0)] if value is not None else []
            client.log_batch(study["run_id"], metrics=metrics, params=params)
        client.log_dict(state["parent_run_id"], dict(best), "optuna_best.json")


def read_sweep(sweep_dir: str | Path) -> SweepInfo | None:
    """The sweep a job belongs to, if its sweep dir records one (parent run not yet created)."""
    path = _sweep_file(sweep_dir)
    if not path.exists():
        return None
    return _sweep_info(json.loads(path.read_text()))


def close_sweep(sweep_dir: str | Path, status: str) -> None:
    """End the sweep's parent run with ``status``, if it exists and is still running."""
    path = _sweep_file(sweep_dir)
    if not path.exists():
        return
    state = json.loads(path.read_text())
    if not state.get("parent_run_id") or state.get("closed"):
        return
    from mlflow import MlflowClient

    with _timed():
        client = MlflowClient(state["uri"])
        studies = [s["run_id"] for s in state.get("studies", []) if s.get("run_id")]
        for run_id in [*studies, state["parent_run_id"]]:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status=status)
    with _sweep_lock(sweep_dir) as locked:
        locked["closed"] = status


_exit_status = "FAILED"  # what a sweep's parent run becomes if the process exits mid-sweep


def mark_interrupted() -> None:
    """Record that this process was interrupted (Ctrl+C, SIGTERM): open sweeps end KILLED."""
    global _exit_status
    _exit_status = "KILLED"


class SweepCallback(Callback):
    """Hydra callback: starts the sweep's file before the first job (any launcher), and ends
    the sweep's parent run after the last one; if the process exits mid-sweep instead (a job
    failed, Ctrl+C), at exit, FAILED or KILLED."""

    def __init__(self) -> None:
        self._sweep_dir: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Start the sweep's file; the store is not touched until a run is written."""
        self._sweep_dir = str(config.hydra.sweep.dir)
        report = OmegaConf.to_container(config.report, resolve=True) if "report" in config else None
        overrides = [str(o) for o in config.hydra.overrides.task]
        tracking = (
            OmegaConf.to_container(config.tracking, resolve=True) if "tracking" in config else {}
        )
        store = tracking_uri(tracking) if tracking.get("enabled", True) else None  # type: ignore[union-attr]
        sweep_id = open_sweep(self._sweep_dir, overrides, report, store)  # type: ignore[arg-type]
        atexit.register(self._close_at_exit)
        log.info("Sweep %s; outputs in %s", sweep_id, self._sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """End the parent run: the sweep completed."""
        if self._sweep_dir is not None:
            atexit.unregister(self._close_at_exit)
            close_sweep(self._sweep_dir, "FINISHED")

    def _close_at_exit(self) -> None:
        if self._sweep_dir is not None:
            close_sweep(self._sweep_dir, _exit_status)
