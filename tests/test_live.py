"""Live curves: a stack's workers send their epochs' rows to the sweep's process, which writes
them every ``tracking.flush_every_s`` seconds, so that MLflow shows a RUNNING run's curves."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from lossbench.sweep import live_channel
from lossbench.sweep.live import LiveCurves, LiveRows, LiveSender, LiveTarget
from lossbench.sweep.live_channel import ChannelClient, ChannelError
from test_cli_reliability import command, runs, start, wait_for


class _Recorder:
    """A tracker that keeps what live curves write: (run ids, series copies, written)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[dict[str, list[float]]], list[int]]] = []

    def log_live(
        self,
        run_ids: Sequence[str],
        series: Sequence[Mapping[str, Sequence[float]]],
        written: Sequence[int],
        steps: Sequence[Mapping[str, Sequence[int]]],
    ) -> None:
        copies = [{k: list(v) for k, v in s.items()} for s in series]
        self.calls.append((list(run_ids), copies, list(written)))
        for values, epochs in zip(series, steps, strict=True):  # each value's epoch
            assert {k: len(v) for k, v in values.items()} == {k: len(e) for k, e in epochs.items()}


def _sent_and_flushed(curves: LiveCurves, token: int, batches: list[tuple[int, list]]) -> None:
    """Send rows as a worker does (over the socket), then flush once they have arrived."""
    sender = LiveSender(curves.target(token))
    for first, rows in batches:
        sender.first_epoch, sender.rows = first, rows
        sender.send()
    sender.close()
    deadline = time.monotonic() + 10
    while not curves.rows._arrived.get(token) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a second batch may still be on its way
    with curves.lock:
        curves.flush()


def test_rows_reach_the_right_runs_once_each_and_diverged_members_stop() -> None:
    lock = threading.Lock()
    curves = LiveCurves("127.0.0.1", 3600, lock)  # flushed by hand here
    tracker = _Recorder()
    try:
        with lock:
            curves.add(7, tracker, ["run-a", "run-b"])
        epoch0 = [{"val/loss": 1.0}, {"val/loss": 2.0}]
        epoch1 = [{"val/loss": 0.5}, None]  # run-b diverged in epoch 1
        _sent_and_flushed(curves, 7, [(0, [epoch0]), (1, [epoch1])])
        assert tracker.calls[-1] == (
            ["run-a", "run-b"],
            [{"val/loss": [1.0, 0.5]}, {"val/loss": [2.0]}],
            [0, 0],
        )
        # the stack was lost and retried: its new attempt sends epochs 0 to 2 again
        epoch2 = [{"val/loss": 0.25}, None]
        _sent_and_flushed(curves, 7, [(0, [epoch0, epoch1, epoch2])])
        assert tracker.calls[-1][1:] == (
            [{"val/loss": [1.0, 0.5, 0.25]}, {"val/loss": [2.0]}],
            [2, 1],
        )
        _sent_and_flushed(curves, 99, [(0, [epoch0])])  # a stack never added: dropped
        with lock:
            assert curves.remove(7) == [3, 1]  # epochs written: the rest is the stack's to write
        _sent_and_flushed(curves, 7, [(3, [epoch2])])  # late rows of a recorded stack: dropped
        assert len(tracker.calls) == 2
    finally:
        curves.close()


def test_a_worker_that_cannot_reach_the_driver_trains_on() -> None:
    rows = LiveRows()
    target = rows.target(1, every_s=0)
    rows.close()
    sender = LiveSender(target)
    sender(0, [{"val/loss": 1.0}])  # warns once, raises nothing
    sender(1, [{"val/loss": 0.5}])
    assert sender.broken


PEERS = ("silent", "garbage", "wrong_key")


class Peer:
    """A connection to the live listener that is no worker of the sweep, held open until
    :meth:`close` (or ``hold_s``): silent, sending garbage (a port scanner's probe, shorter than
    a handshake answer), or answering the handshake with the wrong key."""

    def __init__(self, kind: str, port: int, hold_s: float = 120) -> None:
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if kind == "garbage":
            self.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        elif kind == "wrong_key":
            hello = self.sock.recv(len(live_channel.MAGIC) + live_channel.NONCE_BYTES)
            nonce = hello[len(live_channel.MAGIC) :]
            self.sock.sendall(live_channel._digest(b"not the sweep's key", nonce))
        self.timer = threading.Timer(hold_s, self.close)
        self.timer.start()

    @property
    def open(self) -> bool:
        return self.sock.fileno() != -1

    def close(self) -> None:
        self.timer.cancel()
        self.sock.close()


