"""Small files attached to runs: a run's config when it starts, a traceback when it fails, a
report on a sweep's parent run and its headline table as that run's description."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from lossbench.tracking.store import timed

if TYPE_CHECKING:
    from mlflow import MlflowClient


def write_artifacts(client: MlflowClient, run_id: str, files: Mapping[str, str]) -> None:
    """Write small text files (name -> text) into a run's artifacts."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        client.log_artifacts(run_id, tmp)


def log_report(uri: str, run_id: str, path: Path, artifact_path: str = "report") -> None:
    """Attach a report (a directory, or one file) to a run (a sweep's parent), for the UI:
    copied straight into a local artifact directory of a verified SQL store (see
    :mod:`lossbench.tracking.plain_sql`), else through MLflow's client."""
    from lossbench.tracking import plain_sql

    with timed():
        engine, _ = plain_sql.open_store(uri)
        local = plain_sql.local_artifact_dir(engine, run_id) if engine is not None else None
        if local is not None:
            plain_sql.copy_artifacts(Path(path), local, artifact_path)
            return
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


DESCRIPTION_TAG = "mlflow.note.content"  # the run page's Description (Markdown)


def set_description(uri: str, run_id: str, text: str) -> None:
    """Set a run's description, shown on its MLflow page; replaces any earlier one. Written
    straight into a verified SQL store (see :mod:`lossbench.tracking.plain_sql`), else through
    MLflow's client."""
    from lossbench.tracking import plain_sql

    with timed():
        engine, _ = plain_sql.open_store(uri)
        if engine is not None and plain_sql.set_tag(engine, run_id, DESCRIPTION_TAG, text):
            return
        from mlflow import MlflowClient

        MlflowClient(uri).set_tag(run_id, DESCRIPTION_TAG, text)
