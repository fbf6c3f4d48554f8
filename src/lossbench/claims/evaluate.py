"""Judging claims on their runs' numbers: one entry per assertion kind in :data:`KINDS`, each
saying how the kind is read from a claim file, how it reads in words and how it is tested.

The verdict rules are in :mod:`lossbench.claims` (the package docstring) and the README.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossbench.claims import across, equivalence
from lossbench.claims.evidence import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Evidence,
    Runs,
    group_values,
    pair_test,
)
from lossbench.claims.select import measure
from lossbench.claims.spec import Assertion, Claim, ClaimError


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


def evaluate(claim: Claim, runs: Runs) -> Verdict:
    """Judge a claim on its runs; refuse to (INCONCLUSIVE, saying why) where any of them
    failed the audit (a stacked member that did not train as its plain model alone)."""
    mine = {key: r for key, r in runs.items() if key[0] == claim.id}
    run_ids = sorted({r.run_id for r in mine.values() if r.run_id})
    failed = sorted({r.run_id or "?" for r in mine.values() if r.audit == "failed"})
    if failed:
        why = (
            f"refused: {len(failed)} run(s) failed the audit (a stacked member did not train as "
            f"its plain model alone: {', '.join(failed[:3])}{', ...' if len(failed) > 3 else ''}"
            "); re-run them with hydra.launcher.stack=false (rerun=true)"
        )
        evidence = [Evidence(a, INCONCLUSIVE, why) for a in claim.assertions]
        return Verdict(claim, INCONCLUSIVE, evidence, run_ids)
    evidence = [evaluate_assertion(claim, a, runs) for a in claim.assertions]
    return Verdict(claim, combine([e.verdict for e in evidence]), evidence, run_ids)


def evaluate_assertion(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """Test one assertion on the claim's runs."""
    return KINDS[assertion.kind].judge(claim, assertion, runs)


def describe(assertion: Assertion) -> str:
    """The assertion in words."""
    return KINDS[assertion.kind].describe(assertion)


# ---------------------------------------------------------------------------------------------
# The kinds. Each reads its YAML value with ``parse(kind, value, options, where)``, given the
# assertion's common options (min_effect, success, low, high, min_share, margin, across,
# at_least, mode, why); it returns the
# groups and the options, or raises ClaimError.

Parsed = tuple[list[str], dict[str, Any]]  # the assertion's groups and options


@dataclass(frozen=True)
class Kind:
    """One assertion kind: how it is read from a claim file, said in words and judged."""

    parse: Callable[[str, Any, dict[str, Any], str], Parsed]
    describe: Callable[[Assertion], str]
    judge: Callable[[Claim, Assertion, Runs], Evidence]
    reads_runs: bool = True  # False: judged on numbers in the claim file (loss_value)
    check: Callable[[Claim, Assertion, str], None] | None = None  # against the claim, at load


def _what(assertion: Assertion) -> str:
    return assertion.metric.label() if assertion.metric else ""


# -- less, greater; decreasing, increasing: two-sided tests between groups, per pair


def _parse_groups(kind: str, value: Any, options: dict[str, Any], where: str) -> Parsed:
    groups = [str(g) for g in value] if isinstance(value, list) else []
    if len(groups) < 2:
        raise ClaimError(f"{where}: {kind} takes a list of at least two groups")
    return groups, options


def _describe_compare(a: Assertion) -> str:
    return f"{_what(a)}: {a.groups[0]} {'<' if a.kind == 'less' else '>'} {a.groups[1]}"


def _describe_order(a: Assertion) -> str:
    return f"{_what(a)}: {(' > ' if a.kind == 'decreasing' else ' < ').join(a.groups)}"


