"""A claim as data: the sweep it runs, the numbers it reads and the assertions it makes.

:mod:`lossbench.claims.load` reads these from YAML files (the README has the format);
:mod:`lossbench.claims.evaluate` judges them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.config.spec import ConfigError
from lossbench.problem import directions

RunKey = tuple[str, tuple[tuple[str, str], ...], int]  # claim id, (axis, label) pairs, seed
# times to diagnostics.target: runs that never reach it are censored (Kaplan–Meier, log-rank)
TIME_METRICS = ("target/epochs", "target/seconds")


class ClaimError(ConfigError):
    """A claim file that cannot be evaluated; the message names the file and the problem."""


@dataclass(frozen=True)
class Selector:
    """Which number a run contributes: a metric, where in its history, and how to treat
    diverged runs. ``spread_over`` turns a group's runs of each seed into one number: their
    standard deviation over that axis."""

    name: str
    at: str = "final"  # final (the recorded last value) | first | last | best | min | max
    ratio: str | None = None  # "first/last": the value at the first epoch over the last one
    spread_over: str | None = None
    diverged: str = "exclude"  # exclude (counted, left out) | worst (ranks below every run)

    @classmethod
    def parse(cls, value: Any, where: str) -> Selector:
        """From a metric name or a mapping of the fields."""
        if isinstance(value, str):
            return cls(value)
        if not isinstance(value, Mapping) or "name" not in value:
            raise ClaimError(
                f"{where}: metric must be a name or {{name: ..., at: ...}}, got {value!r}"
            )
        unknown = set(value) - {"name", "at", "ratio", "spread_over", "diverged"}
        if unknown:
            raise ClaimError(f"{where}: unknown metric keys {sorted(unknown)}")
        selector = cls(**dict(value))
        if selector.at not in ("final", "first", "last", "best", "min", "max"):
            raise ClaimError(
                f"{where}: metric at={selector.at!r}; valid: final, first, last, best, min, max"
            )
        if selector.ratio not in (None, "first/last"):
            raise ClaimError(f"{where}: metric ratio={selector.ratio!r}; valid: first/last")
        if selector.diverged not in ("exclude", "worst"):
            raise ClaimError(
                f"{where}: metric diverged={selector.diverged!r}; valid: exclude, worst"
            )
        return selector

    @property
    def needs_history(self) -> bool:
        """Whether the value comes from the per-epoch history rather than the final value."""
        return self.at != "final" or self.ratio is not None

    def label(self) -> str:
        """How the metric is named in reports."""
        text = self.name if self.at == "final" else f"{self.name} ({self.at})"
        if self.ratio:
            text = f"{self.name} first/last epoch"
        return f"spread over {self.spread_over} of {text}" if self.spread_over else text


@dataclass(frozen=True)
class Nuisance:
    """An axis of the claim whose value is not compared but chosen, per group: the value
    whose runs have the best mean ``select`` metric on the validation split (the README has
    the rules; :mod:`lossbench.claims.select` applies them)."""

    axis: str
    select: Selector  # a val/ metric
    higher: bool | None  # whether larger values of it are better (None: from the runs' config)
    mode: str | None = None  # as the claim file gives it: min, max or None

    def label(self) -> str:
        """How the selection is named in reports."""
        best = {True: "highest", False: "lowest", None: "best"}[self.higher]
        return f"{best} mean {self.select.label()}"


@dataclass
class Assertion:
    """One testable statement of a claim (its kinds: :data:`lossbench.claims.evaluate.KINDS`)."""

    kind: str
    groups: list[str]
    metric: Selector | None  # None for kinds that read no run (loss_value)
    alpha: float
    options: dict[str, Any]


@dataclass
class Claim:
    """A reported result as data."""

    id: str
    claim: str
    sources: list[str]
    setup: str
    base: list[str]
    axes: dict[str, dict[str, list[str]]]
    seeds: list[int]
    assertions: list[Assertion]
    path: Path
    stack: bool = True  # False: every run is its own fit (for claims about time per run)
    nuisance: Nuisance | None = None  # an axis chosen per group on validation, not compared

    def jobs(self) -> list[tuple[dict[str, str], int, list[str]]]:
        """Every (axis labels, seed, overrides) of the claim's sweep."""
        names = list(self.axes)
        out = []
        for labels in itertools.product(*(self.axes[a] for a in names)):
            chosen = dict(zip(names, labels, strict=True))
            extra = [o for a, label in chosen.items() for o in self.axes[a][label]]
            out += [(chosen, seed, [*self.base, *extra, f"seed={seed}"]) for seed in self.seeds]
        return out

    def resolve(self, ref: str) -> dict[str, str]:
        """A group reference (``label`` or ``axis=label,axis=label``; ``all`` for every run) as
        axis -> label."""
        if ref == "all":
            return {}
        if "=" in ref:
            chosen = dict(part.split("=", 1) for part in ref.split(","))
            for axis, label in chosen.items():
                if axis not in self.axes or label not in self.axes[axis]:
                    raise ClaimError(
                        f"{self.path.name}: unknown group {ref!r}; groups: {self.group_names()}"
                    )
            return chosen
        owners = [a for a, labels in self.axes.items() if ref in labels]
        if len(owners) != 1:
            problem = "unknown" if not owners else f"ambiguous (axes {owners})"
            raise ClaimError(
                f"{self.path.name}: {problem} group {ref!r}; groups: {self.group_names()}"
            )
        return {owners[0]: ref}

    def overrides(self) -> list[str]:
        """Every override of the claim's sweep: its base and all its axes' values."""
        return [
            *self.base,
            *(o for labels in self.axes.values() for os in labels.values() for o in os),
        ]

    def group_names(self) -> str:
        """The valid group labels, for error messages."""
        return (
            "; ".join(f"{a}: {', '.join(labels)}" for a, labels in self.axes.items())
            or "none (no axes)"
        )

    @property
    def trains(self) -> bool:
        """Whether the claim needs a sweep (the worked-example checks read no runs)."""
        return any(a.metric is not None for a in self.assertions)


