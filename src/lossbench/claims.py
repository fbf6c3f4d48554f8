"""Reported results as data, judged by their own sweeps: ``lossbench-claims [IDS...]``.

A claim is one YAML file under ``conf/claims/`` (no Python per claim): the statement, a sweep
(``base`` overrides, ``axes`` of named override sets, ``seeds``), the metric it reads and the
assertions to test. ``lossbench-claims`` trains whatever the store does not already hold (by
config hash, so nothing is trained twice), evaluates every assertion on the recorded metrics
and gives each claim a verdict:

- REPRODUCED: every assertion holds: the claimed direction, p < alpha, and an effect of at
  least ``min_effect`` (in the metric's units);
- NOT REPRODUCED: an assertion fails: the opposite direction is significant, or the effect is
  significant but smaller than ``min_effect``, or (for a range) the 95% CI lies outside it;
- INCONCLUSIVE: otherwise (not enough evidence either way).

See the README for the file format and a complete example.
"""

from __future__ import annotations

import argparse
import fnmatch
import itertools
import json
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lossbench import stats
from lossbench.config import CONF_DIR, ConfigError, RunSpec, config_hash, recorded_metrics

CLAIMS_DIR = CONF_DIR / "claims"
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"
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
COMPARE = ("less", "greater")
ORDER = ("decreasing", "increasing")
RANGE = ("within", "above", "below")
KINDS = (
    *COMPARE,
    *ORDER,
    *RANGE,
    "inside",
    "proportion_increases",
    "proportion_positive",
    "loss_value",
)
ASSERT_KEYS = {"metric", "alpha", "min_effect", "success", "low", "high", "min_share", "why"}


