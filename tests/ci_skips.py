"""Under ``CI=true`` a skipped test fails: CI must run every test the suite claims to run.

Outside CI, a test whose system package (PostgreSQL, Chromium, SLURM, munge) or optional extra
(``[ray]``, ``[slurm]``, ``[team]``, ``[browser]``) is missing skips, and its reason says what
is missing and how to install it. In CI (``CI=true``, as ``.ci/run`` sets it) the same test
fails with that reason, whether it skipped while collected (``pytest.importorskip`` at module
level: a collection error), in a fixture or in its body. ``tests/conftest.py`` imports these
hooks; ``tests/test_ci_skips.py`` checks them.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def in_ci() -> bool:
    """Whether this is a CI run (``CI`` set to true, 1 or yes, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _fail_the_skip(report: Any) -> None:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    report.outcome = "failed"
    report.longrepr = f"CI=true: every test must run here, but this one skipped: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """A test that skipped (in setup or in its body) fails under CI."""
    report = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_the_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """A test module that skipped while imported fails to collect under CI."""
    report = yield
    if in_ci() and report.skipped:
        _fail_the_skip(report)
    return report
