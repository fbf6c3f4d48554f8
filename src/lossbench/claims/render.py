"""Showing verdicts: the terminal table, ``reports/claims.md`` with a plot per claim, and JSON."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lossbench.analysis.render import figure, markdown_table, p_value, plus_minus, print_table
from lossbench.claims.evaluate import Verdict, describe
from lossbench.claims.evidence import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Evidence

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
    "runs ranks below every value without)."
)
COLORS = {REPRODUCED: "green", NOT_REPRODUCED: "red", INCONCLUSIVE: "yellow"}


def _group_name(e: Evidence, group: str) -> str:
    """``sgd`` or, judged at a chosen nuisance value, ``sgd at lr=0.1``."""
    return f"{group} at {e.nuisance}={e.chosen[group]}" if group in e.chosen else group


def _groups_text(e: Evidence) -> str:
    return "; ".join(f"{_group_name(e, g)}: {plus_minus(ci)}" for g, ci in e.groups.items())


def _why(e: Evidence) -> str:
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
                e.verdict, describe(e.assertion), _groups_text(e), f"{e.effect:.3g}", p_value(e.p_value),
                str(e.n), _why(e),
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
        if ci.n:
            err = 0 if math.isnan(ci.low) else (ci.high - ci.low) / 2
            ax.errorbar([x], [ci.mean], yerr=[err], fmt="o", color="tab:blue", capsize=4)
        if diverged:
            ax.annotate(f"{diverged} diverged", (x, ax.get_ylim()[1]), ha="center", va="top",
                        fontsize=7, color="tab:red")  # fmt: skip
    ticks = [_group_name(e, name).replace(" at ", "\nat ") for name in names]
    ax.set_xticks(range(len(names)), ticks, rotation=20, ha="right", fontsize=8)
    ax.set_title(f"{e.verdict}\n{describe(e.assertion)}", fontsize=8)
    ax.grid(alpha=0.3)


FAIR_SUFFIX = "-fair"  # ``R4-fair``: R4's statement with each arm at its best learning rate


def fair_pairs(verdicts: Sequence[Verdict]) -> list[tuple[Verdict, Verdict]]:
    """(fixed form, fair variant) of each claim ``X-fair`` judged along with its ``X``."""
    by_id = {v.claim.id: v for v in verdicts}
    return [
        (by_id[v.claim.id.removesuffix(FAIR_SUFFIX)], v)
        for v in verdicts
        if v.claim.id.endswith(FAIR_SUFFIX) and v.claim.id.removesuffix(FAIR_SUFFIX) in by_id
    ]


def fair_comparison_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """Markdown: each fixed-rate claim next to its fair variant, assertion by assertion (the
    n-th assertion of one against the n-th of the other), saying where the verdicts differ."""
    rows, differ = [], []
    for fixed, fair in fair_pairs(verdicts):
        for i, (a, b) in enumerate(zip(fixed.evidence, fair.evidence, strict=False), start=1):
            agree = a.verdict == b.verdict
            chosen = ", ".join(_group_name(b, g) for g in b.chosen) or "–"
            rows.append([
                f"{fixed.claim.id} / {fair.claim.id} #{i}", describe(a.assertion),
                a.verdict, f"{b.verdict} ({describe(b.assertion)}; {chosen})",
                "agree" if agree else "**disagree**",
            ])  # fmt: skip
            if not agree:
                differ.append(f"{fixed.claim.id} #{i}")
    if not rows:
        return []
    said = (
        f"They disagree on {len(differ)} of {len(rows)} assertions: {', '.join(differ)}."
        if differ
        else f"They agree on all {len(rows)} assertions."
    )
    return [
        "## Fixed learning rate vs each at its best learning rate", "",
        "Each claim judged at the fixed rate its source used, next to its fair variant (`-fair`), "
        "where each arm is judged at its best rate on a grid chosen before any run (see each "
        "variant's setup). " + said, "",
        markdown_table(
            ["claims, assertion", "assertion (fixed rate)", "fixed rate", "each at its best rate", ""],
            rows,
        ),
        "",
    ]  # fmt: skip


def write_report(
    verdicts: Sequence[Verdict], out: Path, seconds: float, experiment: str, uri: str
) -> Path:
    """reports/claims.md with one section and one plot per claim."""
    figures = out / "claims"
    figures.mkdir(parents=True, exist_ok=True)
    counts = Counter(v.verdict for v in verdicts)
    summary = [
        [v.claim.id, v.claim.claim, f"**{v.verdict}**", p_value(v.deciding.p_value),
         f"{v.deciding.effect:.3g}", str(v.deciding.n)]
        for v in verdicts
    ]  # fmt: skip
    lines = [
        "# Claims", "",
        f"{len(verdicts)} claims from `conf/claims/`, judged on runs of experiment `{experiment}` "
        f"in `{uri}` ({seconds:.0f} s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".", "",
        markdown_table(["id", "claim", "verdict", "p", "effect", "n"], summary),
        "", METHODS, "",
        *fair_comparison_lines(verdicts),
    ]  # fmt: skip
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
        if c.nuisance:
            lines += [f"Nuisance axis `{c.nuisance.axis}`: each group at the value with the "
                      f"{c.nuisance.label()} (validation): `group at {c.nuisance.axis}=value`.", ""]  # fmt: skip
        header = ["assertion", "verdict", "groups: mean ± 95% CI", "effect", "p", "n", "why"]
        rows = [
            [describe(e.assertion), e.verdict, _groups_text(e), f"{e.effect:.3g}",
             p_value(e.p_value), str(e.n), _why(e)]
            for e in v.evidence
        ]  # fmt: skip
        lines.append(markdown_table(header, rows))
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


def _number(x: float) -> float | None:
    return None if math.isnan(x) or math.isinf(x) else x


def _assertion_json(e: Evidence) -> dict[str, Any]:
    out = {"assertion": describe(e.assertion), "verdict": e.verdict, "p_value": _number(e.p_value),
           "effect": _number(e.effect), "n": e.n, "why": e.why,
           "groups": {g: {"mean": _number(ci.mean), "ci_low": _number(ci.low), "ci_high": _number(ci.high),
                          "n": ci.n} for g, ci in e.groups.items()}}  # fmt: skip
    if e.nuisance:
        out["chosen"] = {g: {e.nuisance: value} for g, value in e.chosen.items()}
        out["selection"] = {
            g: {value: _number(mean) for value, mean in means.items()}
            for g, means in e.selection.items()
        }
        out["notes"] = list(e.notes)
    return out


def verdicts_json(verdicts: Sequence[Verdict]) -> list[dict[str, Any]]:
    """The verdicts as data: id, verdict, p_value, effect, n (of the deciding assertion), and
    per assertion the same with why and each group's mean and 95% CI; where a claim has a nuisance axis, the claim's
    ``nuisance`` and per assertion the value ``chosen`` for each group, the ``selection`` means
    it was chosen on, and ``notes``."""
    out = []
    for v in verdicts:
        d, nuisance = v.deciding, v.claim.nuisance
        item = {"id": v.claim.id, "verdict": v.verdict, "p_value": _number(d.p_value),
                "effect": _number(d.effect), "n": d.n}  # fmt: skip
        if nuisance:
            item["nuisance"] = {"axis": nuisance.axis, "select": nuisance.select.label(),
                                "mode": "max" if nuisance.higher else "min"}  # fmt: skip
        item["assertions"] = [_assertion_json(e) for e in v.evidence]
        out.append(item)
    return out
