"""SLURM job states as ``squeue`` reports them (``hydra.launcher.executor=slurm``).

submitit learns whether a job has ended from ``sacct``, which needs SLURM's accounting database
(slurmdbd); on a cluster without one, ``sacct`` fails, submitit counts the job's state as
UNKNOWN, and a job that ended without a result (cancelled, killed, out of time) would be waited
for forever. ``squeue`` is answered by the controller itself, on every cluster, at once, and
lists a job for ``MinJobAge`` (300 s by default) after it ends; one call asks for every job in
flight. A job it no longer lists has ended long ago.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable

log = logging.getLogger(__name__)

# States of a job that has ended (squeue's %T); any other state is queued, running or ending.
ENDED = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT",
})  # fmt: skip
GONE = "GONE"  # no longer listed: ended more than MinJobAge ago
TIMEOUT_S = 30.0


def job_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Each job's state (``RUNNING``, ``CANCELLED``, …; :data:`GONE` for jobs squeue no longer
    lists), or None when squeue cannot answer now (the controller is busy or restarting: ask
    again later)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    cmd = ["squeue", "--noheader", "--states=all", "--format=%i|%T", f"--jobs={','.join(ids)}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("squeue did not answer (%s); asking again later", err)
        return None
    if done.returncode != 0:
        # every job asked for is gone: squeue refuses the list instead of printing nothing
        if "Invalid job id" in done.stderr:
            return dict.fromkeys(ids, GONE)
        log.warning("squeue failed (%s); asking again later", done.stderr.strip()[-300:])
        return None
    states = dict.fromkeys(ids, GONE)
    for line in done.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id in states:
            states[job_id] = state.split()[0] if state.strip() else "UNKNOWN"
    return states
