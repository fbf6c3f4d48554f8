"""Claims across problems: an axis of the claim (``across:``, its datasets say) holds the
problems, and two assertion kinds judge recipes over them, each problem a block.

- ``beats: [a, b]`` with ``at_least: k`` (default: every problem): a is better than b on at
  least k of the n problems. On each problem a is compared with b as ``less``/``greater`` do
  (paired by seed, else Welch). REPRODUCED when a is better on at least k problems, the
  choice of problems accounted for: the partial-conjunction p (Benjamini and Heller 2008,
  Bonferroni's: (n - k + 1) · p_(k), the k-th smallest p of the problems where a is better;
  for k = n, every problem p < alpha) is below alpha. NOT REPRODUCED when, by the same test,
  a fails (b better, or a better by less than min_effect) on more than n - k problems, so that
  k is out of reach. INCONCLUSIVE otherwise.
- ``ranks_first: [a, b, c, ...]``: a ranks first among these groups across the problems, by
  its mean over seeds on each problem (Demšar 2006; :mod:`lossbench.analysis.ranking`). Three groups or
  more: REPRODUCED when the Friedman test rejects at alpha and Nemenyi's post-hoc test finds a
  better than each other group; NOT REPRODUCED when the Friedman test rejects and some group
  ranks significantly better than a. Two groups: Wilcoxon's signed-rank test over the problems.
  Problems where a group has no value are left out (complete blocks), and counted.

"Better" is the metric's direction: higher for accuracies, F1 and R², lower for losses and
errors, as a metric of the config declares it (:mod:`lossbench.problem.directions`);
``mode: min|max`` says it for other names.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from lossbench.analysis import ranking
from lossbench.claims.evidence import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Evidence,
    Runs,
    pair_test,
)
from lossbench.claims.select import measure
from lossbench.claims.spec import Assertion, Claim, ClaimError, check_direction

FORMATS = {
    "beats": "beats: [a, b] with across: <the problems' axis> and at_least: <k problems>",
    "ranks_first": "ranks_first: [a, b, ...] with across: <the problems' axis>",
}


def parse(
    kind: str, value: Any, options: dict[str, Any], where: str
) -> tuple[list[str], dict[str, Any]]:
    """The groups (two for ``beats``, two or more for ``ranks_first``) and ``across``."""
    size_ok = len(value) == 2 if kind == "beats" else len(value) >= 2
    if not isinstance(value, list) or not size_ok:
        raise ClaimError(f"{where}: {kind} takes {'two groups' if kind == 'beats' else 'two groups or more'} "
                         f"({FORMATS[kind]}), got {value!r}")  # fmt: skip
    if not options.get("across"):
        raise ClaimError(
            f"{where}: {kind} needs across: <the claim's axis of problems> ({FORMATS[kind]})"
        )
    at_least = options.get("at_least")
    if (
        kind == "beats"
        and at_least is not None
        and (isinstance(at_least, bool) or not isinstance(at_least, int) or at_least < 1)
    ):
        raise ClaimError(f"{where}: at_least must be a whole number of problems ≥ 1, got {at_least!r}")  # fmt: skip
    if kind != "beats" and at_least is not None:
        raise ClaimError(f"{where}: at_least belongs to beats, not {kind}")
    if options.get("mode") not in (None, "min", "max"):
        raise ClaimError(f"{where}: mode={options['mode']!r}; valid: min, max")
    return [str(g) for g in value], {**options, "across": str(options["across"])}


def check(claim: Claim, assertion: Assertion, where: str) -> None:
    """Against the claim: ``across`` is one of its axes with two values or more, no group names
    it, ``at_least`` is at most the number of problems, and the metric's direction is known."""
    across = assertion.options["across"]
    if across not in claim.axes:
        raise ClaimError(f"{where}: across={across!r} is not an axis of the claim; axes: "
                         f"{', '.join(claim.axes) or 'none'}")  # fmt: skip
    n = len(claim.axes[across])
    if n < 2:
        raise ClaimError(f"{where}: across={across!r} has one value; problems need two or more")
    for ref in assertion.groups:
        if across in claim.resolve(ref):
            raise ClaimError(f"{where}: group {ref!r} names the axis of problems {across!r}; "
                             "name the other axes only (each group is judged on every problem)")  # fmt: skip
    at_least = assertion.options.get("at_least")
    if at_least is not None and at_least > n:
        raise ClaimError(f"{where}: at_least={at_least} but {across!r} has {n} problems "
                         f"({', '.join(claim.axes[across])})")  # fmt: skip
    assert assertion.metric is not None
    check_direction(assertion.metric.name, assertion.options.get("mode"), claim.overrides(),
                    f"{where}:")  # fmt: skip