class ClaimError(ConfigError):
    """A claim file that cannot be evaluated; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------
# The file format


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


@dataclass
class Assertion:
    """One testable statement of a claim."""

    kind: str
    groups: list[str]
    metric: Selector | None
    alpha: float
    options: dict[str, Any]

    def describe(self) -> str:
        """The assertion in words."""
        g = self.groups
        what = self.metric.label() if self.metric else ""
        if self.kind in COMPARE:
            return f"{what}: {g[0]} {'<' if self.kind == 'less' else '>'} {g[1]}"
        if self.kind in ORDER:
            return f"{what}: {(' > ' if self.kind == 'decreasing' else ' < ').join(g)}"
        if self.kind == "within":
            return f"{what} of {g[0]} within {self.options['range']}"
        if self.kind in ("above", "below"):
            return f"{what} of {g[0]} {self.kind} {self.options['value']}"
        if self.kind == "inside":
            return f"{what} of {g[0]} inside [{self.options['low']}, {self.options['high']}]"
        if self.kind == "proportion_increases":
            return f"share of seeds with {what} {_success_text(self.options['success'])}: rises over {', '.join(g)}"
        if self.kind == "proportion_positive":
            return f"some seeds of {g[0]} reach {what} {_success_text(self.options['success'])}"
        return f"loss value: {self.options.get('why', '')}".strip()


def _success_text(success: Mapping[str, float]) -> str:
    return " ".join(f"{'≥' if k == 'at_least' else '≤'} {v:g}" for k, v in success.items())


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

    def group_names(self) -> str:
        """The valid group labels, for error messages."""
        return (
            "; ".join(f"{a}: {', '.join(labels)}" for a, labels in self.axes.items())
            or "none (no axes)"
        )

    @property
    def trains(self) -> bool:
        """Whether the claim needs a sweep (the worked-example checks need none)."""
        return any(a.kind != "loss_value" for a in self.assertions)


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
    alpha = float(raw.get("alpha", 0.05))
    default_metric = raw.get("metric")
    if not isinstance(raw.get("stack", True), bool):
        raise ClaimError(f"{name}: stack must be true or false, got {raw['stack']!r}")
    claim = Claim(str(raw["id"]), str(raw["claim"]).strip(), [str(s) for s in raw.get("sources") or []],
                  str(raw.get("setup") or "").strip(), _overrides(raw.get("base") or [], f"{name}: base"),
                  axes, list(seeds), [], path, bool(raw.get("stack", True)))  # fmt: skip
    for i, item in enumerate(raw["assert"]):
        where = f"{name}: assert[{i}]"
        if not isinstance(item, Mapping):
            raise ClaimError(f"{where}: expected a mapping with one of {', '.join(KINDS)}")
        kinds = [k for k in item if k in KINDS]
        if len(kinds) != 1:
            raise ClaimError(
                f"{where}: needs exactly one of {', '.join(KINDS)}; got {sorted(item)}"
            )
        kind = kinds[0]
        extra = sorted(set(item) - {kind} - ASSERT_KEYS)
        if extra:
            raise ClaimError(f"{where}: unknown keys {extra}; valid: {sorted(ASSERT_KEYS)}")
        body = item[kind]
        options: dict[str, Any] = {
            k: item[k]
            for k in ("min_effect", "success", "low", "high", "min_share", "why")
            if k in item
        }
        if kind in (*COMPARE, *ORDER, "proportion_increases"):
            groups = [str(g) for g in body] if isinstance(body, list) else []
            if len(groups) < 2:
                raise ClaimError(f"{where}: {kind} takes a list of at least two groups")
        elif kind in ("proportion_positive", "inside"):
            groups = [str(body)]
        elif kind in RANGE:
            if not isinstance(body, Mapping) or "group" not in body:
                raise ClaimError(
                    f"{where}: {kind} takes {{group: ..., {'range' if kind == 'within' else 'value'}: ...}}"
                )
            groups = [str(body["group"])]
            options.update({k: v for k, v in body.items() if k != "group"})
            if kind == "within" and not (
                isinstance(options.get("range"), list) and len(options["range"]) == 2
            ):
                raise ClaimError(f"{where}: within needs range: [low, high]")
        else:  # loss_value
            if not isinstance(body, Mapping) or not {"loss", "y_true", "y_pred"} <= set(body):
                raise ClaimError(
                    f"{where}: loss_value takes {{loss, y_true, y_pred, expected or reference, tol}}"
                )
            if "expected" not in body and "reference" not in body:
                raise ClaimError(
                    f"{where}: loss_value needs expected: <number> or reference: <function>"
                )
            groups, options = [], {**options, **body}
        if kind in ("proportion_increases", "proportion_positive") and not isinstance(
            options.get("success"), Mapping
        ):
            raise ClaimError(f"{where}: {kind} needs success: {{at_least: x}} or {{at_most: x}}")
        if kind == "inside" and not ({"low", "high"} <= set(options)):
            raise ClaimError(f"{where}: inside needs low: <metric> and high: <metric>")
        metric = None
        if kind != "loss_value":
            chosen = item.get("metric", default_metric)
            if chosen is None:
                raise ClaimError(
                    f"{where}: no metric (give one in the assertion or at the top of the file)"
                )
            metric = Selector.parse(chosen, where)
            if metric.spread_over is not None and metric.spread_over not in axes:
                raise ClaimError(
                    f"{where}: spread_over={metric.spread_over!r} is not an axis; axes: {sorted(axes)}"
                )
            for ref in groups:
                claim.resolve(ref)
        claim.assertions.append(
            Assertion(kind, groups, metric, float(item.get("alpha", alpha)), options)
        )
    if claim.trains and not claim.seeds:
        raise ClaimError(f"{name}: a claim that trains needs seeds: [...]")
    return claim


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


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class Evidence:
    """One assertion's outcome and its numbers."""

    assertion: Assertion
    verdict: str
    why: str
    groups: dict[str, stats.Interval] = field(default_factory=dict)  # group -> mean and CI
    effect: float = math.nan
    p_value: float = math.nan
    n: int = 0
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # group -> outcomes
    values: dict[str, dict[int, float]] = field(default_factory=dict)  # group -> seed -> value


@dataclass
class Verdict:
    """A claim's verdict and the evidence for each of its assertions."""

    claim: Claim
    verdict: str
    evidence: list[Evidence]
    run_ids: list[str] = field(default_factory=list)

    @property
    def deciding(self) -> Evidence:
        """The assertion that decided the verdict (the first failing one, else the weakest)."""
        for wanted in (NOT_REPRODUCED, INCONCLUSIVE):
            for e in self.evidence:
                if e.verdict == wanted:
                    return e
        with_p = [e for e in self.evidence if not math.isnan(e.p_value)]
        return max(with_p, key=lambda e: e.p_value) if with_p else self.evidence[0]


def combine(verdicts: Sequence[str]) -> str:
    """All reproduced: REPRODUCED; any not reproduced: NOT REPRODUCED; else INCONCLUSIVE."""
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return NOT_REPRODUCED if NOT_REPRODUCED in verdicts else INCONCLUSIVE


@dataclass
class RunData:
    """What evaluation reads of one run."""

    outcome: str  # finished, diverged, failed, killed, missing
    metrics: dict[str, float]
    histories: dict[str, list[float]]
    max_epochs: int
    run_id: str | None = None


