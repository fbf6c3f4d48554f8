"""Imported by the local executor's fork server alone (one of its preloaded modules): when the
sweep ends, the server leaves its objects to the operating system.

The server imported torch, Lightning and scikit-learn to fork workers from; at exit, Python's
garbage collection walks all of it once more: 1.2 s of CPU after the sweep's own process has
ended, while it still holds the sweep's output pipes open. Frozen, they are not walked (atexit
handlers still run; the workers it forked end through ``os._exit`` and never run this).
"""

from __future__ import annotations

import atexit
import gc

atexit.register(gc.freeze)