def _higher(claim: Claim, assertion: Assertion, runs: Runs) -> bool:
    """Which end of the assertion's metric is better: its mode, the metric's direction, as the
    claim's runs recorded it for a metric of their own."""
    assert assertion.metric is not None
    declared = {k: v for key, run in runs.items() if key[0] == claim.id
                for k, v in run.directions.items()}  # fmt: skip
    higher = check_direction(assertion.metric.name, assertion.options.get("mode"), [],
                             f"{claim.path.name}:", declared)  # fmt: skip
    return bool(higher)


def describe(a: Assertion) -> str:
    """``train/final_loss: step beats constant on ≥ 5 of dataset's problems``."""
    what = a.metric.label() if a.metric else ""
    across = a.options["across"]
    if a.kind == "beats":
        at_least = a.options.get("at_least")
        count = f"at least {at_least}" if at_least else "every one"
        return (
            f"{what}: {a.groups[0]} better than {a.groups[1]} on {count} of the {across} problems"
        )
    return f"{what}: {a.groups[0]} ranks first among {', '.join(a.groups)} across the {across} problems"


def _problem_ref(claim: Claim, ref: str, across: str, label: str) -> str:
    """``optimizer=sgd,dataset=iris``: a group on one problem."""
    chosen = {**claim.resolve(ref), across: label}
    return ",".join(f"{axis}={value}" for axis, value in chosen.items())


def _per_problem(
    claim: Claim, assertion: Assertion, runs: Runs
) -> tuple[Evidence, dict[str, dict[str, str]]]:
    """Evidence over every (group, problem), keyed ``group on problem``; and problem -> group
    -> that key."""
    across = assertion.options["across"]
    keys = {label: {g: _problem_ref(claim, g, across, label) for g in assertion.groups}
            for label in claim.axes[across]}  # fmt: skip
    flat = [ref for refs in keys.values() for ref in refs.values()]
    evidence = measure(claim, replace(assertion, groups=flat), runs)
    evidence.assertion = assertion
    names = {ref: f"{g} on {label}" for label, refs in keys.items() for g, ref in refs.items()}
    for attribute in ("groups", "values", "counts", "chosen", "selection", "times", "reaches"):
        table = getattr(evidence, attribute)
        setattr(evidence, attribute, {names.get(k, k): v for k, v in table.items()})
    return evidence, {
        label: {g: names[ref] for g, ref in refs.items()} for label, refs in keys.items()
    }