def _judge_pairs(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """less/greater: one pair; decreasing/increasing: each neighbouring pair. The weakest
    pair's effect and p are the assertion's."""
    evidence = measure(claim, assertion, runs)
    g, kind = assertion.groups, assertion.kind
    if kind in ("less", "greater"):
        pairs = [(g[0], g[1], kind)]
    else:
        direction = "greater" if kind == "decreasing" else "less"
        pairs = [(a, b, direction) for a, b in itertools.pairwise(g)]
    min_effect = float(assertion.options.get("min_effect", 0.0))
    results = [pair_test(evidence, a, b, k, assertion.alpha, min_effect) for a, b, k in pairs]
    evidence.verdict = combine([r.verdict for r in results])
    evidence.why = "; ".join(
        f"{a} vs {b}: {r.why}" for (a, b, _), r in zip(pairs, results, strict=True)
    )
    worst = max(results, key=lambda r: 0 if math.isnan(r.p_value) else r.p_value)
    evidence.effect, evidence.p_value = worst.effect, worst.p_value
    evidence.effect_kind = worst.effect_kind
    return evidence


# -- within, above, below: one group's mean against fixed values, one-sided t-tests


def _parse_range(kind: str, value: Any, options: dict[str, Any], where: str) -> Parsed:
    bound = "range" if kind == "within" else "value"
    if not isinstance(value, Mapping) or "group" not in value:
        raise ClaimError(f"{where}: {kind} takes {{group: ..., {bound}: ...}}")
    options = {**options, **{k: v for k, v in value.items() if k != "group"}}
    if kind == "within" and not (
        isinstance(options.get("range"), list) and len(options["range"]) == 2
    ):
        raise ClaimError(f"{where}: within needs range: [low, high]")
    if kind != "within" and "value" not in options:
        raise ClaimError(f"{where}: {kind} needs value: <number>")
    return [str(value["group"])], options


def _describe_range(a: Assertion) -> str:
    if a.kind == "within":
        return f"{_what(a)} of {a.groups[0]} within {a.options['range']}"
    return f"{_what(a)} of {a.groups[0]} {a.kind} {a.options['value']}"


def _judge_range(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """within: two one-sided tests (equivalence); above/below: one. NOT REPRODUCED when the
    95% CI lies on the wrong side."""
    from scipy import stats as st

    evidence = measure(claim, assertion, runs)
    ref, options = assertion.groups[0], assertion.options
    ci = evidence.groups[ref]
    sample = [v for v in evidence.values[ref].values() if math.isfinite(v)]
    if ci.n < 2:
        evidence.why = "fewer than two runs"
        return evidence
    if assertion.kind == "within":
        low, high = (float(x) for x in options["range"])
        p_low = float(st.ttest_1samp(sample, low, alternative="greater").pvalue)
        p_high = float(st.ttest_1samp(sample, high, alternative="less").pvalue)
        evidence.p_value = max(p_low, p_high)
        center = (low + high) / 2
        evidence.effect = (ci.mean - center) / center if center else ci.mean - center
        evidence.effect_kind = "(mean − centre) / centre" if center else "mean − centre, units"
        outside = ci.high < low or ci.low > high
    else:
        threshold = float(options["value"])
        side = "greater" if assertion.kind == "above" else "less"
        evidence.p_value = float(st.ttest_1samp(sample, threshold, alternative=side).pvalue)
        evidence.effect = (ci.mean - threshold) / ci.std if ci.std else math.nan
        evidence.effect_kind = "(mean − value) / sd"
        outside = ci.high < threshold if assertion.kind == "above" else ci.low > threshold
    if evidence.p_value < assertion.alpha:
        evidence.verdict = REPRODUCED
        evidence.why = f"p = {evidence.p_value:.2g} < {assertion.alpha:g}"
    elif outside:
        evidence.verdict, evidence.why = NOT_REPRODUCED, "the 95% CI lies on the wrong side"
    else:
        evidence.why = f"p = {evidence.p_value:.2g} ≥ {assertion.alpha:g}"
    return evidence


# -- inside: each run's value between two other metrics of its own


def _parse_inside(kind: str, value: Any, options: dict[str, Any], where: str) -> Parsed:
    if not {"low", "high"} <= set(options):
        raise ClaimError(f"{where}: inside needs low: <metric> and high: <metric>")
    return [str(value)], options


def _describe_inside(a: Assertion) -> str:
    return f"{_what(a)} of {a.groups[0]} inside [{a.options['low']}, {a.options['high']}]"


def _judge_inside(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """The share of seeds whose value lies inside, against ``min_share`` (default: all)."""
    evidence = measure(claim, assertion, runs)
    ref, options, selector = assertion.groups[0], assertion.options, assertion.metric
    assert selector is not None
    low_values, _ = group_values(claim, ref, selector, runs, str(options["low"]))
    high_values, _ = group_values(claim, ref, selector, runs, str(options["high"]))
    values = evidence.values[ref]
    seeds = sorted(set(values) & set(low_values) & set(high_values))
    inside = [low_values[s] <= values[s] <= high_values[s] for s in seeds]
    share = sum(inside) / len(inside) if inside else math.nan
    needed = float(options.get("min_share", 1.0))
    evidence.effect, evidence.n = share, len(inside)
    evidence.effect_kind = "share of runs inside"
    counted = f"{sum(inside)}/{len(inside)} runs inside"
    if not inside:
        evidence.why = "no runs"
    elif share >= needed:
        evidence.verdict, evidence.why = REPRODUCED, f"{counted} (≥ {needed:.0%})"
    else:
        evidence.verdict, evidence.why = NOT_REPRODUCED, f"{counted} (< {needed:.0%})"
    return evidence


# -- proportion_positive, proportion_increases: the share of seeds that succeed


def _parse_proportion(kind: str, value: Any, options: dict[str, Any], where: str) -> Parsed:
    if kind == "proportion_increases":
        groups, options = _parse_groups(kind, value, options, where)
    else:
        groups = [str(value)]
    if not isinstance(options.get("success"), Mapping):
        raise ClaimError(f"{where}: {kind} needs success: {{at_least: x}} or {{at_most: x}}")
    return groups, options


def _success_text(success: Mapping[str, float]) -> str:
    return " ".join(f"{'≥' if k == 'at_least' else '≤'} {v:g}" for k, v in success.items())


def _describe_proportion(a: Assertion) -> str:
    success = _success_text(a.options["success"])
    if a.kind == "proportion_increases":
        return f"share of seeds with {_what(a)} {success}: rises over {', '.join(a.groups)}"
    return f"some seeds of {a.groups[0]} reach {_what(a)} {success}"


def _successes(values: Mapping[int, float], success: Mapping[str, float]) -> int:
    if "at_least" in success:
        return sum(v >= success["at_least"] for v in values.values())
    return sum(v <= success["at_most"] for v in values.values())


def _judge_proportion_positive(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """REPRODUCED when at least one seed succeeds."""
    evidence = measure(claim, assertion, runs)
    values = evidence.values[assertion.groups[0]]
    k, total = _successes(values, assertion.options["success"]), len(values)
    evidence.effect, evidence.n = (k / total if total else math.nan), total
    evidence.effect_kind = "share of seeds"
    if total == 0:
        evidence.why = "no runs"
    elif k > 0:
        evidence.verdict, evidence.why = REPRODUCED, f"{k}/{total} seeds succeed"
    else:
        evidence.verdict, evidence.why = NOT_REPRODUCED, f"0/{total} seeds succeed"
    return evidence


def _judge_proportion_increases(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """Fisher's exact test, last group against the first, one-sided; the shares in between
    must not fall."""
    from scipy import stats as st

    evidence = measure(claim, assertion, runs)
    success = assertion.options["success"]
    shares = [
        (_successes(evidence.values[g], success), len(evidence.values[g])) for g in assertion.groups
    ]
    (k0, n0), (k1, n1) = shares[0], shares[-1]
    table = [[k1, n1 - k1], [k0, n0 - k0]]
    p_up = float(st.fisher_exact(table, alternative="greater").pvalue) if n0 and n1 else math.nan
    p_down = float(st.fisher_exact(table, alternative="less").pvalue) if n0 and n1 else math.nan
    proportions = [k / n if n else math.nan for k, n in shares]
    monotone = all(a <= b for a, b in itertools.pairwise(proportions))
    evidence.p_value, evidence.effect = p_up, proportions[-1] - proportions[0]
    evidence.effect_kind = "Δ share of seeds"
    text = ", ".join(f"{g}: {k}/{n}" for g, (k, n) in zip(assertion.groups, shares, strict=True))
    if p_up < assertion.alpha and monotone:
        evidence.verdict, evidence.why = REPRODUCED, f"{text}; Fisher p = {p_up:.2g}"
    elif p_down < assertion.alpha or (p_up < assertion.alpha and not monotone):
        evidence.verdict, evidence.why = NOT_REPRODUCED, f"{text}; not rising"
    else:
        evidence.why = f"{text}; Fisher p = {p_up:.2g} ≥ {assertion.alpha:g}"
    return evidence


# -- loss_value: a lossbench loss on numbers in the claim file (no runs)


def _parse_loss_value(kind: str, value: Any, options: dict[str, Any], where: str) -> Parsed:
    if not isinstance(value, Mapping) or not {"loss", "y_true", "y_pred"} <= set(value):
        raise ClaimError(
            f"{where}: loss_value takes {{loss, y_true, y_pred, expected or reference, tol}}"
        )
    if "expected" not in value and "reference" not in value:
        raise ClaimError(f"{where}: loss_value needs expected: <number> or reference: <function>")
    return [], {**options, **value}


def _describe_loss_value(a: Assertion) -> str:
    return f"loss value: {a.options.get('why', '')}".strip()


def _judge_loss_value(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """The loss on fixed numbers, against a value or a reference function, within ``tol``."""
    import torch
    from hydra.utils import get_method

    from lossbench.config.spec import build

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
    if "reference" in o:
        expected = float(get_method(o["reference"])(y_true, y_pred))
        against = f"reference {o['reference']}"
    else:
        expected, against = float(o["expected"]), "expected"
    tol = float(o.get("tol", 1e-6))
    ok = abs(value - expected) <= tol
    why = f"{value:.9g} vs {expected:.9g} ({against}), tol {tol:g}"
    return Evidence(
        assertion,
        REPRODUCED if ok else NOT_REPRODUCED,
        why,
        effect=value - expected,
        n=1,
        effect_kind="value − expected",
    )


KINDS: dict[str, Kind] = {  # in the order error messages list them
    "less": Kind(_parse_groups, _describe_compare, _judge_pairs),
    "greater": Kind(_parse_groups, _describe_compare, _judge_pairs),
    "decreasing": Kind(_parse_groups, _describe_order, _judge_pairs),
    "increasing": Kind(_parse_groups, _describe_order, _judge_pairs),
    "within": Kind(_parse_range, _describe_range, _judge_range),
    "above": Kind(_parse_range, _describe_range, _judge_range),
    "below": Kind(_parse_range, _describe_range, _judge_range),
    "inside": Kind(_parse_inside, _describe_inside, _judge_inside),
    "proportion_increases": Kind(
        _parse_proportion, _describe_proportion, _judge_proportion_increases
    ),
    "proportion_positive": Kind(
        _parse_proportion, _describe_proportion, _judge_proportion_positive
    ),
    "equivalent": Kind(equivalence.parse, equivalence.describe, equivalence.judge),
    "beats": Kind(across.parse, across.describe, across.judge_beats, check=across.check),
    "ranks_first": Kind(
        across.parse, across.describe, across.judge_ranks_first, check=across.check
    ),
    "loss_value": Kind(
        _parse_loss_value, _describe_loss_value, _judge_loss_value, reads_runs=False
    ),
}