def run_value(run: RunData, selector: Selector, name: str | None = None) -> float | None:
    """The number a run contributes; ``None`` if it contributes none (failed, missing)."""
    name = name or selector.name
    higher = stats.higher_is_better(name)
    if run.outcome == "diverged":
        return (-math.inf if higher else math.inf) if selector.diverged == "worst" else None
    if run.outcome != "finished":
        return None
    if selector.needs_history and name == selector.name:
        history = [v for v in run.histories.get(name, []) if math.isfinite(v)]
        if not history:
            return None
        if selector.ratio == "first/last":
            return history[0] / history[-1] if history[-1] else math.inf
        pick = {"first": history[0], "last": history[-1], "min": min(history), "max": max(history)}
        pick["best"] = max(history) if higher else min(history)
        return pick[selector.at]
    value = run.metrics.get(name)
    if value is None:
        return None
    if name == "target/epochs" and math.isnan(value):  # censored: at least max_epochs + 1
        return float(run.max_epochs + 1)
    return float(value)


def group_values(
    claim: Claim,
    ref: str,
    selector: Selector,
    runs: Mapping[tuple[Any, ...], RunData],
    name: str | None = None,
) -> tuple[dict[int, float], Counter[str]]:
    """Seed -> value for a group, and the outcomes of its runs."""
    wanted = claim.resolve(ref)
    by_seed: dict[int, list[float | None]] = {}
    outcomes: Counter[str] = Counter()
    for labels, seed, _ in claim.jobs():
        if any(labels[a] != label for a, label in wanted.items()):
            continue
        run = runs[_job_key(claim, labels, seed)]
        outcomes[run.outcome] += 1
        by_seed.setdefault(seed, []).append(run_value(run, selector, name))
    values: dict[int, float] = {}
    for seed, found in by_seed.items():
        if selector.spread_over is not None:
            finite = [v for v in found if v is not None and math.isfinite(v)]
            if len(finite) == len(found) and len(finite) > 1:
                values[seed] = float(np.std(finite, ddof=1))
        elif len(found) > 1:
            raise ClaimError(
                f"{claim.path.name}: group {ref!r} has {len(found)} runs per seed; name every axis "
                f"(axis=label,...) or give the metric a spread_over"
            )
        elif found[0] is not None:
            values[seed] = found[0]
    return values, outcomes


def _job_key(claim: Claim, labels: Mapping[str, str], seed: int) -> tuple[Any, ...]:
    return (claim.id, tuple(sorted(labels.items())), seed)


def _compare(
    a: dict[int, float], b: dict[int, float], kind: str, alpha: float, min_effect: float
) -> tuple[str, str, float, float]:
    """(verdict, why, effect, p) for "a less/greater than b"."""
    from scipy import stats as st

    if len(a) < 2 or len(b) < 2:
        return INCONCLUSIVE, "fewer than two runs in a group", math.nan, math.nan
    values = [*a.values(), *b.values()]
    if any(math.isinf(v) for v in values):  # diverged runs ranked worst: a rank test
        test = st.mannwhitneyu(list(a.values()), list(b.values()), alternative="two-sided")
        auc = test.statistic / (len(a) * len(b))
        effect, p = float(2 * auc - 1), float(test.pvalue)  # rank-biserial: > 0 when a > b
        diff = effect
        magnitude_ok = True
    else:
        c = stats.compare(a, b)
        effect, p, diff = c.effect, c.p_value, c.diff
        magnitude_ok = abs(diff) >= min_effect
    claimed = diff < 0 if kind == "less" else diff > 0
    if math.isnan(p) or p >= alpha:
        return INCONCLUSIVE, f"p = {p:.2g} ≥ alpha = {alpha:g}", effect, p
    if not claimed:
        return NOT_REPRODUCED, "the opposite is significant", effect, p
    if not magnitude_ok:
        return (
            NOT_REPRODUCED,
            f"significant but |difference| {abs(diff):.3g} < min_effect {min_effect:g}",
            effect,
            p,
        )
    return REPRODUCED, f"p = {p:.2g} < {alpha:g}", effect, p


