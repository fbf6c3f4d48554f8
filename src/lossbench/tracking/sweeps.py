"""A sweep's state, shared by the main process and its jobs (which may be other processes, on
other machines), and its parent run.

A sweep's file in its Hydra sweep dir holds its id, its overrides and report settings, the store
it was launched into and, once created, its parent run (and an HPO sweep's study runs). The
parent run is created by whoever writes the sweep's first run (the launcher after checking every
job, or the first job), so that a sweep stopped by bad input writes nothing to the store.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock

from lossbench.tracking.store import timed


class SweepWriter(Protocol):
    """What :func:`sweep_parent` needs of a writer (:class:`lossbench.tracking.writer.Tracker`
    is one; naming it here would make the two modules import each other)."""

    uri: str

    def reap(self) -> list[str]: ...  # noqa: D102

    def start_sweep(
        self, sweep_id: str, overrides: Sequence[str], sweep_dir: str, report: Any = None
    ) -> SweepInfo: ...  # noqa: D102

    def start_study(self, sweep_id: str, parent_run_id: str, label: str) -> str: ...  # noqa: D102


SWEEP_FILE = "lossbench-sweep.json"  # in the Hydra sweep dir: how jobs find their parent run


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


def _sweep_file(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / SWEEP_FILE


def _read(sweep_dir: str | Path) -> dict[str, Any]:
    path = _sweep_file(sweep_dir)
    return json.loads(path.read_text()) if path.exists() else {}


@contextmanager
def _locked_state(sweep_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The sweep file's contents, locked against the sweep's other processes; written back."""
    path = _sweep_file(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):
        state = _read(sweep_dir)
        yield state
        # a reader (a job, unlocked) sees the old file or the new one, never half of one
        partial = path.with_suffix(f".tmp{os.getpid()}")
        partial.write_text(json.dumps(state, indent=2))
        os.replace(partial, path)


def open_sweep(
    sweep_dir: str | Path,
    overrides: Sequence[str],
    report: Mapping[str, Any] | None = None,
    store_uri: str | None = None,
) -> str:
    """Start a sweep's file (no store writes); returns the new sweep id. ``store_uri`` is the
    store as the launching process resolved it, for jobs that run elsewhere (see
    :func:`sweep_store`)."""
    pending = _pending_studies.pop(Path(sweep_dir).resolve(), None)
    with _locked_state(sweep_dir) as state:
        studies = state.get("studies", pending)  # an HPO sweep's, recorded before its first round
        state.clear()
        if studies is not None:
            state["studies"] = studies
        state.update(
            sweep_id=new_sweep_id(),
            overrides=list(overrides),
            report={k: v for k, v in (report or {}).items() if v is not None},
            parent_run_id=None,
            store_uri=store_uri,
        )
        return state["sweep_id"]


def sweep_started(sweep_dir: str | Path) -> bool:
    """Whether the sweep's file has been started (:func:`open_sweep`)."""
    return bool(_read(sweep_dir).get("sweep_id"))


def sweep_store(sweep_dir: str | Path) -> str | None:
    """The store the sweep was launched into. Jobs of remote launchers (Ray, SLURM) run in
    another working directory and environment, where ``$MLFLOW_TRACKING_URI`` or the relative
    local store would point elsewhere; they write here instead."""
    return _read(sweep_dir).get("store_uri")


def sweep_parent(sweep_dir: str | Path, tracker: SweepWriter) -> SweepInfo:
    """The sweep's parent run, created on first call (across processes). Creating it first
    marks the experiment's stale RUNNING runs KILLED (see :mod:`lossbench.tracking.reaping`)."""
    with _locked_state(sweep_dir) as state:
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


# An HPO sweep's studies, held in this process until its file is started (by the launcher or
# sweeper, once the first round's jobs are checked): bad input leaves no sweep file.
_pending_studies: dict[Path, list[dict[str, Any]]] = {}


def open_studies(sweep_dir: str | Path, studies: Sequence[tuple[Sequence[str], str]]) -> None:
    """Record an HPO sweep's studies (the overrides naming each, its label) in the sweep's
    file, or, before that file is started, when :func:`open_sweep` starts it; their runs are
    created with the sweep's parent run (no store writes here)."""
    entries = [
        {"overrides": list(overrides), "label": label, "run_id": None}
        for overrides, label in studies
    ]
    if not _sweep_file(sweep_dir).exists():
        _pending_studies[Path(sweep_dir).resolve()] = entries
        return
    with _locked_state(sweep_dir) as state:
        state["studies"] = entries


def log_studies(sweep_dir: str | Path, best: Mapping[str, Mapping[str, Any]], metric: str) -> None:
    """Record each study's best trial on its run (params ``best.<name>``, metric
    ``best/<metric>``), and all of them on the sweep's parent run as ``optuna_best.json``."""
    state = _read(sweep_dir)
    if not state.get("parent_run_id"):
        return  # no trial reached the store (tracking=none)
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client, now = MlflowClient(state["uri"]), int(time.time() * 1000)
    with timed():
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
    state = _read(sweep_dir)
    return _sweep_info(state) if state else None


def close_sweep(sweep_dir: str | Path, status: str) -> None:
    """End the sweep's parent run (and its study runs) with ``status``, if it exists and is
    still running."""
    state = _read(sweep_dir)
    if not state.get("parent_run_id") or state.get("closed"):
        return
    from mlflow import MlflowClient

    with timed():
        client = MlflowClient(state["uri"])
        studies = [s["run_id"] for s in state.get("studies", []) if s.get("run_id")]
        for run_id in [*studies, state["parent_run_id"]]:
            if client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, status=status)
    with _locked_state(sweep_dir) as locked:
        locked["closed"] = status


_exit_status = "FAILED"  # what a sweep's parent run becomes if the process exits mid-sweep


def mark_interrupted() -> None:
    """Record that this process was interrupted (Ctrl+C, SIGTERM): open sweeps end KILLED."""
    global _exit_status
    _exit_status = "KILLED"


def exit_status() -> str:
    """How a sweep still open when this process exits ends: KILLED after an interrupt, else
    FAILED (a job raised)."""
    return _exit_status
