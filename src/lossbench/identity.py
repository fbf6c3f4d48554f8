"""What counts as the same config: one canonical serialization, used for every identity.

The config hash (resume, claims, repro), stack keys, the check cache and the grouping of a
stack's recipes all serialize configs with :func:`canonical`: keys sorted, numbers by value
(``1`` and ``1.0`` are one value: whole floats are written as integers), booleans as booleans,
strings as strings, anything else by ``str``. So ``optimizer.lr=1`` and ``optimizer.lr=1.0``
are one config, while ``"1"`` (a string) and ``true`` stay apart from ``1``.

Light: the standard library only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Keys that do not change what a run computes: left out of params and of the config hash.
NON_RESULT_KEYS = ("tracking", "report", "rerun")


def _normal(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {str(key): _normal(value) for key, value in node.items()}
    if isinstance(node, list | tuple):
        return [_normal(value) for value in node]
    if isinstance(node, float) and node.is_integer():
        return int(node)
    return node


def canonical(node: Any) -> str:
    """The canonical text of a config or a part of one (see the module docstring)."""
    return json.dumps(_normal(node), sort_keys=True, default=str)


def config_hash(cfg: Mapping[str, Any]) -> str:
    """A short, stable hash of everything in a config that can change a run's results."""
    kept = {k: v for k, v in cfg.items() if k not in NON_RESULT_KEYS}
    return hashlib.sha256(canonical(kept).encode()).hexdigest()[:16]
