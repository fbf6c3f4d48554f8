"""Reading claim files (``conf/claims/*.yaml``, one claim each) and checking them: every
problem is a :class:`ClaimError` naming the file and what is wrong.

:func:`read_claims` keeps going past a bad file, so that one broken claim does not stop the
others from being judged; :func:`load_claims` raises on the first problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lossbench.claims.evaluate import KINDS
from lossbench.claims.select import check_judged, parse_nuisance, selects
from lossbench.claims.spec import (
    TIME_METRICS,
    Assertion,
    Claim,
    ClaimError,
    Selector,
    declared_here,
)
from lossbench.config.spec import CONF_DIR
from lossbench.problem import directions

CLAIMS_DIR = CONF_DIR / "claims"
TOP_KEYS = {
    "id",
    "claim",
    "sources",
    "setup",
    "base",
    "axes",
    "seeds",
    "metric",
    "alpha",
    "stack",
    "nuisance",
    "assert",
}
# the type of each top-level value (base: see _overrides; stack: checked with its own message)
TOP_TYPES = {
    "sources": (list, "a list"),
    "seeds": (list, "a list"),
    "assert": (list, "a list"),
    "axes": (Mapping, "a mapping of axis -> label -> overrides"),
    "alpha": ((int, float), "a number"),
    "nuisance": (Mapping, "a mapping {axis: <an axis>, select: <a val/ metric>, mode: min|max}"),
}
# kinds that judge times to target (runs that never reach it censored): log-rank between groups
TIME_KINDS = ("less", "greater", "decreasing", "increasing", "beats", "proportion_increases",
              "proportion_positive")  # fmt: skip
OPTION_KEYS = ("min_effect", "success", "low", "high", "min_share", "margin", "across", "at_least",
               "mode", "why")  # fmt: skip
ASSERT_KEYS = {"metric", "alpha", *OPTION_KEYS}


class MissingClaim(ClaimError):
    """A claim id asked for that no claim file of the directory has."""


def _overrides(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise ClaimError(
            f"{where}: expected a list of overrides like [optimizer=sgd], got {value!r}"
        )
    return list(value)


def load_claim(path: Path) -> Claim:
    """Read and check one claim file; every problem raises :class:`ClaimError` naming it."""
    name = path.name
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ClaimError(f"{name}: not valid YAML ({err})") from err
    if not isinstance(raw, Mapping):
        raise ClaimError(f"{name}: expected a mapping with keys {sorted(TOP_KEYS)}")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ClaimError(f"{name}: unknown keys {unknown}; valid: {sorted(TOP_KEYS)}")
    for key in ("id", "claim"):
        if not raw.get(key):
            raise ClaimError(f"{name}: missing {key!r}")
    for key, (wanted, text) in TOP_TYPES.items():
        if raw.get(key) is not None and not isinstance(raw[key], wanted):
            raise ClaimError(f"{name}: {key} must be {text}, got {raw[key]!r}")
    if not raw.get("assert"):
        raise ClaimError(
            f"{name}: missing 'assert': a claim needs at least one assertion ({', '.join(KINDS)})"
        )
    axes: dict[str, dict[str, list[str]]] = {}
    for axis, labels in (raw.get("axes") or {}).items():
        if not isinstance(labels, Mapping) or not labels:
            raise ClaimError(f"{name}: axis {axis!r} must map labels to override lists")
        axes[str(axis)] = {
            str(lab): _overrides(o, f"{name}: axes.{axis}.{lab}") for lab, o in labels.items()
        }
    seeds = raw.get("seeds") or []
    if not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ClaimError(f"{name}: seeds must be integers >= 0, got {seeds!r}")
    if not isinstance(raw.get("stack", True), bool):
        raise ClaimError(f"{name}: stack must be true or false, got {raw['stack']!r}")
    claim = Claim(str(raw["id"]), str(raw["claim"]).strip(), [str(s) for s in raw.get("sources") or []],
                  str(raw.get("setup") or "").strip(), _overrides(raw.get("base") or [], f"{name}: base"),
                  axes, list(seeds), [], path, bool(raw.get("stack", True)))  # fmt: skip
    if raw.get("nuisance") is not None:
        claim.nuisance = parse_nuisance(raw["nuisance"], axes, name, claim.overrides())
    alpha = float(raw.get("alpha", 0.05))
    for i, item in enumerate(raw["assert"]):
        claim.assertions.append(
            _assertion(claim, item, f"{name}: assert[{i}]", alpha, raw.get("metric"))
        )
    if claim.trains and not claim.seeds:
        raise ClaimError(f"{name}: a claim that trains needs seeds: [...]")
    return claim


def _assertion(claim: Claim, item: Any, where: str, alpha: float, metric: Any) -> Assertion:
    """One entry of ``assert``; ``alpha`` and ``metric`` are the claim's defaults."""
    if not isinstance(item, Mapping):
        raise ClaimError(f"{where}: expected a mapping with one of {', '.join(KINDS)}")
    kinds = [k for k in item if k in KINDS]
    if len(kinds) != 1:
        raise ClaimError(f"{where}: needs exactly one of {', '.join(KINDS)}; got {sorted(item)}")
    kind = kinds[0]
    extra = sorted(set(item) - {kind} - ASSERT_KEYS)
    if extra:
        raise ClaimError(f"{where}: unknown keys {extra}; valid: {sorted(ASSERT_KEYS)}")
    if not isinstance(item.get("alpha", alpha), (int, float)):
        raise ClaimError(f"{where}: alpha must be a number, got {item['alpha']!r}")
    options = {k: item[k] for k in OPTION_KEYS if k in item}
    groups, options = KINDS[kind].parse(kind, item[kind], options, where)
    assertion = Assertion(kind, groups, None, float(item.get("alpha", alpha)), options)
    if not KINDS[kind].reads_runs:
        return assertion
    chosen = item.get("metric", metric)
    if chosen is None:
        raise ClaimError(
            f"{where}: no metric (give one in the assertion or at the top of the file)"
        )
    selector = assertion.metric = Selector.parse(chosen, where)
    _check_selector(claim, kind, selector, where)
    if selector.spread_over is not None and selector.spread_over not in claim.axes:
        raise ClaimError(
            f"{where}: spread_over={selector.spread_over!r} is not an axis; axes: {sorted(claim.axes)}"
        )
    for ref in groups:
        claim.resolve(ref)
    check_judged(claim, assertion, [selector.name, *(str(options[k]) for k in ("low", "high") if k in options)], where)  # fmt: skip
    if KINDS[kind].check is not None:
        KINDS[kind].check(claim, assertion, where)
    for ref in groups:
        _check_one_run_per_seed(claim, assertion, ref, where)
    if kind == "equivalent" and selector.diverged == "worst":
        raise ClaimError(
            f"{where}: equivalent compares means in the metric's units; diverged runs cannot rank "
            "worst there (leave diverged: exclude, the default)"
        )
    return assertion