def test_no_peer_delays_the_workers_and_a_wrong_key_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A silent, a garbage and a wrong-key peer hold connections to the listener: a worker
    connecting after them still gets its rows through at once; the wrong-key peer's rows never
    arrive; and the listener drops the silent and garbage peers after its handshake timeout."""
    monkeypatch.setattr(live_channel, "TIMEOUT_S", 1.0)
    rows = LiveRows()
    peers = [Peer(kind, rows.port) for kind in PEERS]
    try:
        with pytest.raises(ChannelError, match="refused this worker's key"):
            ChannelClient("127.0.0.1", rows.port, b"not the sweep's key", timeout_s=5)
        start = time.monotonic()
        sender = LiveSender(rows.target(3, every_s=0))
        sender(0, [{"val/loss": 1.0}])
        sender(1, [{"val/loss": 0.5}])
        sender.close()
        assert not sender.broken
        deadline = time.monotonic() + 5
        while len(rows._arrived.get(3, [])) < 2:
            assert time.monotonic() < deadline, "the worker's rows did not arrive"
            time.sleep(0.01)
        assert time.monotonic() - start < 0.9  # before any peer's handshake timed out
        assert rows.take() == {3: [(0, [[{"val/loss": 1.0}]]), (1, [[{"val/loss": 0.5}]])]}
        for peer in peers:  # each is closed by the listener: it reads the end of the stream
            peer.sock.settimeout(5)
            while peer.sock.recv(4096):
                pass
    finally:
        for peer in peers:
            peer.close()
        rows.close()


def test_a_worker_whose_driver_never_answers_trains_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listening socket that never answers (a hung driver, or no lossbench driver at all):
    the worker gives up after the channel's timeout, warns, and trains on."""
    monkeypatch.setattr(live_channel, "TIMEOUT_S", 0.5)
    with socket.create_server(("127.0.0.1", 0)) as hung:
        port = hung.getsockname()[1]
        sender = LiveSender(LiveTarget("127.0.0.1", port, b"key", token=1, every_s=0))
        start = time.monotonic()
        sender(0, [{"val/loss": 1.0}])
        sender(1, [{"val/loss": 0.5}])
        assert sender.broken and time.monotonic() - start < 3


@pytest.mark.slow
def test_curves_grow_in_mlflow_while_stacks_train_and_ctrl_c_keeps_them(
    tmp_path: Path, store_uri: str
) -> None:
    """Two stacks that would train for well over 20 s, one written through MLflow's API, one
    in SQL batches: every run's val/loss history grows while it is RUNNING. Then Ctrl+C stops
    the sweep: it exits 130, its runs and its parent run are KILLED, and the runs keep every
    epoch written, each once."""
    cmd = command(tmp_path, "live", "dataset.source.n_samples=200", "trainer.max_epochs=5000",
                  "seed=0,1", "tracking.sql_batches=false,true", "tracking.flush_every_s=1",
                  "hydra.launcher.n_jobs=2")  # fmt: skip
    process = start(cmd, store_uri)
    client = MlflowClient(store_uri)

    def lengths() -> dict[str, int]:
        return {
            r.info.run_id: len(client.get_metric_history(r.info.run_id, "val/loss"))
            for r in runs(store_uri, "live")
            if r.info.status == "RUNNING"
        }

    try:
        wait_for(lambda: len(lengths()) == 4 and min(lengths().values()) > 0)
        first = lengths()
        wait_for(lambda: all(n > first[run] for run, n in lengths().items()), timeout=30)
        assert set(lengths()) == set(first)  # still RUNNING: their curves grew as they trained
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl+C sends to the terminal's foreground
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted by SIGINT" in stdout + stderr
    recorded = {r.info.run_id: r for r in runs(store_uri, "live")}
    assert {r.info.status for r in recorded.values()} == {"KILLED"}
    assert {r.data.tags["lossbench.members"] for r in recorded.values()} == {"2"}  # two stacks
    [parent] = runs(store_uri, "live", "sweep")
    assert parent.info.status == "KILLED"
    for run_id in first:
        steps = [m.step for m in client.get_metric_history(run_id, "val/loss")]
        assert steps == list(range(len(steps))) and len(steps) > first[run_id]


def slow_metric(probs: Any, target: Any) -> Any:
    """A user metric that takes a while (as a costly one would): the end of each fit is slow,
    so live rows cover every epoch before the stack's result arrives."""
    time.sleep(0.3)
    return (probs.argmax(-1) == target).float().mean(-1)


