"""Where and by whom a run was trained, as tags: package versions, platform, git commit, and
the writing process (host, pid, pid start time), by which stale RUNNING runs are found.

What decides a run's floating-point results on the machine that trained it (CPU capability,
torch build, device) is known only where torch runs: see :mod:`lossbench.fit.platform_facts`.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

VERSIONED_PACKAGES = ("torch", "pytorch-lightning", "hydra-core", "mlflow", "scikit-learn", "numpy")


@functools.cache
def git_commit() -> tuple[str, bool]:
    """(commit of the lossbench checkout, whether it has uncommitted changes); 'unknown' outside git."""
    repo = Path(__file__).resolve().parents[3]
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


def owner_tags() -> dict[str, str]:
    """Which process writes a run: host, pid and the pid's start time (pids are reused)."""
    import psutil

    me = psutil.Process()
    return {
        "lossbench.host": socket.gethostname(),
        "lossbench.pid": str(me.pid),
        "lossbench.pid_start": f"{me.create_time():.3f}",
    }


def owner_alive(tags: Mapping[str, str]) -> bool:
    """Whether the process named by a run's owner tags still runs (on this host)."""
    import psutil

    try:
        process = psutil.Process(int(tags["lossbench.pid"]))
        return f"{process.create_time():.3f}" == tags.get("lossbench.pid_start")
    except (psutil.Error, KeyError, ValueError):
        return False