def evaluate_assertion(
    claim: Claim, assertion: Assertion, runs: Mapping[tuple[Any, ...], RunData]
) -> Evidence:
    """Test one assertion on the claim's runs."""
    from scipy import stats as st

    kind, options, selector = assertion.kind, assertion.options, assertion.metric
    if kind == "loss_value":
        return _loss_value(assertion)
    assert selector is not None
    values, counts = {}, {}
    for ref in assertion.groups:
        values[ref], counts[ref] = group_values(claim, ref, selector, runs)
    intervals = {
        ref: stats.t_interval([v for v in vals.values() if math.isfinite(v)])
        for ref, vals in values.items()
    }
    n = min(len(v) for v in values.values())
    evidence = Evidence(assertion, INCONCLUSIVE, "", intervals, n=n, counts=counts, values=values)
    min_effect = float(options.get("min_effect", 0.0))

    if kind in COMPARE or kind in ORDER:
        pairs = [(assertion.groups[0], assertion.groups[1], kind)] if kind in COMPARE else [
            (g, h, "greater" if kind == "decreasing" else "less") for g, h in itertools.pairwise(assertion.groups)
        ]  # fmt: skip
        results = [
            _compare(values[g], values[h], k, assertion.alpha, min_effect) for g, h, k in pairs
        ]
        evidence.verdict = combine([r[0] for r in results])
        evidence.why = "; ".join(
            f"{g} vs {h}: {r[1]}" for (g, h, _), r in zip(pairs, results, strict=True)
        )
        worst = max(results, key=lambda r: 0 if math.isnan(r[3]) else r[3])
        evidence.effect, evidence.p_value = worst[2], worst[3]
        return evidence

    if kind in RANGE:
        ci = intervals[assertion.groups[0]]
        sample = [v for v in values[assertion.groups[0]].values() if math.isfinite(v)]
        if ci.n < 2:
            evidence.why = "fewer than two runs"
            return evidence
        if kind == "within":
            low, high = (float(x) for x in options["range"])
            p_low = float(st.ttest_1samp(sample, low, alternative="greater").pvalue)
            p_high = float(st.ttest_1samp(sample, high, alternative="less").pvalue)
            evidence.p_value = max(p_low, p_high)  # two one-sided tests (equivalence)
            center = (low + high) / 2
            evidence.effect = (ci.mean - center) / center if center else ci.mean - center
            outside = ci.high < low or ci.low > high
        else:
            threshold = float(options["value"])
            side = "greater" if kind == "above" else "less"
            evidence.p_value = float(st.ttest_1samp(sample, threshold, alternative=side).pvalue)
            evidence.effect = (ci.mean - threshold) / ci.std if ci.std else math.nan
            outside = ci.high < threshold if kind == "above" else ci.low > threshold
        if evidence.p_value < assertion.alpha:
            evidence.verdict, evidence.why = (
                REPRODUCED,
                f"p = {evidence.p_value:.2g} < {assertion.alpha:g}",
            )
        elif outside:
            evidence.verdict, evidence.why = NOT_REPRODUCED, "the 95% CI lies on the wrong side"
        else:
            evidence.why = f"p = {evidence.p_value:.2g} ≥ {assertion.alpha:g}"
        return evidence

    if kind == "inside":
        ref = assertion.groups[0]
        low_values, _ = group_values(claim, ref, selector, runs, str(options["low"]))
        high_values, _ = group_values(claim, ref, selector, runs, str(options["high"]))
        seeds = sorted(set(values[ref]) & set(low_values) & set(high_values))
        inside = [low_values[s] <= values[ref][s] <= high_values[s] for s in seeds]
        share = sum(inside) / len(inside) if inside else math.nan
        needed = float(options.get("min_share", 1.0))
        evidence.effect, evidence.n = share, len(inside)
        if not inside:
            evidence.why = "no runs"
        elif share >= needed:
            evidence.verdict, evidence.why = (
                REPRODUCED,
                f"{sum(inside)}/{len(inside)} runs inside (≥ {needed:.0%})",
            )
        else:
            evidence.verdict, evidence.why = (
                NOT_REPRODUCED,
                f"{sum(inside)}/{len(inside)} runs inside (< {needed:.0%})",
            )
        return evidence

    success = options["success"]

    def hits(vals: Mapping[int, float]) -> int:
        ok = [
            v >= success["at_least"] if "at_least" in success else v <= success["at_most"]
            for v in vals.values()
        ]
        return int(sum(ok))

    if kind == "proportion_positive":
        ref = assertion.groups[0]
        k, total = hits(values[ref]), len(values[ref])
        evidence.effect, evidence.n = (k / total if total else math.nan), total
        if total == 0:
            evidence.why = "no runs"
        elif k > 0:
            evidence.verdict, evidence.why = REPRODUCED, f"{k}/{total} seeds succeed"
        else:
            evidence.verdict, evidence.why = NOT_REPRODUCED, f"0/{total} seeds succeed"
        return evidence

    # proportion_increases: Fisher's exact test, last group against the first, one-sided
    shares = []
    for ref in assertion.groups:
        total = len(values[ref])
        shares.append((hits(values[ref]), total))
    (k0, n0), (k1, n1) = shares[0], shares[-1]
    table = [[k1, n1 - k1], [k0, n0 - k0]]
    p_up = float(st.fisher_exact(table, alternative="greater").pvalue) if n0 and n1 else math.nan
    p_down = float(st.fisher_exact(table, alternative="less").pvalue) if n0 and n1 else math.nan
    proportions = [k / n if n else math.nan for k, n in shares]
    monotone = all(a <= b for a, b in itertools.pairwise(proportions))
    evidence.p_value, evidence.effect = p_up, proportions[-1] - proportions[0]
    text = ", ".join(f"{g}: {k}/{n}" for g, (k, n) in zip(assertion.groups, shares, strict=True))
    if p_up < assertion.alpha and monotone:
        evidence.verdict, evidence.why = REPRODUCED, f"{text}; Fisher p = {p_up:.2g}"
    elif p_down < assertion.alpha or (p_up < assertion.alpha and not monotone):
        evidence.verdict, evidence.why = NOT_REPRODUCED, f"{text}; not rising"
    else:
        evidence.why = f"{text}; Fisher p = {p_up:.2g} ≥ {assertion.alpha:g}"
    return evidence


