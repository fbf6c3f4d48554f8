"""``hydra.launcher.executor=ray``: each stack is a task on a running Ray cluster.

The sweep's process connects as a Ray driver; it plans, submits and records as it does with
local workers, and stays the only MLflow writer (tasks return their per-member results). Ray
retries nothing itself (``max_retries=0``): a lost task is the sweep's to submit again, so that
it is logged and tagged (``lossbench.attempts``). Every node needs lossbench installed in the
Python environment its workers run.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from lossbench.config.spec import ConfigError
from lossbench.sweep.executors import StackExecutor

INSTALL_HINT = "pip install -e '.[ray]'"
# Workers import these while the driver composes and checks (as LocalExecutor's fork server).
WARM_MODULES = ("lossbench.fit.training", "sklearn.datasets", "sklearn.model_selection")
WORKER_NICENESS = 5  # as local workers: the driver, which feeds and records, goes first


class _RemoteTraceback(Exception):
    """A task's traceback on its worker, as the ``__cause__`` of the error it raised there
    (what ``ProcessPoolExecutor`` does for local workers)."""

    def __str__(self) -> str:
        return str(self.args[0])


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on a Ray worker, which yields the CPU to the driver where they share one."""
    if os.getpriority(os.PRIO_PROCESS, 0) < WORKER_NICENESS:
        os.setpriority(os.PRIO_PROCESS, 0, WORKER_NICENESS)
    return fn(*args, **kwargs)


def _warm() -> None:
    """Import what training needs, so that the first stack does not wait for it."""
    import importlib

    for module in WARM_MODULES:
        importlib.import_module(module)


