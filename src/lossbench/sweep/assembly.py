"""Templates of a sweep's jobs, and combinations of group options assembled from single-group
compositions (points 2 and 3 of :mod:`lossbench.sweep.jobs`): what each option writes is read
from its own file, and a combination is assembled only where the changed groups' options write
disjoint parts of the config; Hydra composes the rest.
"""

from __future__ import annotations

import copy
import functools
import pickle
from collections.abc import Sequence
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.types import Override, OverrideType
from omegaconf import MISSING, DictConfig, OmegaConf, read_write

from lossbench.config.spec import RunSpec, run_choices

Path = tuple[Any, ...]  # keys from the config's root to a node
# Parts of a composed config that Hydra fills from the overrides, not from config files
BOOKKEEPING: tuple[Path, ...] = (
    ("hydra", "overrides", "task"),
    ("hydra", "job", "override_dirname"),
    ("hydra", "runtime", "choices"),
)


def _is_group_choice(override: Override, loader: ConfigLoader) -> bool:
    """``group=option``: a choice that assembling may swap for another option."""
    return (
        override.type == OverrideType.CHANGE
        and override.package is None
        and not override.is_sweep_override()
        and not override.is_hydra_override()
        and isinstance(override.value(), str)
        and loader.repository.group_exists(override.key_or_group)  # type: ignore[attr-defined]
    )


