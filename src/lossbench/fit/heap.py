"""Keep a training process's memory flat from one fit to the next (glibc's heap).

A fit allocates tensors of a few MB each epoch (a stack's validation activations: members x
rows x width floats, 5 MB for 50 members of the standard workload) between small tensors that
live on (each epoch's row of metrics). glibc's malloc raises its mmap threshold after such a
block is freed, so later ones come from the heap, where the small survivors pin the holes
they leave: a worker's resident memory grew by 200-400 MB over a few stacks of the lr
workload, on top of its ~540 MB. A fixed threshold of 4 MB keeps those blocks out of the
heap (mapped and unmapped once each, a few per epoch); the per-step tensors, smaller, still
come from it. Measured on the lr workload's stacks: the worker stayed within 540-570 MB, with
no measurable cost in time.

Only glibc has ``mallopt``; elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 2**20  # blocks this large or larger are mapped, not taken from the heap
TRIM_THRESHOLD = 64 * 2**20  # free memory kept at the heap's top before it is given back

_done = False


def limit_heap_growth() -> bool:
    """Set glibc's mmap and trim thresholds for this process, once (fixed values: glibc's own
    adjustment of them is what lets the heap grow). Returns whether they are set."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the C library this process already runs on (find_library would run ldconfig in a
        # subprocess: a fork of a worker of 500 MB)
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: musl has no such function)
    except (OSError, AttributeError):
        return False
    # both set: fixing the mmap threshold alone leaves the trim threshold at 128 KB, and the
    # heap's top would be given back and faulted in again all the time
    _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done
