"""RUNNING runs whose writer is gone: a process killed by SIGKILL (or a machine that went down)
cannot record its runs' end. Each run carries its writer's host, pid and pid start time
(:func:`~lossbench.tracking.provenance.owner_tags`); a RUNNING run of this host whose process no
longer exists is stale, and so, when asked, is any RUNNING run older than some hours."""

from __future__ import annotations

import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from lossbench.tracking.provenance import owner_alive
from lossbench.tracking.store import timed

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def experiment_ids(client: MlflowClient, experiment: str | None) -> list[str]:
    """The id of ``experiment`` (none if it does not exist), or of every experiment."""
    if experiment is None:
        return [e.experiment_id for e in client.search_experiments()]
    found = client.get_experiment_by_name(experiment)
    return [found.experiment_id] if found else []


def stale_runs(
    client: MlflowClient, experiment_ids: list[str], older_than_hours: float | None = None
) -> list[Any]:
    """RUNNING runs whose writer is gone (this host), or older than ``older_than_hours``."""
    if not experiment_ids:
        return []
    with timed():
        running = client.search_runs(
            experiment_ids, "attributes.status = 'RUNNING'", max_results=50_000
        )
    host, now = socket.gethostname(), time.time() * 1000
    stale = []
    for run in running:
        tags = run.data.tags
        if "lossbench.pid" not in tags:
            continue  # not ours: nothing to go by
        orphan = tags.get("lossbench.host") == host and not owner_alive(tags)
        old = older_than_hours is not None and now - run.info.start_time > older_than_hours * 3.6e6
        if orphan or old:
            stale.append(run)
    return stale


def reap(
    client: MlflowClient, experiment_ids: list[str], older_than_hours: float | None = None
) -> list[str]:
    """Mark stale runs (see :func:`stale_runs`) KILLED, tagged ``lossbench.reaped``; returns
    their ids."""
    stale = stale_runs(client, experiment_ids, older_than_hours)
    with timed():
        for run in stale:
            client.set_tag(run.info.run_id, "lossbench.reaped", "true")
            client.set_terminated(run.info.run_id, status="KILLED")
    if stale:
        log.warning("Marked %d stale RUNNING run(s) KILLED", len(stale))
    return [run.info.run_id for run in stale]
