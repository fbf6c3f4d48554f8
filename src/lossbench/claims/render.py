"""Showing verdicts: the terminal table, a plot per claim, the cells the Markdown report shares
(:mod:`lossbench.claims.files` writes it) and JSON."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.analysis import survival
from lossbench.analysis.render import (
    MISSING,
    figure,
    p_value,
    plus_minus,
    print_table,
)
from lossbench.claims.evaluate import Verdict, describe
from lossbench.claims.evidence import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Evidence

HEADER = [
    "id",
    "claim",
    "verdict",
    "assertion verdict",
    "assertion",
    "groups: mean ± 95% CI",
    "effect (what it is)",
    "p",
    "n",
    "why",
]
METHODS = (
    "Verdicts: REPRODUCED when every assertion holds (claimed direction, p < alpha, effect ≥ "
    "min_effect); NOT REPRODUCED when one fails (the opposite is significant, a significant "
    "effect is too small, a CI lies outside the claimed range); INCONCLUSIVE otherwise. "
    "Group values are means over seeds with Student's t 95% CIs; comparisons are paired by "
    "seed (paired t-test) or Welch's t-test, or a Mann-Whitney U test where diverged runs "
    "rank worst. Equivalence within a margin: two one-sided tests (TOST), paired or Welch; "
    "REPRODUCED when both reject, NOT REPRODUCED when a difference beyond the margin is "
    "significant. Where a claim has a nuisance axis, each group is judged at the value with "
    "the best mean validation metric (shown as 'group at axis=value'; a value with diverged "
    "runs ranks below every value without). Effects are labelled with what they are: Cohen's "
    "d_z (paired) or d (Welch) and the rank-biserial r are standardized sizes; 'Δ ...' is a "
    "difference in the metric's units. Times to target (target/epochs, target/seconds): "
    "Kaplan–Meier median [95% CI] and the runs that reached it (a run that never did is "
    "censored at its planned epochs: it counts); groups are compared by the log-rank test "
    "(SciPy), the effect being the difference of the medians."
)
COLORS = {REPRODUCED: "green", NOT_REPRODUCED: "red", INCONCLUSIVE: "yellow"}


def _group_name(e: Evidence, group: str) -> str:
    """``sgd`` or, judged at a chosen nuisance value, ``sgd at lr=0.1``."""
    return f"{group} at {e.nuisance}={e.chosen[group]}" if group in e.chosen else group


def _time_text(t: survival.TimeToTarget) -> str:
    """``median 14 [12, 17], 5/5 reached``: a group's time to target (Kaplan–Meier)."""
    if t.n == 0:
        return "no runs"

    def shown(v: float) -> str:
        return "∞" if math.isinf(v) else f"{v:.4g}"

    median = shown(t.median) if t.exact else f"{shown(t.median_earliest)}–{shown(t.median)}"
    if math.isinf(t.median):
        median = f"> {shown(t.horizon)}"
    ci = "" if math.isinf(t.low) else f" [{shown(t.low)}, {shown(t.high)}]"
    return f"median {median}{ci}, {t.reached}/{t.n} reached"


def groups_text(e: Evidence) -> str:
    return "; ".join(
        f"{_group_name(e, g)}: {_time_text(e.times[g]) if g in e.times else plus_minus(ci)}"
        for g, ci in e.groups.items()
    )


def effect_text(e: Evidence) -> str:
    """The effect and what it is: ``-1.85 (Cohen's d_z)``, ``-3 (Δ median, epochs)``."""
    if math.isnan(e.effect):
        return MISSING
    return f"{e.effect:.3g} ({e.effect_kind})" if e.effect_kind else f"{e.effect:.3g}"


def why_text(e: Evidence) -> str:
    """Why, and the notes on a nuisance choice (a grid edge, divergence)."""
    return "; ".join([e.why, *(f"note: {n}" for n in e.notes)]) if e.notes else e.why


def verdict_rows(verdicts: Sequence[Verdict]) -> list[list[str]]:
    """One row per assertion: id, claim, verdict, assertion, groups, effect, p, n, why."""
    rows = []
    for v in verdicts:
        for i, e in enumerate(v.evidence):
            first = i == 0  # the claim's own cells, on its first row only
            rows.append([
                v.claim.id if first else "", v.claim.claim if first else "", v.verdict if first else "",
                e.verdict, describe(e.assertion), groups_text(e), effect_text(e), p_value(e.p_value),
                str(e.n), why_text(e),
            ])  # fmt: skip
    return rows


def print_verdicts(verdicts: Sequence[Verdict]) -> None:
    """The verdict table in the terminal."""
    from rich.markup import escape

    rows = []
    for row in verdict_rows(verdicts):
        row = [escape(cell) for cell in row]  # group labels and notes may hold [ ]
        for i in (2, 3):
            if row[i]:
                row[i] = f"[{COLORS[row[i]]}]{row[i]}[/]"
        rows.append(row)
    print_table("claims", HEADER, rows, 250, overflow="fold", show_lines=True)


