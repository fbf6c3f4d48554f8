"""Live curves: workers send each stack's per-epoch rows to the sweep's process as they train.

The sweep's process (the driver: the only MLflow writer) opens a :class:`LiveRows` listener, a
TCP socket with an auth key (:mod:`lossbench.sweep.live_channel`: no peer, silent, garbled or with the
wrong key, can delay the others), on the address its executor's workers reach it at; each
stack's task gets a :class:`LiveTarget` and sends its rows through a :class:`LiveSender`, at
most once a second. The driver writes what has arrived every
``tracking.flush_every_s`` seconds (:class:`lossbench.sweep.run.StackRunner`), so the MLflow UI
shows a RUNNING run's curves. The same socket serves every executor: local processes, Ray
tasks and SLURM jobs.

Live rows are a view, never the record: a stack's result carries its whole history, and the
driver writes whatever the live rows did not cover when the stack ends. A worker that cannot
reach the driver (or whose connection or send times out) trains on and warns once.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossbench.sweep.live_channel import ChannelClient, ChannelServer

log = logging.getLogger(__name__)

# A member's values at one epoch (metric -> value), or None once that member has diverged.
MemberRow = dict[str, float] | None
SEND_EVERY_S = 1.0  # a worker sends what it has at most this often
LIVE_SHARE_INVERSE = 9  # a flush that took t s is followed by a pause of at least 9 t


@dataclass(frozen=True)
class LiveTarget:
    """Where a stack's task sends its rows: the driver's listener, and the stack's token."""

    host: str
    port: int
    authkey: bytes
    token: int
    every_s: float = SEND_EVERY_S  # at most this often (0: every epoch)


class LiveSender:
    """A fit's ``on_epoch_end``: collects each epoch's member rows and sends them to the
    driver at most every ``target.every_s`` seconds, as ``[token, first_epoch, rows]``."""

    def __init__(self, target: LiveTarget) -> None:
        self.target = target
        self.rows: list[list[MemberRow]] = []
        self.first_epoch = 0
        self.last_sent = time.monotonic()
        self.client: ChannelClient | None = None
        self.broken = False

    def __call__(self, epoch: int, rows: Sequence[MemberRow]) -> None:
        """One epoch's rows, one per member (in the stack's order)."""
        if self.broken:
            return
        if not self.rows:
            self.first_epoch = epoch
        self.rows.append(list(rows))
        if time.monotonic() - self.last_sent >= self.target.every_s:
            self.send()

    def send(self) -> None:
        """Send the rows collected so far (connecting first, if not yet connected)."""
        if not self.rows or self.broken:
            return
        try:
            if self.client is None:
                target = self.target
                self.client = ChannelClient(target.host, target.port, target.authkey)
            self.client.send([self.target.token, self.first_epoch, self.rows])
        except OSError as err:  # the run is recorded in full when it ends anyway
            log.warning("Live curves off for this stack: cannot reach the driver (%s)", err)
            self.broken = True
            self.close()
        self.rows = []
        self.last_sent = time.monotonic()

    def close(self) -> None:
        """Close the connection (rows not sent yet are in the stack's result)."""
        if self.client is not None:
            self.client.close()
            self.client = None


class LiveRows:
    """The driver's end: accepts workers' connections and collects their rows by token.

    :meth:`take` returns (and forgets) everything that arrived since the last call; the caller
    drops rows of stacks it has recorded already."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.authkey = secrets.token_bytes(16)
        bind = "0.0.0.0" if host not in ("127.0.0.1", "localhost") else host
        self._lock = threading.Lock()
        self._arrived: dict[int, list[tuple[int, list[list[MemberRow]]]]] = {}
        self.server = ChannelServer(bind, self.authkey, self._deliver)
        self.host = host
        self.port = self.server.port

    def target(self, token: int, every_s: float = SEND_EVERY_S) -> LiveTarget:
        """What a stack's task needs to send its rows, tagged with ``token``."""
        return LiveTarget(self.host, self.port, self.authkey, token, every_s)

    def take(self) -> dict[int, list[tuple[int, list[list[MemberRow]]]]]:
        """Rows that arrived since the last call: token -> [(first epoch, rows)]."""
        with self._lock:
            arrived, self._arrived = self._arrived, {}
        return arrived

    def _deliver(self, message: Any) -> None:
        """A worker's message (in its connection's thread): ``[token, first_epoch, rows]``."""
        if not (isinstance(message, list) and len(message) == 3):
            raise ValueError(f"not a live rows message: {str(message)[:100]}")
        token, first_epoch, rows = message
        if not (isinstance(token, int) and isinstance(first_epoch, int) and first_epoch >= 0):
            raise ValueError(f"not a live rows message: {str(message)[:100]}")
        if not (isinstance(rows, list) and all(isinstance(row, list) for row in rows)):
            raise ValueError(f"not a live rows message: {str(message)[:100]}")
        with self._lock:
            self._arrived.setdefault(token, []).append((first_epoch, rows))

    def close(self) -> None:
        """Stop listening, and close the workers' connections."""
        self.server.close()