def _loss_value(assertion: Assertion) -> Evidence:
    """A loss of lossbench's on fixed numbers, against a value or a reference function."""
    import torch
    from hydra.utils import get_method

    from lossbench.config import build

    o = assertion.options
    loss = build(o["loss"])
    y_true = np.asarray(o["y_true"])
    y_pred = np.asarray(o["y_pred"], dtype=float)
    if o.get("y_pred_is", "prediction") == "probability":  # class probabilities -> logits
        p = y_pred[:, 1] if y_pred.ndim == 2 and y_pred.shape[1] == 2 else y_pred
        output = torch.as_tensor(np.log(p) - np.log1p(-p), dtype=torch.float64)[None, :, None]
        target = torch.as_tensor(y_true, dtype=torch.long)[None]
    else:
        output = torch.as_tensor(y_pred, dtype=torch.float64)[None, :, None]
        target = torch.as_tensor(y_true, dtype=torch.float64)[None]
    value = float(loss(output, target)[0])
    expected = (
        float(get_method(o["reference"])(y_true, y_pred))
        if "reference" in o
        else float(o["expected"])
    )
    tol = float(o.get("tol", 1e-6))
    ok = abs(value - expected) <= tol
    why = f"{value:.9g} vs {expected:.9g} ({'reference ' + o['reference'] if 'reference' in o else 'expected'}), tol {tol:g}"
    return Evidence(
        assertion, REPRODUCED if ok else NOT_REPRODUCED, why, effect=value - expected, n=1
    )


def evaluate(claim: Claim, runs: Mapping[tuple[Any, ...], RunData]) -> Verdict:
    """Judge a claim on its runs."""
    evidence = [evaluate_assertion(claim, a, runs) for a in claim.assertions]
    run_ids = sorted({r.run_id for key, r in runs.items() if key[0] == claim.id and r.run_id})
    return Verdict(claim, combine([e.verdict for e in evidence]), evidence, run_ids)


# ---------------------------------------------------------------------------------------------
# Running the sweeps


