"""Unknown keys: every key of a run config is read by something, or the run is refused.

A key that nothing reads is still recorded as a param, so the run looks as if it used it:
``lossbench-train +lr=0.1`` trained at ``optimizer.lr=0.001`` and recorded ``lr=0.1``. What
reads a key, and so what is known, comes from the configs and the code, never from a list kept
by hand:

- the primary config's own keys (``conf/train.yaml``), the config groups, and the keys that a
  resolver of the config reads (``usual_lr`` for ``${usual_lr_times:F}``);
- a node with a ``_target_`` (model, loss, optimizer, scheduler, trainer, its callbacks, a
  dataset's source, a metric): the parameters of the target's signature (anything, where the
  target takes ``**kwargs``), and Hydra's own ``_partial_``, ``_convert_``, ...;
- another node (``dataset``, ``tracking``, ``penalty``, ``report``, ``diagnostics``): the keys
  its group's options (``conf/<group>/*.yaml``) or ``conf/train.yaml`` give it.

Light: reads YAML and imports a ``_target_`` to read its signature; no Hydra.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

# Keys Hydra's instantiate reads from a _target_ node
HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
# Keys a metrics entry holds besides its target's arguments (lossbench.problem.metrics.RESERVED_KEYS)
METRIC_KEYS = ("task", "every_epoch", "higher_is_better")
# Top-level keys a resolver of the config reads (lossbench.config.spec.usual_lr_times)
RESOLVER_KEYS = ("usual_lr",)
# Arguments lossbench passes itself, by component (the one signature of each kind): not keys
BOUND = {
    "model": ("in_features", "out_features", "seeds"),
    "optimizer": ("params",),
    "scheduler": ("optimizer", "max_epochs", "steps_per_epoch"),
    "dataset.source": ("seed",),
}


class UnknownKey(ValueError):
    """A config key that nothing reads; the message names it and the closest real key."""


@cache
def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    loaded = yaml.safe_load(path.read_text()) or {}
    return loaded if isinstance(loaded, dict) else {}


@cache
def _group_keys(conf_dir: Path, group: str) -> frozenset[str]:
    """The keys any option of a config group writes at its top level."""
    keys: set[str] = set()
    for option in (conf_dir / group).glob("*.yaml"):
        keys |= {str(k) for k in _yaml(option) if k != "defaults"}
    return frozenset(keys)


@cache
def _signature_keys(target: str) -> frozenset[str] | None:
    """The keyword arguments a ``_target_`` accepts; ``None`` when it accepts any (``**kwargs``)
    or cannot be read (it does not import: the builders that follow say so)."""
    from hydra.utils import get_object  # light: no composition machinery

    try:
        found = get_object(target)
        signature = inspect.signature(found)
    except Exception:  # noqa: BLE001 (an import error, or no signature: builtins)
        return None
    names = set()
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.add(parameter.name)
    return frozenset(names)


def _node_keys(node: Mapping[str, Any], extra: tuple[str, ...] = ()) -> frozenset[str] | None:
    """What a ``_target_`` node may hold, or ``None`` for anything."""
    accepted = _signature_keys(str(node["_target_"]))
    return None if accepted is None else accepted | set(HYDRA_KEYS) | set(extra)


def _schema(conf_dir: Path, groups: tuple[str, ...]) -> dict[str, frozenset[str] | None]:
    """Known keys of the top level and of each node that has no ``_target_`` (path -> keys)."""
    primary = _yaml(conf_dir / "train.yaml")
    top = {str(k) for k in primary if k not in ("defaults", "hydra")}
    schema: dict[str, frozenset[str] | None] = {
        "": frozenset(top | set(groups) | set(RESOLVER_KEYS))
    }
    for key, value in primary.items():
        if isinstance(value, Mapping) and key not in ("hydra", "metrics"):
            schema[str(key)] = frozenset(str(k) for k in value)
    for group in groups:
        schema[group] = _group_keys(conf_dir, group) | set(HYDRA_KEYS)
    schema["usual_lr"] = None  # optimizer name -> lr
    return schema


def _known(path: str, node: Mapping[str, Any], schema: Mapping[str, Any]) -> frozenset[str] | None:
    if "_target_" in node:
        metric = path.startswith("metrics.")
        known = _node_keys(node, METRIC_KEYS if metric else ())
        bound = BOUND.get(path, ())
        return None if known is None else known - set(bound)
    return schema.get(path)


def _walk(
    node: Mapping[str, Any], path: str, schema: Mapping[str, Any], found: list[tuple[str, Any]]
) -> list[str]:
    """Collect unknown keys (``found``) below ``node``; returns every known key path there."""
    known = _known(path, node, schema)
    paths: list[str] = []
    for key, value in node.items():
        where = f"{path}.{key}" if path else str(key)
        if known is not None and str(key) not in known:
            found.append((where, value))
            continue
        paths.append(where)
        if isinstance(value, Mapping) and (
            where == "metrics" or path == "metrics" or where in schema or "_target_" in value
        ):
            paths += _walk(value, where, schema, found)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, Mapping) and "_target_" in item:
                    paths += _walk(item, f"{where}[{i}]", schema, found)
    if known is not None and "_target_" in node:  # a signature's unset parameters are real keys
        paths += [f"{path}.{k}" for k in sorted(known) if k not in node and not k.startswith("_")]
    return paths


def _closest(key: str, known: list[str]) -> str | None:
    """The known key path most like ``key``: the same last part (``lr`` -> ``optimizer.lr``),
    else a near spelling of the last part, preferring the same parent."""
    parent, _, last = key.rpartition(".")
    by_last: dict[str, list[str]] = {}
    for path in known:
        by_last.setdefault(path.rpartition(".")[2], []).append(path)
    for name in [last, *difflib.get_close_matches(last, list(by_last), n=3, cutoff=0.7)]:
        if name in by_last:
            same_parent = [p for p in by_last[name] if p.rpartition(".")[0] == parent]
            return (same_parent or by_last[name])[0]
    return None


def check_known_keys(cfg: Mapping[str, Any], conf_dir: Path, groups: tuple[str, ...]) -> None:
    """Raise :class:`UnknownKey` for the first key of a resolved run config that nothing reads,
    naming it, the closest real key and the keys valid where it is."""
    schema = _schema(conf_dir, groups)
    found: list[tuple[str, Any]] = []
    known = _walk(cfg, "", schema, found)
    if not found:
        return
    key, value = found[0]
    closest = _closest(key, known)
    hint = f" Did you mean {closest}={value}?" if closest else ""
    parent = key.rpartition(".")[0]
    siblings = sorted(
        name
        for p in known
        if p.rpartition(".")[0] == parent and not (name := p.rpartition(".")[2]).startswith("_")
    )
    where = f"under {parent}" if parent else "at the top level"
    others = f" ({len(found) - 1} more unknown)" if len(found) > 1 else ""
    raise UnknownKey(
        f"unknown key {key}={value}: nothing reads it, so the run would train without it.{hint}"
        f" Keys {where}: {', '.join(siblings)}{others}"
    )