def job_key(claim: Claim, labels: Mapping[str, str], seed: int) -> RunKey:
    """The key of one run of a claim's sweep in the run data that evaluation reads."""
    return (claim.id, tuple(sorted(labels.items())), seed)


def declared_here(name: str, overrides: list[str]) -> bool:
    """Whether a claim's overrides set a ``metrics:`` entry for the metric ``name``
    (``val/top2`` -> ``metrics.top2``): its direction is then the entry's."""
    entry = f"metrics.{name.partition('/')[2]}"
    return any(o.lstrip("+~").startswith((f"{entry}=", f"{entry}.")) for o in overrides)


def check_direction(
    name: str,
    mode: str | None,
    overrides: list[str],
    where: str,
    declared: dict[str, bool] | None = None,
) -> bool | None:
    """Whether higher values of ``name`` are better, for choosing or ranking by it: ``mode``
    (min, max) where given, else what the metric declares (:mod:`lossbench.problem.directions`;
    ``declared``: the runs' ``metrics:`` entries, when known). ``None`` when the claim's own
    overrides define the metric and ``declared`` is not known yet (checked again before
    training). ClaimError for a mode that contradicts the metric, or no direction at all."""
    if mode is not None and mode not in ("min", "max"):
        raise ClaimError(f"{where} mode={mode!r}; valid: min, max")
    implied = directions.direction(name, declared)
    if mode is not None and implied is not None and mode != implied:
        raise ClaimError(
            f"{where} mode={mode!r} contradicts {name!r}, where "
            f"{'higher' if implied == 'max' else 'lower'} is better"
        )
    if mode is not None or implied is not None:
        return (mode or implied) == "max"
    if declared is None and declared_here(name, overrides):
        return None
    raise ClaimError(
        f"{where} {name!r}: nothing says whether higher or lower is better; give mode: min or "
        f"mode: max (or declare metrics.<name>.{directions.KEY})"
    )