def run_claims(
    claims: Sequence[Claim], uri: str, experiment: str, n_jobs: int | None, sweep_dir: Path
) -> dict[tuple[Any, ...], RunData]:
    """Train what the store does not hold yet for these claims; return every job's run data."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from lossbench import sweep as sw
    from lossbench.interrupts import interrupts
    from lossbench.jobs import compose_jobs
    from lossbench.tracking.records import metric_histories
    from lossbench.tracking.writer import Tracker

    keys, overrides = [], []
    by_id = {claim.id: claim for claim in claims}
    for claim in claims:
        for labels, seed, job in claim.jobs():
            keys.append(_job_key(claim, labels, seed))
            overrides.append([*job, f"tracking.experiment={experiment}", f"tracking.uri={uri}"])
    if not keys:
        return {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("train", [], run_mode=RunMode.MULTIRUN)
        jobs = compose_jobs(loader, master, overrides, 0)
    GlobalHydra.instance().clear()
    specs = [job.spec for job in jobs]
    for spec in specs:
        spec.cfg["rerun"] = False

    n_workers = sw.worker_count(n_jobs, len(specs))
    executor = sw.make_executor(n_workers)
    interrupted = True
    try:
        with interrupts():
            facts = sw.check_all(specs, executor, n_workers)
            _check_metrics(claims, keys, specs, facts)
            runner = sw.StackRunner(sweep_dir, lambda job, result: None)
            done = runner.skip_completed(specs)
            alone = {i for i, key in enumerate(keys) if not by_id[key[0]].stack}
            for i in alone & set(done):  # a run trained in a stack does not time a run alone
                if done[i].tags.get("lossbench.members", "1") != "1":
                    del done[i]
            runner.adopt(done, specs)
            unique: dict[str, int] = {}  # the same config in several claims trains once
            for i, spec in enumerate(specs):
                if i not in done:
                    unique.setdefault(config_hash(spec.cfg), i)
            stacked = [i for i in unique.values() if i not in alone]
            stacks = sw.plan_stacks(stacked, specs, facts, True, 64)
            stacks += sw.plan_stacks(
                [i for i in unique.values() if i in alone], specs, facts, False, 1
            )
            print(f"{len(specs)} runs for {len(claims)} claims: {len(done)} already in the store, "
                  f"{len(specs) - len(done) - len(unique)} shared between claims, {len(unique)} to train "
                  f"as {len(stacks)} fits on {n_workers} worker(s)", flush=True)  # fmt: skip
            runner.run(stacks, executor, max(1, min(n_workers, len(stacks) or 1)))
        interrupted = False
    finally:
        sw.stop_executor(executor, kill=interrupted)

    tracker = Tracker(uri, experiment)
    latest = tracker.latest_runs()
    data: dict[tuple[Any, ...], RunData] = {}
    for key, spec in zip(keys, specs, strict=True):
        record = latest.get(config_hash(spec.cfg))
        max_epochs = int(spec.cfg["trainer"]["max_epochs"])
        if record is None:
            data[key] = RunData("missing", {}, {}, max_epochs)
        else:
            data[key] = RunData(record.outcome, record.metrics, {}, max_epochs, record.run_id)
    needed: dict[str, set[str]] = {}
    for claim in claims:
        for assertion in claim.assertions:
            if assertion.metric is not None and assertion.metric.needs_history:
                for key, run in data.items():
                    if key[0] == claim.id and run.run_id:
                        needed.setdefault(assertion.metric.name, set()).add(run.run_id)
    for name, run_ids in needed.items():
        histories = metric_histories(uri, sorted(run_ids), name)
        for run in data.values():
            if run.run_id in histories:
                run.histories[name] = histories[run.run_id]
    return data


def _check_metrics(
    claims: Sequence[Claim],
    keys: Sequence[tuple[Any, ...]],
    specs: Sequence[RunSpec],
    facts: Sequence[Mapping[str, Any]],
) -> None:
    """Every metric a claim reads must be one its runs record (before anything trains)."""
    by_claim = {}
    for key, spec, fact in zip(keys, specs, facts, strict=True):
        by_claim.setdefault(key[0], (spec, fact))
    for claim in claims:
        if claim.id not in by_claim:
            continue
        spec, fact = by_claim[claim.id]
        names = recorded_metrics(spec.cfg, str(fact["task"]))
        for i, assertion in enumerate(claim.assertions):
            wanted = [] if assertion.metric is None else [assertion.metric.name]
            wanted += [str(assertion.options[k]) for k in ("low", "high") if k in assertion.options]
            for metric in wanted:
                if not any(fnmatch.fnmatch(metric, pattern) for pattern in names):
                    raise ClaimError(
                        f"{claim.path.name}: assert[{i}] reads metric {metric!r}, which its runs do not "
                        f"record; they record: {', '.join(sorted(names))} (switch diagnostics on in "
                        "base for the others)"
                    )


# ---------------------------------------------------------------------------------------------
# Output


def _interval_text(ci: stats.Interval) -> str:
    if ci.n == 0:
        return "–"
    if math.isnan(ci.low):
        return f"{ci.mean:.4g} (n={ci.n})"
    return f"{ci.mean:.4g} ± {(ci.high - ci.low) / 2:.2g} (n={ci.n})"


def verdict_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    """One row per assertion: id, claim, verdict, assertion, groups, effect, p, n, why."""
    rows = []
    for v in verdicts:
        for i, e in enumerate(v.evidence):
            groups = "; ".join(f"{g}: {_interval_text(ci)}" for g, ci in e.groups.items())
            rows.append([
                v.claim.id if i == 0 else "", v.claim.claim if i == 0 else "", v.verdict if i == 0 else "",
                e.verdict, e.assertion.describe(), groups, f"{e.effect:.3g}", "–" if math.isnan(e.p_value) else f"{e.p_value:.2g}",
                str(e.n), e.why,
            ])  # fmt: skip
    return rows


HEADER = [
    "id",
    "claim",
    "verdict",
    "assertion verdict",
    "assertion",
    "groups: mean ± 95% CI",
    "effect",
    "p",
    "n",
    "why",
]


def print_verdicts(verdicts: Sequence[Verdict]) -> None:
    """The verdict table in the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 250)
    table = Table(title="claims", title_justify="left", show_lines=True)
    for name in HEADER:
        table.add_column(name, overflow="fold")
    colors = {REPRODUCED: "green", NOT_REPRODUCED: "red", INCONCLUSIVE: "yellow"}
    for row in verdict_rows(verdicts):
        row = [*row]
        for i in (2, 3):
            if row[i]:
                row[i] = f"[{colors[row[i]]}]{row[i]}[/]"
        table.add_row(*row)
    console.print(table)


