"""Small files attached to runs: a run's config when it starts, a traceback when it fails, a
report on a sweep's parent run."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from lossbench.tracking.store import timed


def write_artifacts(artifact_uri: str, files: Mapping[str, str], tracking_uri: str) -> None:
    """Write small text files (name -> text) into a run's artifact location. The location is
    known, so there is no need to fetch the run first, as ``log_artifacts`` would."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).log_artifacts(tmp)


def log_report(uri: str, run_id: str, path: Path, artifact_path: str = "report") -> None:
    """Attach a report (a directory, or one file) to a run (a sweep's parent), for the UI."""
    from mlflow import MlflowClient

    with timed():
        client = MlflowClient(uri)
        if Path(path).is_dir():
            client.log_artifacts(run_id, str(path), artifact_path)
        else:
            client.log_artifact(run_id, str(path), artifact_path)
