"""A one-node SLURM cluster on localhost for the tests: Debian's ``slurmctld``, ``slurmd`` and
``munge`` (``make system-deps``), each with its own files in a temporary directory, its own
munge key and socket, and free ports, so that it touches nothing of the machine's own SLURM.

The node is this machine with ``CPUS`` CPUs (more than it has, so that a test can hold a job
while others run: ``SlurmdParameters=config_overrides``) and the memory ``slurmd -C`` reports.
No accounting database (``sacct`` does not work): lossbench reads job states from ``squeue``.
Processes are tracked by their parent pids and tasks are not confined (no cgroups here).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lossbench.ui import free_port

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PACKAGES = "slurmctld slurmd slurm-client munge"
CPUS = 4
NODE = "lossbench-node"
PARTITION = "lossbench"


@dataclass
class SlurmCluster:
    """A running cluster: its directory and its ``slurm.conf``; :attr:`env` points SLURM's
    commands (and the jobs they submit) at it."""

    directory: Path
    conf: Path

    @property
    def env(self) -> dict[str, str]:
        """This process's environment, with ``SLURM_CONF`` set to the cluster's."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> str:
        """A SLURM command's output (it must succeed)."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """Every job the controller lists (finished ones too, for a while): id -> state."""
        out = self.run("squeue", "--noheader", "--states=all", "--format=%i|%T")
        return dict(line.strip().split("|") for line in out.splitlines() if line.strip())

    def running(self) -> list[str]:
        """Ids of the jobs running now, in submission order."""
        return sorted((i for i, s in self.jobs().items() if s == "RUNNING"), key=int)

    def log(self, name: str) -> str:
        """The end of a daemon's log (``slurmctld``, ``slurmd``, ``munged``)."""
        path = self.directory / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""


def _missing() -> str | None:
    absent = [program for program in PROGRAMS if shutil.which(program) is None]
    if absent:
        return f"SLURM's {', '.join(absent)} not installed (make system-deps installs {PACKAGES})"
    return None


def _node_memory_mb() -> int:
    """The node's memory as slurmd measures it (a node configured with more is drained)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"RealMemory=(\d+)", out)
    assert found, f"slurmd -C did not report the memory: {out!r}"
    return int(found.group(1))


def _conf(directory: Path, munge_socket: Path) -> str:
    return f"""\
ClusterName=lossbench-test
SlurmctldHost=localhost
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={directory / "state"}
SlurmdSpoolDir={directory / "spool"}
SlurmctldPidFile={directory / "slurmctld.pid"}
SlurmdPidFile={directory / "slurmd.pid"}
SlurmctldLogFile={directory / "slurmctld.log"}
SlurmdLogFile={directory / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=2
NodeName={NODE} NodeHostname={socket.gethostname()} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={_node_memory_mb()} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


def _start(cmd: list[str], directory: Path, name: str) -> subprocess.Popen:
    with open(directory / f"{name}.out", "w") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=directory
        )


def _stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def slurm_cluster(timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, slurmctld and slurmd; yield once the node takes jobs; cancel every job
    left and stop the daemons. Skips, saying what to install, without SLURM (fails under
    CI=true)."""
    missing = _missing()
    if missing:
        pytest.skip(missing)
    # munged wants every directory above its socket to be reachable by all (pytest's are not)
    directory = Path(tempfile.mkdtemp(prefix="lossbench-slurm-"))
    os.chmod(directory, 0o755)
    for sub in ("munge", "state", "spool"):
        (directory / sub).mkdir(mode=0o700)
    os.chmod(directory / "munge", 0o755)
    key = directory / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = directory / "munge" / "munge.socket"
    conf = directory / "slurm.conf"
    conf.write_text(_conf(directory, munge_socket))
    cluster = SlurmCluster(directory, conf)
    daemons: list[subprocess.Popen] = []
    try:
        daemons.append(_start([
            "munged", "--foreground", f"--key-file={key}", f"--socket={munge_socket}",
            f"--pid-file={directory / 'munge' / 'munged.pid'}",
            f"--seed-file={directory / 'munge' / 'munged.seed'}",
            f"--log-file={directory / 'munged.log'}",
        ], directory, "munged"))  # fmt: skip
        deadline = time.monotonic() + timeout
        while not munge_socket.exists():
            assert daemons[0].poll() is None, f"munged failed:\n{cluster.log('munged')}"
            assert time.monotonic() < deadline, f"munged timed out:\n{cluster.log('munged')}"
            time.sleep(0.05)
        daemons.append(_start(["slurmctld", "-D", "-i", "-f", str(conf)], directory, "slurmctld"))
        daemons.append(_start(["slurmd", "-D", "-N", NODE, "-f", str(conf)], directory, "slurmd"))
        while True:
            for daemon in daemons:
                assert daemon.poll() is None, (
                    f"{daemon.args[0]} exited:\n{cluster.log(str(daemon.args[0]))}"
                )
            state = subprocess.run(
                ["sinfo", "--noheader", "--format=%T", f"--nodes={NODE}"],
                env=cluster.env, capture_output=True, text=True, timeout=30,
            ).stdout.strip()  # fmt: skip
            if state == "idle":
                break
            assert time.monotonic() < deadline, (
                f"the SLURM node is {state!r}, not idle:\n{cluster.log('slurmctld')}\n"
                f"{cluster.log('slurmd')}"
            )
            time.sleep(0.2)
        yield cluster
    finally:
        if len(daemons) == 3:  # no job of ours outlives the cluster
            subprocess.run(["scancel", f"--partition={PARTITION}"], env=cluster.env,
                           capture_output=True, timeout=30)  # fmt: skip
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and any(
                state in ("RUNNING", "COMPLETING", "PENDING") for state in cluster.jobs().values()
            ):
                time.sleep(0.2)
        for daemon in reversed(daemons):
            _stop(daemon)
        shutil.rmtree(directory, ignore_errors=True)


def sleepy(probs: Any, target: Any) -> Any:
    """A metric (every epoch) that takes a second: a stack that trains until its time limit
    on little CPU."""
    time.sleep(1.0)
    return (probs.argmax(-1) == target).float().mean(-1)
