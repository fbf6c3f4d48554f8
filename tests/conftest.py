"""Shared fixtures: configs composed in-process from conf/, one SQLite store per session, and a
PostgreSQL database (started once, where installed) for the tests that need one; and the one
tolerance policy for comparing results across code paths."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lossbench.config.spec import CONF_DIR, RunSpec
from lossbench.ui import free_port

sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
# Under CI=true a skipped test fails instead, with its reason (what is missing): see ci_skips.
from ci_skips import pytest_make_collect_report, pytest_runtest_makereport  # noqa: E402, F401
from team_server import postgres, postgres_bin  # noqa: E402

# Small and fast: the tests check behaviour, not accuracy.
FAST = ["trainer.max_epochs=3", "dataset.source.n_samples=200"]

# Every dataset option: task, n_features, n_classes (test_data checks them against the data)
DATASETS = {
    "iris": ("multiclass", 4, 3),
    "wine": ("multiclass", 13, 3),
    "breast_cancer": ("binary", 30, 2),
    "digits": ("multiclass", 64, 10),
    "diabetes": ("regression", 10, 0),
    "moons": ("binary", 2, 2),
    "circles": ("binary", 2, 2),
    "blobs": ("multiclass", 2, 3),
    "classification": ("binary", 20, 2),
    "regression": ("regression", 10, 0),
    "friedman1": ("regression", 10, 0),
    "linear2": ("regression", 2, 0),
    "linear1": ("regression", 1, 0),
    "xor": ("binary", 2, 2),
}

# Tolerance policy. Results of DIFFERENT code paths (a stacked fit and a fit alone, lossbench's
# launcher and Hydra's, one CPU kind and another) are compared within these tolerances: float32
# sums taken in another order (batched matmuls, other SIMD kernels) differ in the last bits
# (eps = 1.2e-7), and a few epochs of training carry that on. Measured on the tests' configs
# (3-4 epochs; torch's DEFAULT, AVX2 and AVX512 kernels): at most 1.2e-7 absolute and 1.5e-6
# relative. 1e-5 leaves a margin of about 10x over that and still catches any real difference
# between members (another seed, a shared gradient: 1e-2 and up). A value passes when it is
# within 1e-5 absolutely or relatively, whichever is larger (relative matters above 1).
# The SAME code path on the same machine is compared bit for bit, with ==.
CROSS_PATH_RTOL = 1e-5
CROSS_PATH_ATOL = 1e-5


def cross_path_approx(expected: Any) -> Any:
    """``pytest.approx`` with the cross-path tolerances (NaN equals NaN: the same record)."""
    return pytest.approx(expected, rel=CROSS_PATH_RTOL, abs=CROSS_PATH_ATOL, nan_ok=True)


def assert_series_close(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], skip: str = "time/"
) -> None:
    """The same metrics, with the same number of values each, equal within the cross-path
    tolerances (metrics named ``skip...`` are wall-clock times and left out)."""
    assert set(a) == set(b)  # the same records, however trained
    for name, values in b.items():
        if not name.startswith(skip):
            assert list(a[name]) == cross_path_approx(list(values)), name


def assert_results_close(a: Any, b: Any) -> None:
    """Two RunResults of different code paths: series and final metrics (times left out)
    within the cross-path tolerances."""
    assert_series_close(a.series, b.series)
    finals = {k: [v] for k, v in a.final.items()}
    assert_series_close(finals, {k: [v] for k, v in b.final.items()})


@pytest.fixture(scope="session")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store shared by the whole test session."""
    root = tmp_path_factory.mktemp("mlruns")
    return f"sqlite:///{root / 'mlflow.db'}"


def postgres_directory(prefix: str) -> Path:
    """A fresh directory for a PostgreSQL server of a test (PostgreSQL runs as the postgres
    user when we are root: it needs a directory it can reach). Skips, saying why, where
    PostgreSQL's server or the psycopg2 driver is not installed (fails under CI=true)."""
    pytest.importorskip(
        "psycopg2",
        reason="the [team] extra (psycopg2-binary) is not installed (make test installs it)",
    )
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
