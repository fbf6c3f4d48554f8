"""CI never skips what it claims to test: under CI=true a test that would skip, because a
system package or an optional extra is missing, fails instead, naming what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent

MISSING = """
import pytest

def test_needs_an_extra():
    pytest.importorskip("lossbench_no_such_module", reason="the [nothing] extra is not installed")

def test_needs_a_program():
    pytest.skip("the nothingd daemon is not installed (make system-deps installs it)")

def test_runs():
    pass
"""
MODULE_LEVEL = """
import pytest
pytest.importorskip("lossbench_no_such_module", reason="the [elsewhere] extra is not installed")

def test_never_collected():
    pass
"""


def pytest_run(tmp_path: Path, ci: str | None, *files: str) -> subprocess.CompletedProcess:
    """pytest on test files (of those above) with the hooks of tests/ci_skips.py, CI set to
    ``ci``."""
    (tmp_path / "test_missing.py").write_text(MISSING)
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = str(TESTS)
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-p", "ci_skips", "-p", "no:cacheprovider", "-rA",
           "--rootdir", str(tmp_path), "-c", os.devnull, *files]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_outside_ci_a_missing_package_skips_saying_what_is_missing(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, None, "test_missing.py", "test_module_level.py")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed, 3 skipped" in done.stdout
    assert "the [nothing] extra is not installed" in done.stdout
    assert "the nothingd daemon is not installed" in done.stdout
    assert "the [elsewhere] extra is not installed" in done.stdout


def test_under_ci_a_missing_package_fails_naming_it(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, "true", "test_missing.py")
    assert done.returncode == 1, done.stdout[-3000:]
    assert " 2 failed, 1 passed in " in done.stdout.splitlines()[-1]
    for test, missing in [
        ("an_extra", "the [nothing] extra"),
        ("a_program", "the nothingd daemon"),
    ]:
        assert (
            f"FAILED test_missing.py::test_needs_{test} - CI=true: every test must run here, but "
            f"this one skipped: Skipped: {missing} is not installed"
        ) in done.stdout
    # a module that skips as it is imported fails to collect (which stops the run)
    done = pytest_run(tmp_path, "1", "test_module_level.py")
    assert done.returncode == 2, done.stdout[-3000:]
    assert (
        "ERROR test_module_level.py - CI=true: every test must run here, but this one skipped: "
        "Skipped: the [elsewhere] extra is not installed"
    ) in done.stdout