def _check_selector(claim: Claim, kind: str, selector: Selector, where: str) -> None:
    """A time to target is judged with censoring (log-rank between groups), and ``at: best``
    and ``diverged: worst`` need a metric with a better end."""
    name = selector.name
    if name in TIME_METRICS:
        if kind not in TIME_KINDS:
            raise ClaimError(
                f"{where}: {kind} cannot judge {name!r}: runs that never reach the target count "
                f"as censored, which a mean cannot take; compare groups with "
                f"{', '.join(TIME_KINDS[:5])} (log-rank test), or judge target/reached"
            )
        if selector.needs_history or selector.spread_over:
            raise ClaimError(
                f"{where}: {name!r} is one number per run: no at, ratio or spread_over"
            )
    wants = [w for w, on in (("at: best", selector.at == "best"),
                             ("diverged: worst", selector.diverged == "worst")) if on]  # fmt: skip
    if wants and directions.direction(name) is None and not declared_here(name, claim.overrides()):
        raise ClaimError(
            f"{where}: {' and '.join(wants)} on {name!r}: it has no better end; read at: min or "
            f"at: max (or declare metrics.<name>.{directions.KEY})"
        )


def _check_one_run_per_seed(claim: Claim, assertion: Assertion, ref: str, where: str) -> None:
    """A group must name every axis with more than one value, but the one its metric spreads
    over and the nuisance axis it is chosen on: one run per seed."""
    assert assertion.metric is not None
    named = claim.resolve(ref)
    skip = {assertion.metric.spread_over, assertion.options.get("across")}  # across: problems
    if selects(claim, assertion):
        assert claim.nuisance is not None
        skip.add(claim.nuisance.axis)
    for axis, labels in claim.axes.items():
        if axis not in named and axis not in skip and len(labels) > 1:
            example = ",".join(
                [*(f"{a}={v}" for a, v in named.items()), f"{axis}={next(iter(labels))}"]
            )
            raise ClaimError(
                f"{where}: group {ref!r} leaves axis {axis!r} open ({len(labels)} runs per seed): "
                f"name it ({example}), give the metric spread_over: {axis}, make it the "
                "claim's nuisance axis, or its axis of problems (beats, ranks_first: across)"
            )


