"""Shared fixtures: configs composed in-process from conf/, one SQLite store per session, and a
PostgreSQL database (started once, where installed) for the tests that need one."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lossbench.config import CONF_DIR, RunSpec
from lossbench.ui import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
from team_server import postgres, postgres_bin  # noqa: E402

# Small and fast: the tests check behaviour, not accuracy.
FAST = ["trainer.max_epochs=3", "dataset.source.n_samples=200"]


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store shared by the whole test session."""
    root = tmp_path_factory.mktemp("mlruns")
    return f"sqlite:///{root / 'mlflow.db'}"


def postgres_directory(prefix: str) -> Path:
    """A fresh directory for a PostgreSQL server of a test (PostgreSQL runs as the postgres
    user when we are root: it needs a directory it can reach). Skips, saying why, where
    PostgreSQL's server or the psycopg2 driver is not installed."""
    pytest.importorskip("psycopg2", reason="the [team] extra (psycopg2-binary) is not installed")
    try:
        postgres_bin()
    except SystemExit as missing:
        pytest.skip(f"{missing} (make system-deps installs it)")
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(directory, 0o755)
    return directory


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A PostgreSQL database on loopback for the whole test session, as a SQLAlchemy URI."""
    directory = postgres_directory("lossbench-pg-")
    try:
        with postgres(directory / "pg", free_port()) as uri:
            yield uri
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_spec() -> Callable[..., RunSpec]:
    """Compose ``conf/train.yaml`` with overrides, as Hydra would for a run."""

    def _make(overrides: Sequence[str] = ()) -> RunSpec:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        return RunSpec.from_hydra_config(cfg)

    return _make


def conf_options(group: str) -> list[str]:
    """The options of a config group, from its YAML files."""
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))
