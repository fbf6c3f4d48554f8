"""The MLflow store: where it is, creating it once, and failing fast when it cannot be reached.

The local store is a SQLite file ``<root>/mlflow.db`` with artifacts under ``<root>/artifacts``,
unless ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` says otherwise. It is created once, under a
file lock, before any job writes: processes creating a fresh SQLite store at the same moment can
leave it unusable.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

if TYPE_CHECKING:
    from mlflow import MlflowClient

# A progress bar per small artifact download is noise in a command's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# How to get a missing database driver. lossbench's `team` extra installs psycopg2, while
# SQLAlchemy 2.1 reads a plain postgresql:// URI as postgresql+psycopg:// (psycopg 3).
TEAM_EXTRA = "pip install -c constraints.txt -e '.[team]'"
DRIVER_HINTS = {
    "psycopg2": f"install lossbench's 'team' extra: {TEAM_EXTRA}",
    "psycopg": f"write the URI as postgresql+psycopg2://... and install lossbench's 'team' "
    f"extra ({TEAM_EXTRA}), or install psycopg",
}


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
def store_lock(uri: str) -> Iterator[None]:
    """Serialize store and experiment creation across processes (SQLite only; database
    servers handle their own)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(db.with_name(db.name + ".lock")):
        yield


_mlflow_seconds = 0.0


@contextmanager
def timed() -> Iterator[None]:
    """Count the block's wall time as time spent in MLflow (see :func:`mlflow_seconds`)."""
    global _mlflow_seconds
    start = time.perf_counter()
    try:
        yield
    finally:
        _mlflow_seconds += time.perf_counter() - start


def mlflow_seconds() -> float:
    """Time this process has spent in MLflow calls (store creation, reads for resume, writes)."""
    return _mlflow_seconds


def import_mlflow(prepare: str | None = None) -> None:
    """Import what opening a store takes (MLflow, its SQL store: 1.5 s), e.g. in a thread
    while a sweep's workers start, before anything may be written; then
    :func:`prepare_store` for the store ``prepare`` names, if any."""
    import mlflow  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    if prepare is not None:
        prepare_store(prepare)


class _Prepared:
    """A fresh SQLite store made ahead in a temporary directory (see :func:`prepare_store`)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.db: Path | None = None


_prepared: dict[str, _Prepared] = {}


def prepare_store(uri: str) -> None:
    """If ``uri`` names a SQLite store that does not exist yet, create its schema now in a
    temporary directory: MLflow's migrations take ~1.2 s, which a sweep can spend while its
    workers start, before anything may be written where the user looks. :func:`open_client`
    then puts the prepared file in place (if the store still does not exist)."""
    db = sqlite_path(uri)
    if db is None or db.exists() or uri in _prepared:
        return
    prepared = _prepared[uri] = _Prepared()
    quiet = _FromThisThread()  # MLflow's "Creating initial MLflow database tables...": not
    logging.getLogger("mlflow.store.db.utils").addFilter(quiet)  # the user's store (yet)
    try:
        from mlflow import MlflowClient

        ahead = Path(tempfile.mkdtemp(prefix="lossbench-store-")) / db.name
        atexit.register(shutil.rmtree, ahead.parent, True)  # if never put in place
        # the same schema and default experiment as made in place: its artifact location
        # comes from the working directory, not from the database's path
        MlflowClient(tracking_uri=f"sqlite:///{ahead}").search_experiments(max_results=1)
        prepared.db = ahead
    except Exception:  # noqa: BLE001 (then open_client migrates in place, and reports errors)
        pass
    finally:
        logging.getLogger("mlflow.store.db.utils").removeFilter(quiet)
        prepared.done.set()


class _FromThisThread(logging.Filter):
    """Drops the records logged by the thread that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


def _use_prepared(uri: str) -> None:
    """Under the store's lock: move a store prepared for ``uri`` into place, if the store
    still does not exist."""
    prepared = _prepared.pop(uri, None)
    if prepared is None:
        return
    prepared.done.wait()
    db = sqlite_path(uri)
    if prepared.db is None or db is None:
        return
    if not db.exists():
        staging = db.with_name(db.name + ".prepared")
        shutil.copyfile(prepared.db, staging)
        os.replace(staging, db)  # whole or not at all
    shutil.rmtree(prepared.db.parent, ignore_errors=True)


def open_client(uri: str) -> MlflowClient:
    """MLflow's client for ``uri``, after making sure the store exists (its schema is created
    or upgraded once, under the store's lock)."""
    from mlflow import MlflowClient

    with timed(), store_lock(uri):
        _use_prepared(uri)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def ensure_experiment(client: MlflowClient, uri: str, name: str) -> str:
    """The id of experiment ``name``, creating it if needed (two sweeps may create it at once).
    A local store keeps its artifacts next to its database."""
    with timed(), store_lock(uri):
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        db = sqlite_path(uri)
        location = (db.parent / "artifacts" / name).as_uri() if db else None
        # the UI then opens on the experiment's runs (model training), not on GenAI traces
        kind = {"mlflow.experimentKind": "custom_model_development"}
        return client.create_experiment(name, artifact_location=location, tags=kind)


class StoreUnreachable(RuntimeError):
    """The tracking store cannot be reached; the message says what to do."""


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise :class:`StoreUnreachable` within seconds (instead of MLflow's minutes of retries)
    if the store behind ``uri`` cannot be reached: an HTTP server that does not answer, a
    database that refuses connections or whose driver is not installed, a SQLite file in a
    directory that cannot be created or written."""
    import urllib.error
    import urllib.request

    db = sqlite_path(uri)
    scheme = uri.split(":", 1)[0].lower()
    try:
        if db is not None:  # checked leaving nothing behind: the writer creates the store
            existing = next(p for p in (db.parent, *db.parent.parents) if p.exists())
            try:  # a directory can be made there (os.access says yes to root even in /proc)
                os.rmdir(tempfile.mkdtemp(prefix=".lossbench-check-", dir=existing))
            except OSError as err:
                raise StoreUnreachable(
                    f"tracking store {uri}: {existing} is not writable ({err})"
                ) from err
            if db.exists() and not os.access(db, os.W_OK):
                raise StoreUnreachable(f"tracking store {uri}: {db} is not writable")
        elif scheme in ("http", "https"):
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
        elif scheme.startswith(("postgresql", "mysql", "mssql")):
            _check_database(uri, scheme, timeout)
    except StoreUnreachable:
        raise
    except (OSError, urllib.error.URLError, Exception) as err:  # noqa: BLE001 (driver errors vary)
        raise StoreUnreachable(
            f"tracking store {uri} is unreachable ({type(err).__name__}: {err}). Start the server, "
            "fix tracking.uri / MLFLOW_TRACKING_URI, or train without recording: tracking=none"
        ) from err


def _check_database(uri: str, scheme: str, timeout: float) -> None:
    from sqlalchemy import create_engine

    try:
        engine = create_engine(
            uri,
            connect_args={} if scheme.startswith("mssql") else {"connect_timeout": int(timeout)},
        )
    except ModuleNotFoundError as err:
        how = DRIVER_HINTS.get(str(err.name), f"install the package that provides {err.name!r}")
        raise StoreUnreachable(
            f"tracking store {uri} needs the database driver {err.name!r}, which is not "
            f"installed: {how}"
        ) from err
    with engine.connect():
        pass
    engine.dispose()