def plot_claim(verdict: Verdict, out: Path) -> Path | None:
    """One figure per claim: a panel per assertion, the groups' values with their 95% CIs."""
    panels = [e for e in verdict.evidence if e.groups or e.assertion.kind == "loss_value"]
    if not panels:
        return None
    path = out / f"{verdict.claim.id}.png"
    widest = max(len(e.groups) for e in panels)  # across problems: a group per problem
    size = (max(4.5, 0.55 * widest) * len(panels), 3.6 if widest <= 6 else 4.4)
    with figure(path, 100, nrows=1, ncols=len(panels), figsize=size, squeeze=False) as (fig, axes):
        for ax, e in zip(axes[0], panels, strict=True):
            if e.assertion.kind == "loss_value":
                ax.axis("off")
                ax.text(0.5, 0.5, f"{e.verdict}\n{e.why}", ha="center", va="center", wrap=True,
                        fontsize=8)  # fmt: skip
            else:
                _plot_groups(ax, e)
        fig.suptitle(f"{verdict.claim.id}: {verdict.claim.claim}", fontsize=9)
    return path


def _plot_groups(ax: Any, e: Evidence) -> None:
    """Each group's runs (grey), mean and 95% CI (blue), and how many diverged."""
    assert e.assertion.metric is not None
    names = list(e.groups)
    for x, name in enumerate(names):
        points = list(e.values[name].values())
        finite = [p for p in points if math.isfinite(p)]
        ax.scatter([x] * len(finite), finite, s=12, alpha=0.5, color="grey")
        excluded = e.counts[name].get("diverged", 0) * (e.assertion.metric.diverged == "exclude")
        diverged = len(points) - len(finite) + excluded
        ci = e.groups[name]
        if name in e.times:  # a time to target: the Kaplan–Meier median and its CI
            t = e.times[name]
            if math.isfinite(t.median):
                high = t.high if math.isfinite(t.high) else t.median
                ax.errorbar([x], [t.median], yerr=[[t.median - t.low], [high - t.median]],
                            fmt="s", color="tab:blue", capsize=4)  # fmt: skip
        elif ci.n:
            err = 0 if math.isnan(ci.low) else (ci.high - ci.low) / 2
            ax.errorbar([x], [ci.mean], yerr=[err], fmt="o", color="tab:blue", capsize=4)
        if diverged:
            ax.annotate(f"{diverged} diverged", (x, ax.get_ylim()[1]), ha="center", va="top",
                        fontsize=7, color="tab:red")  # fmt: skip
    ticks = [_group_name(e, name).replace(" at ", "\nat ") for name in names]
    ax.set_xticks(range(len(names)), ticks, rotation=20, ha="right", fontsize=8)
    ax.set_title(f"{e.verdict}\n{describe(e.assertion)}", fontsize=8)
    ax.grid(alpha=0.3)


def _number(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _assertion_json(e: Evidence) -> dict[str, Any]:
    out = {"assertion": describe(e.assertion), "verdict": e.verdict, "p_value": _number(e.p_value),
           "effect": _number(e.effect), "effect_kind": e.effect_kind, "n": e.n, "why": e.why,
           "groups": {g: {"mean": _number(ci.mean), "ci_low": _number(ci.low), "ci_high": _number(ci.high),
                          "n": ci.n} for g, ci in e.groups.items()}}  # fmt: skip
    for g, t in e.times.items():  # a time to target: the median instead of a mean
        out["groups"][g] = {"median": _number(t.median), "median_earliest": _number(t.median_earliest),
                            "ci_low": _number(t.low), "ci_high": _number(t.high), "reached": t.reached,
                            "n": t.n}  # fmt: skip
    if e.nuisance:
        out["chosen"] = {g: {e.nuisance: value} for g, value in e.chosen.items()}
        out["selection"] = {
            g: {value: _number(mean) for value, mean in means.items()}
            for g, means in e.selection.items()
        }
        out["notes"] = list(e.notes)
    return out


def verdicts_json(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as data: id, verdict, p_value, effect and effect_kind, n (of the deciding
    assertion), and per assertion the same with why and each group's mean and 95% CI (for a
    time to target: median, its CI and runs reached); where a claim has a nuisance axis, the claim's
    ``nuisance`` and per assertion the value ``chosen`` for each group, the ``selection`` means
    it was chosen on, and ``notes``."""
    out = []
    for v in verdicts:
        d, nuisance = v.deciding, v.claim.nuisance
        item = {"id": v.claim.id, "verdict": v.verdict, "p_value": _number(d.p_value),
                "effect": _number(d.effect), "effect_kind": d.effect_kind,
                "effect_text": effect_text(d), "n": d.n}  # fmt: skip
        if nuisance:
            # the direction decided (before training), else as the file gave it
            mode = (
                nuisance.mode if nuisance.higher is None else ("max" if nuisance.higher else "min")
            )
            item["nuisance"] = {"axis": nuisance.axis, "select": nuisance.select.label(),
                                "mode": mode}  # fmt: skip
        item["assertions"] = [_assertion_json(e) for e in v.evidence]
        out.append(item)
    return out