def judge_beats(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """On each problem a against b, then at least k of n by the partial conjunction."""
    evidence, keys = _per_problem(claim, assertion, runs)
    a, b = assertion.groups
    kind = "greater" if _higher(claim, assertion, runs) else "less"
    min_effect = float(assertion.options.get("min_effect", 0.0))
    tests = {label: pair_test(evidence, names[a], names[b], kind, assertion.alpha, min_effect)
             for label, names in keys.items()}  # fmt: skip
    n = len(tests)
    k = int(assertion.options.get("at_least") or n)
    for_p = [t.p_value if t.supports else 1.0 for t in tests.values()]
    against_p = [t.p_value if not t.supports else 1.0 for t in tests.values()]
    p_for = ranking.partial_conjunction(for_p, k)
    p_against = ranking.partial_conjunction(against_p, n - k + 1)
    counted = [t.verdict for t in tests.values()]
    wins, losses = counted.count(REPRODUCED), counted.count(NOT_REPRODUCED)
    evidence.n, evidence.effect = n, wins / n
    evidence.effect_kind = "share of problems better"
    each = "; ".join(f"{label}: {t.why}" for label, t in tests.items())
    tally = (
        f"{a} vs {b}: {wins} better, {n - wins - losses} undecided, {losses} not (each at alpha)"
    )
    if p_for < assertion.alpha:
        evidence.verdict, evidence.p_value = REPRODUCED, p_for
        evidence.why = (
            f"{tally}; at least {k} of {n}: p = {p_for:.2g} < {assertion.alpha:g}. {each}"
        )
    elif p_against < assertion.alpha:
        evidence.verdict, evidence.p_value = NOT_REPRODUCED, p_against
        evidence.why = (f"{tally}; fails on more than {n - k} of {n}: p = {p_against:.2g} < "
                        f"{assertion.alpha:g}, so {k} is out of reach. {each}")  # fmt: skip
    else:
        evidence.p_value = p_for
        evidence.why = (
            f"{tally}; at least {k} of {n}: p = {p_for:.2g} ≥ {assertion.alpha:g}. {each}"
        )
    return evidence


def judge_ranks_first(claim: Claim, assertion: Assertion, runs: Runs) -> Evidence:
    """Mean ranks over the complete problems; Friedman and Nemenyi (or Wilcoxon for two)."""
    import pandas as pd

    evidence, keys = _per_problem(claim, assertion, runs)
    first, alpha = assertion.groups[0], assertion.alpha
    scores = pd.DataFrame(
        {g: [evidence.groups[names[g]].mean for names in keys.values()] for g in assertion.groups},
        index=list(keys),
    )
    complete, dropped = ranking.complete_blocks(scores)
    n, k = complete.shape
    evidence.n = n
    left_out = (
        f"; {len(dropped)} problem(s) left out, a group without runs: {', '.join(dropped)}"
        if dropped
        else ""
    )
    if n < 2:
        evidence.why = f"fewer than two problems with every group{left_out}"
        return evidence
    ranks = ranking.rank_table(complete, _higher(claim, assertion, runs)).mean(axis=0)
    evidence.effect, evidence.effect_kind = float(ranks[first]), f"mean rank of {first}"
    ranked = ", ".join(f"{g} {r:.2f}" for g, r in ranks.sort_values(kind="stable").items())
    omnibus = ranking.omnibus(complete)
    others = [g for g in assertion.groups if g != first]
    if k == 2:
        pairwise = {others[0]: omnibus.p_value}
        test = f"Wilcoxon signed-rank p = {omnibus.p_value:.2g}"
    else:
        nemenyi = ranking.nemenyi(complete)
        pairwise = {g: float(nemenyi.loc[first, g]) for g in others}
        test = (f"Friedman p = {omnibus.p_value:.2g}; Nemenyi p vs "
                + ", ".join(f"{g} {p:.2g}" for g, p in pairwise.items()))  # fmt: skip
    gate = omnibus.p_value < alpha
    beaten_by = [g for g in others if ranks[g] < ranks[first] and pairwise[g] < alpha]
    wins = all(ranks[first] < ranks[g] and pairwise[g] < alpha for g in others)
    evidence.p_value = max(omnibus.p_value, *pairwise.values())
    said = f"mean ranks over {n} problems: {ranked}; {test}{left_out}"
    if gate and wins:
        evidence.verdict, evidence.why = REPRODUCED, f"{said}: {first} significantly first"
    elif gate and beaten_by:
        evidence.verdict, evidence.p_value = NOT_REPRODUCED, min(pairwise[g] for g in beaten_by)
        evidence.why = f"{said}: {', '.join(beaten_by)} significantly better than {first}"
    else:
        evidence.verdict = INCONCLUSIVE
        evidence.why = f"{said}: not significant at alpha = {alpha:g}"
    if math.isnan(evidence.p_value):
        evidence.verdict = INCONCLUSIVE
    return evidence
