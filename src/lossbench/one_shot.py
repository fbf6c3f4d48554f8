"""Garbage collection for a command that builds one result and exits (``lossbench-report``).

Such a process allocates millions of objects that live until it ends (MLflow's and pandas'
modules, a store's runs), and Python's collector walks all of them again and again as they
grow: 1.4 s of a 300-run report's 6.8 s, plus 0.9 s for the collections at exit. Here the
youngest generation is collected after 100,000 allocations instead of 700 (cycles are still
collected, just less often), and at exit what remains is left to the operating system.
"""

from __future__ import annotations

import atexit
import gc

ALLOCATIONS_PER_COLLECTION = 100_000


def collect_rarely() -> None:
    """Collect garbage rarely from now on, and not at all at exit (atexit handlers run)."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(ALLOCATIONS_PER_COLLECTION, middle, oldest)
    atexit.register(gc.freeze)  # runs before the interpreter's own last collections