def _reachable(address: str, named: str, timeout: float = 5.0) -> None:
    """Fail at once, with the address as ``named`` (where it was set), where nothing listens at
    ``host:port`` (``ray.init`` would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return  # not host:port (e.g. "local"); ray.init says what it makes of it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"no Ray cluster at {named} ({err}); start one with "
            "`ray start --head`, or give the address of yours (host:port, or $RAY_ADDRESS)"
        ) from None


def _latest_local_cluster() -> tuple[str, str] | None:
    """Where ``auto`` points: the address of the latest cluster started on this machine, as
    ``ray start`` records it (ray.init's docs: ``/tmp/ray/ray_current_cluster``, under
    ``$RAY_TMPDIR`` or ``$TMPDIR`` if set), with that file's path; None if there is none. A
    cluster killed rather than stopped leaves it behind, and ray.init would retry for minutes."""
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(tmp, "ray", "ray_current_cluster")
    try:
        with open(path) as file:
            address = file.read().strip()
    except OSError:
        return None
    return (address, path) if address else None


class RayExecutor(StackExecutor):
    """Stacks as Ray tasks of ``num_cpus`` CPUs each on the cluster at ``address`` (default
    ``$RAY_ADDRESS``, else ``auto``: the cluster started on this machine)."""

    name = "ray"
    retries = 1  # a stack whose worker died is submitted once more, then FAILED

    def __init__(self, address: str | None = None, num_cpus: int = 1) -> None:
        if not isinstance(num_cpus, int) or num_cpus < 1:
            raise ConfigError(f"hydra.launcher.ray.num_cpus={num_cpus!r} must be an integer >= 1")
        try:
            import ray
        except ImportError:
            raise ConfigError(
                f"hydra.launcher.executor=ray needs Ray: {INSTALL_HINT} (-c constraints.txt pins it)"
            ) from None
        self._ray = ray
        self.num_cpus = num_cpus
        env = os.environ.get("RAY_ADDRESS")
        self.address = address or env or "auto"
        where = "hydra.launcher.ray.address" if address else "$RAY_ADDRESS" if env else "address"
        _reachable(self.address, f"{where}={self.address!r}")
        if self.address == "auto" and (latest := _latest_local_cluster()) is not None:
            named = f"address='auto' ({latest[0]}, the latest cluster started here: {latest[1]})"
            _reachable(latest[0], named)
        try:
            ray.init(address=self.address)
        except ConnectionError as err:  # e.g. "auto" with no cluster started on this machine
            raise ConfigError(
                f"no Ray cluster reachable at {where}={self.address!r}: {err}"
            ) from None
        self.driver_host = self._driver_host()
        self._n_workers = self._size()
        self._task = ray.remote(_call)
        self._refs: dict[Any, Future] = {}  # tasks in flight, for stop(kill=True)
        self._lock = threading.Lock()  # the refs change in Ray's callback thread too
        # Workers start and import torch while the jobs are composed (see wait_ready).
        self._warming = [self.submit(_warm) for _ in range(self._n_workers)]

    def _driver_host(self) -> str:
        """This process's node's IP as the cluster knows it (where workers reach the driver)."""
        here = self._ray.get_runtime_context().get_node_id()
        for node in self._ray.nodes():
            if node["NodeID"] == here:
                return str(node["NodeManagerAddress"])
        return self._ray.util.get_node_ip_address()

    def _size(self) -> int:
        """Stacks that fit on the cluster at once: each node's CPUs // num_cpus, summed. A
        task that no node can hold would wait forever: that is an error."""
        cpus = [int(n["Resources"].get("CPU", 0)) for n in self._ray.nodes() if n["Alive"]]
        if max(cpus, default=0) < self.num_cpus:
            self._ray.shutdown()
            raise ConfigError(
                f"hydra.launcher.ray.num_cpus={self.num_cpus} is more than any node of the Ray "
                f"cluster at {self.address!r} has (CPUs per node: {cpus or 'none'})"
            )
        return max(1, sum(n // self.num_cpus for n in cpus))

    @property
    def n_workers(self) -> int:
        """Tasks of ``num_cpus`` that fit on the cluster's CPUs (when it connected)."""
        return self._n_workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` as a Ray task; an error it raises comes back as itself
        (its remote traceback as ``__cause__``), a lost worker as Ray's error (e.g.
        ``WorkerCrashedError``)."""
        name = getattr(fn, "__name__", "task")  # the worker's title: ray::train_stack
        task = self._task.options(num_cpus=self.num_cpus, max_retries=0, name=name)
        ref = task.remote(fn, *args, **kwargs)
        future: Future = Future()
        with self._lock:
            self._refs[ref] = future

        def done(ray_future: Future) -> None:
            err = ray_future.exception()
            if isinstance(err, self._ray.exceptions.RayTaskError) and err.cause is not None:
                # fn raised on the worker: the error itself; str(err) is Ray's message with
                # the remote traceback
                err.cause.__cause__ = _RemoteTraceback(str(err))
                err = err.cause
            with self._lock:
                self._refs.pop(ref, None)
                if future.cancelled():  # by stop(kill=True): nobody waits for it any more
                    return
                if err is None:
                    future.set_result(ray_future.result())
                else:
                    future.set_exception(err)

        ref.future().add_done_callback(done)
        return future

    def checker(self) -> StackExecutor:
        """Jobs are checked on the cluster's workers: where the data will be read (a file's
        path, its hash) and the accelerator used, and which import torch anyway."""
        return self

    def wait_ready(self) -> None:
        """Wait until every worker has imported what training needs; workers that cannot
        (lossbench missing on a node, say: Ray's RaySystemError) are an error."""
        try:
            for future in self._warming:
                future.result()
        except Exception as err:  # noqa: BLE001 (whatever it is, no stack could train)
            first = (str(err).strip().splitlines() or [""])[0]
            raise ConfigError(
                f"the workers of the Ray cluster at {self.address!r} cannot import lossbench's "
                f"training ({type(err).__name__}: {first}): install lossbench on every node, "
                "in the Python its workers run"
            ) from None

    def stop(self, kill: bool) -> None:
        """Disconnect (the cluster keeps running); with ``kill``, cancel this sweep's tasks
        first, ending their worker processes."""
        if kill:
            with self._lock:
                refs, self._refs = self._refs, {}
                for future in refs.values():
                    future.cancel()
            for ref in refs:
                self._ray.cancel(ref, force=True)
        self._ray.shutdown()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """``concurrent.futures`` API: as :meth:`stop`."""
        self.stop(kill=cancel_futures and not wait)
