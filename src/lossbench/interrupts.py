"""Ctrl+C and SIGTERM, handled the same way everywhere.

While training, both signals raise :class:`Interrupted`. It is not a ``KeyboardInterrupt``:
Lightning answers that with ``sys.exit(1)`` and ignores Ctrl+C from then on, which would abort
a Hydra sweep without giving anyone the chance to mark the interrupted runs KILLED. Whoever
catches ``Interrupted`` records what was running as KILLED, then lets it go on to the command's
entry point, which exits with 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(BaseException):
    """The process received SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number."""
        return 128 + self.signum


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def interrupts() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only: other
    threads cannot install handlers, and do not receive signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