@pytest.mark.slow
@pytest.mark.parametrize("sql", [False, True], ids=["api", "sql"])
def test_the_last_epoch_is_written_once_when_live_rows_covered_it(
    make_spec,
    store_uri: str,
    tmp_path: Path,
    sql: bool,  # noqa: ANN001
) -> None:
    """flush_every_s=0 and log_every_n_epochs=3 over 5 epochs, with a slow metric: live writes
    cover epochs 0-4 (writing 0 and 3), and the stack's end must still write epoch 4 (it was
    lost: the "final" val/loss was epoch 3's, and repro said NOT REPRODUCED)."""
    from lossbench.results import RunResult
    from lossbench.sweep.checking import check_specs
    from lossbench.sweep.executors import make_executor
    from lossbench.sweep.run import run_sweep

    experiment = f"last-epoch-{'sql' if sql else 'api'}"
    specs = [
        make_spec([
            "dataset.source.n_samples=200", "trainer.max_epochs=5", f"seed={seed}",
            f"tracking.uri={store_uri}", f"tracking.experiment={experiment}",
            "tracking.flush_every_s=0", "tracking.log_every_n_epochs=3",
            f"tracking.sql_batches={str(sql).lower()}",
            f"+metrics.slow={{_target_: {__name__}.slow_metric, task: classification}}",
        ])
        for seed in range(3)
    ]  # fmt: skip
    results: dict[int, RunResult] = {}
    run_sweep(specs, check_specs(specs), tmp_path, make_executor(1), 1, results.__setitem__)
    client = MlflowClient(store_uri)
    recorded = runs(store_uri, experiment)
    assert len(recorded) == 3
    by_seed = {int(r.data.params["seed"]): r for r in recorded}
    for seed, run in by_seed.items():
        result = results[seed]
        for name in ("val/loss", "train/loss"):
            history = client.get_metric_history(run.info.run_id, name)
            assert [m.step for m in history] == [0, 3, 4], name
            assert run.data.metrics[name] == result.series[name][4]  # the final is epoch 4's


@pytest.mark.slow
@pytest.mark.parametrize("kind", PEERS)
def test_a_peer_held_open_during_a_sweep_delays_nothing(
    make_spec,  # noqa: ANN001
    store_uri: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    """A peer connects to the sweep's live listener before any stack starts and holds its
    connection for the whole sweep. The sweep ends while the peer is still connected, every
    epoch of every stack arrived live meanwhile (each once), and every run has every epoch
    recorded once. (With the handshake on the accept path, a silent peer held the workers
    back until it disconnected.)"""
    import lossbench.sweep.live
    from lossbench.sweep.checking import check_specs
    from lossbench.sweep.executors import make_executor
    from lossbench.sweep.run import run_sweep

    epochs = 20
    opened: list[Any] = []

    class RowsWithPeer(LiveRows):
        """The sweep's listener, with the peer connected as it opens; counts the rows that
        arrive while the peer is connected: token -> first epochs of the messages."""

        def __init__(self, host: str = "127.0.0.1") -> None:
            super().__init__(host)
            self.peer = Peer(kind, self.port)
            self.received: dict[int, list[int]] = {}
            opened.append(self)

        def _deliver(self, message: Any) -> None:
            super()._deliver(message)
            if self.peer.open:
                token, first_epoch, rows = message
                self.received.setdefault(token, []).extend(
                    range(first_epoch, first_epoch + len(rows))
                )

    monkeypatch.setattr(lossbench.sweep.live, "LiveRows", RowsWithPeer)
    experiment = f"peer-{kind}"
    specs = [
        make_spec([
            "dataset.source.n_samples=200", f"trainer.max_epochs={epochs}", f"seed={seed}",
            f"tracking.uri={store_uri}", f"tracking.experiment={experiment}",
            "tracking.flush_every_s=0",
        ])
        for seed in range(2)
    ]  # fmt: skip
    run_sweep(specs, check_specs(specs), tmp_path, make_executor(1), 1, lambda *_: None,
              stack=False)  # fmt: skip
    [rows] = opened
    try:
        assert rows.peer.open  # the sweep ended while the peer held its connection
    finally:
        rows.peer.close()
    assert len(rows.received) == 2  # both stacks' rows arrived live, each epoch once
    assert all(sorted(got) == list(range(epochs)) for got in rows.received.values())
    client = MlflowClient(store_uri)
    recorded = runs(store_uri, experiment)
    assert len(recorded) == 2 and {r.info.status for r in recorded} == {"FINISHED"}
    for run in recorded:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
        assert sorted(steps) == list(range(epochs))