def member_rows(
    row: Mapping[str, Any], order: Sequence[int], alive: Sequence[bool]
) -> list[MemberRow]:
    """One epoch's row of ``[K]`` tensors (members in the fit's order) as one row per config
    (``order[m]`` is member m's config), ``None`` for members that have diverged."""
    values = {name: tensor.tolist() for name, tensor in row.items()}
    out: list[MemberRow] = [None] * len(order)
    for member, index in enumerate(order):
        if alive[member]:
            out[index] = {name: float(v[member]) for name, v in values.items()}
    return out


@dataclass
class _Training:
    """A stack whose runs are training: where its rows go, and how far they were written."""

    tracker: Any  # lossbench.tracking.writer.Tracker
    run_ids: list[str]
    series: list[dict[str, list[float]]]  # per run: metric -> its values, as arrived
    steps: list[dict[str, list[int]]]  # per run: metric -> each value's epoch
    written: list[int]  # per run: epochs written to the store


class LiveCurves:
    """The driver's side of live curves: collects the rows workers send (:class:`LiveRows`)
    into each training run's series, and every ``every_s`` seconds writes what is new through
    the stack's tracker (:meth:`lossbench.tracking.writer.Tracker.log_live`), holding ``lock``:
    the sweep holds it too for its own writes, so that one thread at a time writes. Flushes
    take at most a tenth of the time: after one that took t seconds, the next waits >= 9 t."""

    def __init__(self, host: str, every_s: float, lock: threading.Lock) -> None:
        self.rows = LiveRows(host)
        self.every_s = every_s
        self.lock = lock
        self._training: dict[int, _Training] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="lossbench-live-writer", daemon=True
        )
        self._thread.start()

    def target(self, token: int) -> LiveTarget:
        """What the task of stack ``token`` needs to send its rows."""
        return self.rows.target(token, min(SEND_EVERY_S, self.every_s))

    def add(self, token: int, tracker: Any, run_ids: Sequence[str]) -> None:
        """Stack ``token``'s runs (created RUNNING) start training. Call holding ``lock``."""
        n = len(run_ids)
        self._training[token] = _Training(
            tracker, list(run_ids), [{} for _ in range(n)], [{} for _ in range(n)], [0] * n
        )

    def remove(self, token: int) -> list[int] | None:
        """Stack ``token`` has ended: how many epochs of each run were written (the rest is
        for the caller to write), or ``None`` if it was never added. Call holding ``lock``."""
        training = self._training.pop(token, None)
        return None if training is None else training.written

    def flush(self) -> None:
        """Write the rows that arrived since the last flush. Call holding ``lock``."""
        for token, parts in self.rows.take().items():
            training = self._training.get(token)
            if training is None:
                continue
            for first_epoch, rows in parts:
                for offset, members in enumerate(rows):
                    epoch = first_epoch + offset
                    for series, steps, values in zip(
                        training.series, training.steps, members, strict=True
                    ):
                        # a retried stack sends its first epochs again: they are kept once
                        if values is not None and epoch == _epochs(series):
                            for name, value in values.items():
                                series.setdefault(name, []).append(value)
                                steps.setdefault(name, []).append(epoch)
        for training in self._training.values():
            lengths = [_epochs(series) for series in training.series]
            if lengths == training.written:
                continue
            try:
                training.tracker.log_live(
                    training.run_ids, training.series, training.written, training.steps
                )
            except Exception as err:  # the store is busy or gone: the runs' ends write it all
                log.warning("Live curves: could not write to the store (%s)", err)
                continue
            training.written = lengths

    def _loop(self) -> None:
        pause = max(self.every_s, 0.05)  # 0: as rows arrive
        while not self._stop.wait(pause):
            with self.lock:
                start = time.perf_counter()
                self.flush()
                took = time.perf_counter() - start
            # Live writes keep at most a tenth of this process's time, which also records runs
            # and feeds the workers: through MLflow's API a flush of many runs takes seconds.
            pause = max(self.every_s, 0.05, LIVE_SHARE_INVERSE * took)

    def close(self) -> None:
        """Stop writing and listening."""
        self._stop.set()
        self.rows.close()


def _epochs(series: Mapping[str, Sequence[float]]) -> int:
    return max((len(values) for values in series.values()), default=0)
