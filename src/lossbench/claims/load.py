"""Reading claim files (``conf/claims/*.yaml``, one claim each) and checking them: every
problem is a :class:`ClaimError` naming the file and what is wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lossbench.claims.evaluate import KINDS
from lossbench.claims.spec import Assertion, Claim, ClaimError, Selector
from lossbench.config import CONF_DIR

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
    "assert",
}
OPTION_KEYS = ("min_effect", "success", "low", "high", "min_share", "why")
ASSERT_KEYS = {"metric", "alpha", *OPTION_KEYS}


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
    options = {k: item[k] for k in OPTION_KEYS if k in item}
    groups, options = KINDS[kind].parse(kind, item[kind], options, where)
    selector = None
    if KINDS[kind].reads_runs:
        chosen = item.get("metric", metric)
        if chosen is None:
            raise ClaimError(
                f"{where}: no metric (give one in the assertion or at the top of the file)"
            )
        selector = Selector.parse(chosen, where)
        if selector.spread_over is not None and selector.spread_over not in claim.axes:
            raise ClaimError(
                f"{where}: spread_over={selector.spread_over!r} is not an axis; axes: {sorted(claim.axes)}"
            )
        for ref in groups:
            claim.resolve(ref)
    return Assertion(kind, groups, selector, float(item.get("alpha", alpha)), options)


def load_claims(ids: Sequence[str] = (), directory: Path = CLAIMS_DIR) -> list[Claim]:
    """The claims of ``directory`` (all, or those with the given ids), in id order."""
    claims = [load_claim(p) for p in sorted(directory.glob("*.yaml"))]
    if ids:
        by_id = {c.id: c for c in claims}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ClaimError(
                f"no claim {missing} in {directory}; claims: {', '.join(sorted(by_id))}"
            )
        claims = [by_id[i] for i in ids]
    ids_seen = Counter(c.id for c in claims)
    duplicated = [i for i, n in ids_seen.items() if n > 1]
    if duplicated:
        raise ClaimError(f"claim ids used twice in {directory}: {duplicated}")
    return sorted(claims, key=lambda c: (len(c.id), c.id))
