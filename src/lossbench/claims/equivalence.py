"""The ``equivalent: [a, b]`` assertion: two groups give the same result within ``margin``
(in the metric's units), by two one-sided tests (TOST, :func:`lossbench.analysis.stats.tost`): paired by
seed where the groups share seeds, else Welch.

- REPRODUCED: equivalence shown, both one-sided tests reject at alpha (the 1 - 2·alpha CI of
  the difference lies inside ±margin);
- NOT REPRODUCED: a difference beyond the margin is significant at alpha (that CI lies
  wholly beyond +margin or below -margin);
- INCONCLUSIVE: otherwise. "No significant difference" alone is not equivalence.
"""

from __future__ import annotations

import math
from typing import Any

from lossbench.analysis import stats
from lossbench.claims.evidence import NOT_REPRODUCED, REPRODUCED, Evidence, Runs
from lossbench.claims.select import measure
from lossbench.claims.spec import Assertion, Claim, ClaimError

FORMAT = "equivalent: [a, b] with margin: <a number > 0, in the metric's units>"


def parse(
    kind: str, value: Any, options: dict[str, Any], where: str
) -> tuple[list[str], dict[str, Any]]:
    """Two groups and a margin > 0; anything else raises naming the value."""
    if not isinstance(value, list) or len(value) != 2:
        raise ClaimError(f"{where}: {kind} takes exactly two groups ({FORMAT}), got {value!r}")
    margin = options.get("margin")
    if margin is None:
        raise ClaimError(f"{where}: {kind} needs a margin ({FORMAT})")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
        raise ClaimError(
            f"{where}: margin must be a number > 0 (in the metric's units), got {margin!r}"
        )
    return [str(g) for g in value], {**options, "margin": float(margin)}


def describe(a: Assertion) -> str:
    """``test/loss: a ≡ b within ±0.01``."""
    what = a.metric.label() if a.metric else ""
    return f"{what}: {a.groups[0]} ≡ {a.groups[1]} within ±{a.options['margin']:g}"


def judge(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """TOST at the assertion's alpha; the effect is the difference of means, a - b, in the
    metric's units; the p-value is TOST's (the larger of its two one-sided p-values), or, when
    a difference beyond the margin is significant, that test's."""
    evidence = measure(claim, assertion, runs)
    a, b = assertion.groups
    margin, alpha = float(assertion.options["margin"]), assertion.alpha
    result = stats.tost(evidence.values[a], evidence.values[b], margin)
    evidence.effect, evidence.p_value = result.diff, result.p_value
    evidence.effect_kind = f"Δ mean, {assertion.metric.name if assertion.metric else 'units'}"
    evidence.n = result.n_pairs if result.paired else min(result.n_a, result.n_b)
    if math.isnan(result.p_value):
        evidence.why = "fewer than two runs in a group"
        return evidence
    low, high = result.interval(alpha)
    level = f"{1 - 2 * alpha:.0%} CI"
    told = f"{a} − {b} = {result.diff:.3g}, {level} [{low:.3g}, {high:.3g}] ({result.test})"
    if result.p_value < alpha:
        evidence.verdict = REPRODUCED
        evidence.why = f"{told} inside ±{margin:g}: p = {result.p_value:.2g} < {alpha:g}"
    elif result.p_beyond < alpha:
        evidence.verdict, evidence.p_value = NOT_REPRODUCED, result.p_beyond
        evidence.why = (
            f"{told}: |difference| > {margin:g} is significant (p = {result.p_beyond:.2g})"
        )
    else:
        evidence.why = f"{told} not inside ±{margin:g}: p = {result.p_value:.2g} ≥ {alpha:g}"
    return evidence