@dataclass
class ClaimFiles:
    """The claims of a directory, and what kept other files from loading."""

    directory: Path
    claims: dict[str, Claim] = field(default_factory=dict)  # id -> claim
    errors: list[ClaimError] = field(default_factory=list)  # one per problem, naming the file
    lost_ids: dict[str, str] = field(default_factory=dict)  # id -> why it cannot be judged

    def select(self, ids: Sequence[str] = ()) -> list[Claim]:
        """The claims with these ids (default: every claim that loaded), in id order. An id
        that is not there raises, saying so when a file that failed to load declares it."""
        if not ids:
            wanted = list(self.claims.values())
        else:
            missing = [i for i in ids if i not in self.claims]
            lost = [self.lost_ids[i] for i in missing if i in self.lost_ids]
            if lost:
                raise ClaimError("; ".join(lost))
            if missing:
                failed = f" ({len(self.errors)} file(s) failed to load)" if self.errors else ""
                raise MissingClaim(
                    f"no claim {missing} in {self.directory}{failed}; claims: "
                    f"{', '.join(sorted(self.claims))}"
                )
            wanted = [self.claims[i] for i in ids]
        repeated = sorted({i for i in ids if list(ids).count(i) > 1})
        if repeated:
            raise ClaimError(f"claim ids given twice: {repeated}")
        return sorted(wanted, key=lambda c: (len(c.id), c.id))


def read_claims(directory: Path = CLAIMS_DIR) -> ClaimFiles:
    """Every claim file of ``directory`` that loads, and an error for each that does not; an
    id used by two files is an error too, and neither claim is kept."""
    files = ClaimFiles(directory)
    by_id: dict[str, list[Claim]] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            claim = load_claim(path)
        except ClaimError as err:
            files.errors.append(err)
            declared = _declared_id(path)
            if declared:
                files.lost_ids[declared] = (
                    f"claim {declared!r} is in a file that failed to load: {err}"
                )
            continue
        by_id.setdefault(claim.id, []).append(claim)
    for claim_id, claims in by_id.items():
        if len(claims) == 1:
            files.claims[claim_id] = claims[0]
            continue
        names = ", ".join(c.path.name for c in claims)
        error = ClaimError(f"claim id {claim_id!r} used twice in {directory}: {names}")
        files.errors.append(error)
        files.lost_ids[claim_id] = f"claim {claim_id!r} is ambiguous: {error}"
    return files


def _declared_id(path: Path) -> str | None:
    """The id a file that failed to load says it has, if that much can be read."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return str(raw["id"]) if isinstance(raw, Mapping) and raw.get("id") else None


def load_claims(ids: Sequence[str] = (), directory: Path = CLAIMS_DIR) -> list[Claim]:
    """The claims of ``directory`` (all, or those with the given ids), in id order; the first
    problem with any file raises."""
    files = read_claims(directory)
    if files.errors:
        raise files.errors[0]
    return files.select(ids)