def copy_plain(node: Any) -> Any:
    """A copy of plain containers (dicts and lists of immutable values): faster than deepcopy."""
    if isinstance(node, dict):
        return {k: copy_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [copy_plain(v) for v in node]
    return node


def needs_omegaconf(node: Any) -> bool:
    """Whether resolving a plain container could change it or fail (an interpolation, or a
    mandatory value still missing)."""
    if isinstance(node, dict):
        return any(needs_omegaconf(v) for v in node.values())
    if isinstance(node, list):
        return any(needs_omegaconf(v) for v in node)
    return isinstance(node, str) and ("${" in node or node == MISSING)


def _get(node: Any, path: Path) -> Any:
    for key in path:
        node = node[key]
    return node


class Template:
    """A composed config without the job's plain values: Hydra's own, or Hydra's base with the
    parts that single-group compositions changed (``parts``: path -> unresolved value, and the
    changed group choices). ``task`` is the config without ``hydra``, unresolved, as plain
    containers."""

    def __init__(
        self,
        base: DictConfig,
        task: dict[str, Any],
        choices: dict[str, Any],
        parts: Sequence[tuple[Path, Any]] = (),
        changed: dict[str, Any] | None = None,
    ) -> None:
        self.base, self.task, self.choices = base, task, choices
        self.parts, self.changed = list(parts), dict(changed or {})
        self.direct = not needs_omegaconf(task)
        self._spec: RunSpec | None = None
        self._pickled: bytes | None = None

    @classmethod
    def composed(cls, cfg: DictConfig, container: dict[str, Any]) -> Template:
        """Hydra's composed config (``container``: all of it as plain containers, unresolved)."""
        task = {k: v for k, v in container.items() if k != "hydra"}
        return cls(cfg, task, container["hydra"]["runtime"]["choices"])

    def config(self) -> DictConfig:
        """A new copy of the full config (with its ``hydra`` node)."""
        # Unpickling a DictConfig gives the same copy as deepcopy (nodes, flags, types) in a
        # fifth of the time (1 ms against 5 here): the launcher makes one per job. A config
        # that cannot be pickled (a structured config class defined in a function) is copied.
        if self._pickled is None:
            try:
                self._pickled = pickle.dumps(self.base, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, TypeError, AttributeError):
                self._pickled = b""
        cfg = pickle.loads(self._pickled) if self._pickled else copy.deepcopy(self.base)
        for path, value in self.parts:  # only outside ``hydra``: plain YAML values
            _get(cfg, path[:-1])[path[-1]] = copy_plain(value)
        with read_write(cfg.hydra):
            for group, option in self.changed.items():
                cfg.hydra.runtime.choices[group] = option
        return cfg

    @functools.cached_property
    def naming(self) -> dict[str, Any]:
        """``hydra.job.config.override_dirname``: how jobs' override_dirname is written."""
        naming = OmegaConf.to_container(self.base.hydra.job.config.override_dirname, resolve=True)
        assert isinstance(naming, dict)
        return naming

    def spec(self) -> RunSpec:
        """The resolved run spec of a config without interpolations (``direct``)."""
        assert self.direct
        if self._spec is None:
            self._spec = RunSpec(self.task, run_choices(self.choices))
        return self._spec


# ---------------------------------------------------------------------------------------------
# Assembling combinations of group options from single-group compositions


def _related(a: Path, b: Path) -> bool:
    """One path is the other or lies under it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _diff(a: Any, b: Any, path: Path = ()) -> list[Path]:
    """Where two containers differ: the highest paths below which nothing else is equal
    (a dict with other keys, or the same keys in another order, differs as a whole)."""
    if path in BOOKKEEPING:
        return []
    if isinstance(a, dict) and isinstance(b, dict) and list(a) == list(b):
        return [p for key in a for p in _diff(a[key], b[key], (*path, key))]
    same = type(a) is type(b) and repr(a) == repr(b)  # repr: 1 != 1.0 != True, key order
    return [] if same else [path]


def _within(paths: list[Path], cfg: dict[str, Any]) -> bool:
    """Every path leads to a value in the config."""
    for path in paths:
        node = cfg
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False
            node = node[key]
    return True


def _leaves(node: Any, path: Path) -> list[Path]:
    """The paths a config file writes when merged at ``path``."""
    if isinstance(node, dict) and node:
        return [p for key, value in node.items() for p in _leaves(value, (*path, key))]
    return [path]


def _package(header: str | None, group: str) -> Path | None:
    """Where an option of a group listed in the primary config's defaults (without a package
    of its own) is merged: its ``@package`` header, or the group. ``None``: a header this
    simple rule does not cover."""
    if header is None:
        return tuple(group.split("/"))
    if "_global_" in header:
        header = header[header.rfind("_global_") + len("_global_") :].lstrip(".")
    if any(magic in header for magic in ("_group_", "_name_", "_here_")):
        return None
    return tuple(header.split(".")) if header else ()


class _Writes:
    """What each option of a group writes (its keys under its package), read from its own
    file; ``None`` for an option whose writes these rules cannot tell (a defaults list of its
    own, a header they do not cover, a group the primary config lists with a package)."""

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.sources = loader.get_sources()
        used = [(s.provider, s.schema, s.path) for s in master.hydra.runtime.config_sources]
        # the sources Hydra composed the master config from, and no search path of the app's
        self.usable = used == [(s.provider, s.scheme(), s.path) for s in self.sources] and not (
            master.hydra.searchpath
        )
        self.cache: dict[tuple[str, str], list[Path] | None] = {}
        primary = self._load(str(master.hydra.job.config_name)) if self.usable else None
        self.plain_groups: set[str] = set()
        if primary is not None and primary.header.get("package") is None:
            for entry in primary.config.get("defaults") or []:
                if OmegaConf.is_dict(entry) and len(entry) == 1:
                    words = str(next(iter(entry))).split()
                    if "@" not in words[-1] and set(words[:-1]) <= {"optional"}:
                        self.plain_groups.add(words[-1])

    def _load(self, path: str) -> Any:
        for source in self.sources:
            if source.is_config(path):
                return source.load_config(path)
        return None

    def __call__(self, group: str, option: str) -> list[Path] | None:
        key = (group, option)
        if key not in self.cache:
            self.cache[key] = self._writes(group, option)
        return self.cache[key]

    def _writes(self, group: str, option: str) -> list[Path] | None:
        if group not in self.plain_groups:
            return None
        loaded = self._load(f"{group}/{option}")
        if loaded is None or not OmegaConf.is_dict(loaded.config) or "defaults" in loaded.config:
            return None
        package = _package(loaded.header.get("package"), group)
        if package is None:
            return None
        return _leaves(OmegaConf.to_container(loaded.config, resolve=False), package)


class Composer:
    """Templates per set of structural overrides (see the module docstring)."""

    def __init__(self, loader: ConfigLoader, master: DictConfig) -> None:
        self.loader, self.master = loader, master
        self.writes = _Writes(loader, master)
        self.templates: dict[tuple[str, ...], Template] = {}
        self.composed: dict[tuple[str, ...], dict[str, Any]] = {}  # as plain containers
        self.bases: dict[tuple[Any, ...], list[Override]] = {}  # pattern -> the base's overrides
        self.changes: dict[tuple[str, ...], tuple[list[Path], list[Path]] | None] = {}

    def template(self, structural: list[Override]) -> Template:
        """The template of one job's structural overrides (in the job's order)."""
        lines = tuple(o.input_line for o in structural)
        if lines not in self.templates:
            template = self._assemble(structural)
            if template is None:
                cfg = self.loader.load_sweep_config(self.master, list(lines))
                container = OmegaConf.to_container(cfg, resolve=False)
                assert isinstance(container, dict)
                self.composed[lines] = container  # type: ignore[assignment]
                template = Template.composed(cfg, container)  # type: ignore[arg-type]
            self.templates[lines] = template
        return self.templates[lines]

    def _assemble(self, structural: list[Override]) -> Template | None:
        """The template assembled from the base and single-group compositions already made,
        or None when that would not be exact (see the module docstring)."""
        if not self.writes.usable:
            return None
        is_choice = [_is_group_choice(o, self.loader) for o in structural]
        groups = [o.key_or_group for o, c in zip(structural, is_choice, strict=True) if c]
        if len(set(groups)) != len(groups):
            return None
        pattern = tuple(
            o.key_or_group if c else o.input_line
            for o, c in zip(structural, is_choice, strict=True)
        )
        base_overrides = self.bases.setdefault(pattern, structural)
        base_lines = tuple(o.input_line for o in base_overrides)
        lines = tuple(o.input_line for o in structural)
        changed = [i for i, (a, b) in enumerate(zip(base_lines, lines, strict=True)) if a != b]
        if len(changed) < 2 or base_lines not in self.composed:
            return None
        changes = []
        for i in changed:
            single = (*base_lines[:i], lines[i], *base_lines[i + 1 :])
            if single not in self.changes:
                self.changes[single] = self._change(base_overrides, i, structural[i], single)
            changes.append(self.changes[single])
        for a, first in enumerate(changes):  # the changed groups write disjoint parts
            if first is None:
                return None
            for second in changes[a + 1 :]:
                if second is None or any(_related(p, q) for p in first[1] for q in second[1]):
                    return None
        base = self.composed[base_lines]
        task = copy_plain({k: v for k, v in base.items() if k != "hydra"})
        edits = []
        for i, change in zip(changed, changes, strict=True):
            single = self.composed[(*base_lines[:i], lines[i], *base_lines[i + 1 :])]
            for path in change[0]:  # type: ignore[index]
                edits.append((path, _get(single, path)))
                _get(task, path[:-1])[path[-1]] = copy_plain(_get(single, path))
        changed_choices = {structural[i].key_or_group: structural[i].value() for i in changed}
        choices = {**base["hydra"]["runtime"]["choices"], **changed_choices}
        base_cfg = self.templates[base_lines].base
        return Template(base_cfg, task, choices, edits, changed_choices)

    def _change(
        self, base: list[Override], i: int, option: Override, single: tuple[str, ...]
    ) -> tuple[list[Path], list[Path]] | None:
        """Where changing one group of the base changes the config (the composition of that
        single change, already made, against the base's), and what the group's options write;
        None when the options' own keys do not explain the difference."""
        group = option.key_or_group
        mine = self.writes(group, option.value())
        theirs = self.writes(group, base[i].value())
        other = self.composed.get(single)
        if other is None or mine is None or theirs is None:
            return None
        base_cfg = self.composed[tuple(o.input_line for o in base)]
        expected = {**base_cfg["hydra"]["runtime"]["choices"], group: option.value()}
        if other["hydra"]["runtime"]["choices"] != expected:
            return None  # the option changed another group's choice
        paths = _diff(base_cfg, other)
        written = mine + theirs
        explained = all(
            path[:1] not in ((), ("hydra",)) and any(_related(path, w) for w in written)
            for path in paths
        )
        if not (explained and _within(mine, other) and _within(theirs, base_cfg)):
            return None
        return paths, written + paths
