"""The live channel: an authenticated TCP channel from training workers to the sweep's process
that no peer can stall (used by :mod:`lossbench.sweep.live`).

On Ray and SLURM the driver's listener binds every interface, so anything on the cluster's
network can connect to it: a port scanner, a stray client. The accept loop therefore never
talks to a peer: :class:`ChannelServer` is a :class:`socketserver.ThreadingTCPServer`, which
accepts each connection and hands it to a thread of its own, where the handshake must end
within :data:`TIMEOUT_S`. A peer that is silent, sends garbage or has the wrong key costs
only its own thread, for at most that long, and the server then closes it.

The protocol (``MAGIC`` names its version):

1. the server sends ``MAGIC`` and a random 16-byte nonce;
2. the client answers with HMAC-SHA256(key, ``MAGIC`` + nonce);
3. the server sends ``ACCEPTED`` if it matches, and closes the connection otherwise;
4. the client sends messages: a 4-byte big-endian length, then that many bytes of JSON
   (so a message can carry only data: nothing is unpickled).

The client (:class:`ChannelClient`) connects, authenticates and sends with the same timeout:
a driver that is gone, slow or not a lossbench driver raises :class:`OSError`, never hangs.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"lossbench-live-1\n"
NONCE_BYTES = 16
DIGEST_BYTES = 32  # SHA-256
ACCEPTED = b"+"
HEADER = struct.Struct(">I")  # a message's length
MAX_MESSAGE_BYTES = 64 << 20  # a worker sends about a second's rows at a time: far less
TIMEOUT_S = 10.0  # connect, handshake, and (client) each message sent


class ChannelError(OSError):
    """The other end does not speak the live channel's protocol, or refused our key."""


def _digest(key: bytes, nonce: bytes) -> bytes:
    return hmac.new(key, MAGIC + nonce, "sha256").digest()


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes from ``sock``; None if it closed before the first byte."""
    chunks, remaining = [], size
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise ChannelError("the connection closed in the middle of a message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Handler(socketserver.BaseRequestHandler):
    """One peer, in a thread of its own: the handshake (within the timeout), then messages."""

    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        server = self.server
        with server.lock:
            server.peers.add(sock)
        try:
            sock.settimeout(server.timeout_s)
            nonce = secrets.token_bytes(NONCE_BYTES)
            sock.sendall(MAGIC + nonce)
            answer = _recv_exactly(sock, DIGEST_BYTES)
            if answer is None or not hmac.compare_digest(answer, _digest(server.key, nonce)):
                log.debug("Live channel: refused a peer at %s (wrong key)", self.client_address)
                return
            sock.sendall(ACCEPTED)
            sock.settimeout(None)  # authenticated: a worker sends when it has rows
            while (header := _recv_exactly(sock, HEADER.size)) is not None:
                [length] = HEADER.unpack(header)
                if length > MAX_MESSAGE_BYTES:
                    raise ChannelError(f"a message of {length} bytes (at most {MAX_MESSAGE_BYTES})")
                payload = _recv_exactly(sock, length)
                if payload is None:
                    raise ChannelError("the connection closed in the middle of a message")
                server.deliver(json.loads(payload))
        except (OSError, ValueError) as err:  # timed out, garbage, closed: drop this peer only
            log.debug("Live channel: dropped a peer at %s (%s)", self.client_address, err)
        finally:
            with server.lock:
                server.peers.discard(sock)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a peer's thread never keeps the sweep's process alive
    allow_reuse_address = True
    request_queue_size = socket.SOMAXCONN  # many workers may connect at once

    def __init__(
        self, bind: str, key: bytes, deliver: Callable[[Any], None], timeout_s: float
    ) -> None:
        self.key = key
        self.deliver = deliver
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.peers: set[socket.socket] = set()
        super().__init__((bind, 0), _Handler)


class ChannelServer:
    """Listens on ``bind`` (a free port) for clients that know ``key``; calls
    ``deliver(message)`` in the peer's thread for each message an authenticated client sends."""

    def __init__(
        self, bind: str, key: bytes, deliver: Callable[[Any], None], timeout_s: float | None = None
    ) -> None:
        self._server = _Server(bind, key, deliver, TIMEOUT_S if timeout_s is None else timeout_s)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="lossbench-live",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop accepting, and close every peer's connection."""
        self._server.shutdown()
        self._server.server_close()
        with self._server.lock:
            peers = list(self._server.peers)
        for sock in peers:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class ChannelClient:
    """A connection to a :class:`ChannelServer` at ``host:port``, authenticated with ``key``.
    Connecting, the handshake and each :meth:`send` take at most ``timeout_s`` seconds, or
    raise :class:`OSError` (:class:`ChannelError` if the server refused the key or is not one)."""

    def __init__(self, host: str, port: int, key: bytes, timeout_s: float | None = None) -> None:
        timeout = TIMEOUT_S if timeout_s is None else timeout_s
        self._sock = socket.create_connection((host, port), timeout=timeout)
        try:
            hello = _recv_exactly(self._sock, len(MAGIC) + NONCE_BYTES)
            if hello is None or not hello.startswith(MAGIC):
                raise ChannelError(f"{host}:{port} is not a lossbench driver's live channel")
            self._sock.sendall(_digest(key, hello[len(MAGIC) :]))
            if _recv_exactly(self._sock, len(ACCEPTED)) != ACCEPTED:
                raise ChannelError(f"the driver at {host}:{port} refused this worker's key")
        except BaseException:
            self._sock.close()
            raise

    def send(self, message: Any) -> None:
        """Send ``message`` (anything JSON can encode)."""
        payload = json.dumps(message).encode()
        self._sock.sendall(HEADER.pack(len(payload)) + payload)

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()