def plot_claim(verdict: Verdict, out: Path) -> Path | None:
    """One figure per claim: a panel per assertion, the groups' values with their 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [e for e in verdict.evidence if e.groups or e.assertion.kind == "loss_value"]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, e in zip(axes[0], panels, strict=True):
        if e.assertion.kind == "loss_value":
            ax.axis("off")
            ax.text(
                0.5, 0.5, f"{e.verdict}\n{e.why}", ha="center", va="center", wrap=True, fontsize=8
            )
            continue
        names = list(e.groups)
        for x, name in enumerate(names):
            points = list(e.values[name].values())
            finite = [p for p in points if math.isfinite(p)]
            ax.scatter([x] * len(finite), finite, s=12, alpha=0.5, color="grey")
            diverged = (
                len(points)
                - len(finite)
                + e.counts[name].get("diverged", 0) * (e.assertion.metric.diverged == "exclude")
            )
            ci = e.groups[name]
            if ci.n:
                err = 0 if math.isnan(ci.low) else (ci.high - ci.low) / 2
                ax.errorbar([x], [ci.mean], yerr=[err], fmt="o", color="tab:blue", capsize=4)
            if diverged:
                ax.annotate(
                    f"{diverged} diverged",
                    (x, ax.get_ylim()[1]),
                    ha="center",
                    va="top",
                    fontsize=7,
                    color="tab:red",
                )
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{e.verdict}\n{e.assertion.describe()}", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{verdict.claim.id}: {verdict.claim.claim}", fontsize=9)
    fig.tight_layout()
    path = out / f"{verdict.claim.id}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(
    verdicts: Sequence[Verdict], out: Path, seconds: float, experiment: str, uri: str
) -> Path:
    """reports/claims.md with one section and one plot per claim."""
    figures = out / "claims"
    figures.mkdir(parents=True, exist_ok=True)
    counts = Counter(v.verdict for v in verdicts)
    lines = [
        "# Claims", "",
        f"{len(verdicts)} claims from `conf/claims/`, judged on runs of experiment `{experiment}` "
        f"in `{uri}` ({seconds:.0f} s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", "",
        "| id | claim | verdict | p | effect | n |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for v in verdicts:
        d = v.deciding
        p = "–" if math.isnan(d.p_value) else f"{d.p_value:.2g}"
        lines.append(
            f"| {v.claim.id} | {v.claim.claim} | **{v.verdict}** | {p} | {d.effect:.3g} | {d.n} |"
        )
    lines += ["", "Verdicts: REPRODUCED when every assertion holds (claimed direction, p < alpha, effect ≥ "
              "min_effect); NOT REPRODUCED when one fails (the opposite is significant, a significant "
              "effect is too small, a CI lies outside the claimed range); INCONCLUSIVE otherwise. "
              "Group values are means over seeds with Student's t 95% CIs; comparisons are paired by "
              "seed (paired t-test) or Welch's t-test, or a Mann-Whitney U test where diverged runs "
              "rank worst.", ""]  # fmt: skip
    for v in verdicts:
        c = v.claim
        lines += [
            f"## {c.id}: {c.claim}",
            "",
            f"Sources: {', '.join(c.sources) or '–'}. Verdict: **{v.verdict}**.",
            "",
        ]
        if c.setup:
            lines += [c.setup, ""]
        if c.trains:
            axes = "; ".join(f"{a} ∈ {{{', '.join(labels)}}}" for a, labels in c.axes.items())
            lines += [f"Sweep: `{' '.join(c.base)}`; {axes or 'no axes'}; seeds {c.seeds}.", ""]
        lines += [
            "| assertion | verdict | groups: mean ± 95% CI | effect | p | n | why |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in v.evidence:
            groups = "; ".join(f"{g}: {_interval_text(ci)}" for g, ci in e.groups.items())
            p = "–" if math.isnan(e.p_value) else f"{e.p_value:.2g}"
            lines.append(
                f"| {e.assertion.describe()} | {e.verdict} | {groups} | {e.effect:.3g} | {p} | {e.n} | {e.why} |"
            )
        plot = plot_claim(v, figures)
        if plot:
            lines += ["", f"![{c.id}](claims/{plot.name})"]
        if v.run_ids:
            lines += [
                "",
                f"MLflow runs: {len(v.run_ids)} (tag `lossbench.config_hash`; experiment `{experiment}`).",
            ]
        lines.append("")
    path = out / "claims.md"
    path.write_text("\n".join(lines))
    return path


def verdicts_json(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as data: id, verdict, p_value, effect, n (of the deciding assertion)."""

    def number(x: float) -> float | None:
        return None if math.isnan(x) or math.isinf(x) else x

    out = []
    for v in verdicts:
        d = v.deciding
        out.append({"id": v.claim.id, "verdict": v.verdict, "p_value": number(d.p_value), "effect": number(d.effect), "n": d.n,
                    "assertions": [{"assertion": e.assertion.describe(), "verdict": e.verdict, "p_value": number(e.p_value),
                                    "effect": number(e.effect), "n": e.n, "why": e.why} for e in v.evidence]})  # fmt: skip
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lossbench-claims``."""
    from lossbench.interrupts import Interrupted
    from lossbench.tracking.artifacts import log_report
    from lossbench.tracking.store import StoreUnreachable, tracking_uri
    from lossbench.tracking.sweeps import close_sweep, open_sweep, sweep_parent
    from lossbench.tracking.writer import Tracker

    parser = argparse.ArgumentParser(prog="lossbench-claims", description=__doc__.split("\n\n")[0])
    parser.add_argument("ids", nargs="*", help="claim ids (default: every claim in conf/claims/)")
    parser.add_argument(
        "--experiment", default="claims", help="MLflow experiment of the claims' runs"
    )
    parser.add_argument("--json", type=Path, help="also write the verdicts to this JSON file")
    parser.add_argument(
        "--out", type=Path, default=Path("reports"), help="report directory (default: reports)"
    )
    parser.add_argument(
        "--claims-dir", type=Path, default=CLAIMS_DIR, help="where the claim files are"
    )
    parser.add_argument("--n-jobs", type=int, help="worker processes (default: all cores)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: as training)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")

    start = time.perf_counter()
    uri = args.tracking_uri or tracking_uri({"root": "mlruns"})
    sweep_dir = Path("multirun") / "claims" / time.strftime("%Y-%m-%d_%H-%M-%S")
    tracker = Tracker(uri, args.experiment)
    try:
        claims = load_claims(args.ids, args.claims_dir)
        tracker.check_reachable()
        open_sweep(sweep_dir, [c.id for c in claims])
        runs = run_claims(claims, uri, args.experiment, args.n_jobs, sweep_dir)
        verdicts = [evaluate(claim, runs) for claim in claims]
    except (ConfigError, StoreUnreachable) as err:
        print(f"lossbench-claims: {err}", file=sys.stderr)
        return 2
    except Interrupted as interrupt:
        close_sweep(sweep_dir, "KILLED")
        print(f"lossbench-claims: {interrupt}", file=sys.stderr)
        return interrupt.exit_code
    seconds = time.perf_counter() - start
    print_verdicts(verdicts)
    report = write_report(verdicts, args.out, seconds, args.experiment, uri)
    print(f"Report: {report} (plots in {args.out / 'claims'})")
    parent = sweep_parent(sweep_dir, tracker).parent_run_id  # created here if nothing trained
    assert parent is not None
    log_report(uri, parent, args.out / "claims", "claims-report")
    log_report(uri, parent, report, "claims-report")
    close_sweep(sweep_dir, "FINISHED")
    print(f"Attached to MLflow run {parent} (artifacts/claims-report/)")
    if args.json:
        args.json.write_text(json.dumps(verdicts_json(verdicts), indent=2))
        print(f"Verdicts: {args.json}")
    counts = Counter(v.verdict for v in verdicts)
    print(
        f"{len(verdicts)} claims: "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + f". Total time {seconds:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
