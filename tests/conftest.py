"""Shared fixtures: configs composed in-process from conf/, and one SQLite store per session."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lossbench.config import CONF_DIR, RunSpec

# Small and fast: the tests check behaviour, not accuracy.
FAST = ["trainer.max_epochs=3", "dataset.source.n_samples=200"]


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store shared by the whole test session."""
    root = tmp_path_factory.mktemp("mlruns")
    return f"sqlite:///{root / 'mlflow.db'}"


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
