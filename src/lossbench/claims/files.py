"""The claims' report files, which accumulate by claim id: each judged claim has its own
``reports/claims/<id>.md`` (its section: setup, sweep, assertions, plot), ``<id>.json`` (its
verdict as data, with when and where it was judged) and ``<id>.png``; ``reports/claims.md`` is
rebuilt from every claim file there each time, so judging some claims keeps the verdicts of the
others. A claim judged again replaces its own files only."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lossbench.analysis.render import markdown_table, p_value
from lossbench.claims.evaluate import Verdict, describe
from lossbench.claims.render import (
    METHODS,
    effect_text,
    groups_text,
    plot_claim,
    verdicts_json,
    why_text,
)

FAIR_SUFFIX = "-fair"  # ``R4-fair``: R4's statement with each arm at its best learning rate
SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def file_stem(claim_id: str) -> str:
    """A claim's file name (without extension): its id, with anything but letters, digits,
    ``_``, ``.`` and ``-`` as ``_``."""
    return SAFE.sub("_", claim_id)


def claim_section(verdict: Verdict, experiment: str, figure: str | None) -> list[str]:
    """A claim's Markdown section: statement, setup, sweep, the assertions' table, its plot
    (``figure``: the image path) and where its runs are."""
    c, v = verdict.claim, verdict
    lines = [
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
    header = [
        "assertion",
        "verdict",
        "groups: mean ± 95% CI",
        "effect (what it is)",
        "p",
        "n",
        "why",
    ]
    rows = [[describe(e.assertion), e.verdict, groups_text(e), effect_text(e), p_value(e.p_value),
             str(e.n), why_text(e)] for e in v.evidence]  # fmt: skip
    lines.append(markdown_table(header, rows))
    if figure:
        lines += ["", f"![{c.id}]({figure})"]
    if v.run_ids:
        lines += ["", f"MLflow runs: {len(v.run_ids)} (tag `lossbench.config_hash`; experiment `{experiment}`)."]  # fmt: skip
    return [*lines, ""]


def fair_comparison_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown: each fixed-rate claim next to its fair variant, assertion by assertion (the
    n-th assertion of one against the n-th of the other), saying where the verdicts differ.
    ``records``: the claims' verdicts as data (:func:`lossbench.claims.render.verdicts_json`)."""
    by_id = {r["id"]: r for r in records}
    rows, differ = [], []
    for fair in records:
        fixed = by_id.get(fair["id"].removesuffix(FAIR_SUFFIX))
        if not fair["id"].endswith(FAIR_SUFFIX) or fixed is None:
            continue
        pairs = zip(fixed["assertions"], fair["assertions"], strict=False)
        for i, (a, b) in enumerate(pairs, start=1):
            agree = a["verdict"] == b["verdict"]
            chosen = ", ".join(f"{g} at {axis}={value}" for g, at in b.get("chosen", {}).items()
                               for axis, value in at.items()) or "–"  # fmt: skip
            rows.append([f"{fixed['id']} / {fair['id']} #{i}", a["assertion"], a["verdict"],
                         f"{b['verdict']} ({b['assertion']}; {chosen})",
                         "agree" if agree else "**disagree**"])  # fmt: skip
            if not agree:
                differ.append(f"{fixed['id']} #{i}")
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
    """Write each verdict's files under ``out/claims/`` (replacing that claim's earlier ones),
    then ``out/claims.md``: every claim judged so far there, by id."""
    folder = out / "claims"
    folder.mkdir(parents=True, exist_ok=True)
    judged = time.strftime("%Y-%m-%d %H:%M:%S")
    for verdict, record in zip(verdicts, verdicts_json(verdicts), strict=True):
        stem = file_stem(verdict.claim.id)
        plot = plot_claim(verdict, folder)
        section = claim_section(verdict, experiment, plot.name if plot else None)
        (folder / f"{stem}.md").write_text("\n".join(section))
        record.update({"claim": verdict.claim.claim, "judged": judged, "experiment": experiment,
                       "store": uri, "seconds": round(seconds, 1)})  # fmt: skip
        (folder / f"{stem}.json").write_text(json.dumps(record, indent=2))
    return write_index(out, len(verdicts), seconds)


def _records(folder: Path) -> list[dict[str, Any]]:
    records = []
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and {"id", "verdict", "assertions"} <= set(record):
            records.append(record)
    return sorted(records, key=lambda r: (len(r["id"]), r["id"]))


def _float(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _effect(record: Mapping[str, Any]) -> str:
    """A claim's effect as data, shown with what it is (as the verdict table shows it)."""
    if record.get("effect_text"):
        return str(record["effect_text"])
    if record.get("effect") is None:
        return "–"
    return f"{record['effect']:.3g} ({record.get('effect_kind', '')})"


def write_index(out: Path, judged_now: int = 0, seconds: float = 0.0) -> Path:
    """``out/claims.md`` from every claim file of ``out/claims/``: the verdicts table, the
    method, fixed vs fair learning rates, then each claim's section."""
    folder = out / "claims"
    records = _records(folder)
    counts = Counter(r["verdict"] for r in records)
    summary = [
        [r["id"], r.get("claim", ""), f"**{r['verdict']}**", p_value(_float(r["p_value"])),
         _effect(r), str(r["n"]), f"{r.get('judged', '')} (`{r.get('experiment', '')}`)"]
        for r in records
    ]  # fmt: skip
    lines = [
        "# Claims", "",
        f"{len(records)} claims judged so far (this run: {judged_now}, {seconds:.0f} s): "
        + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        + ". Each claim's section, plot and verdict as data are in `claims/` (`<id>.md`, "
        "`<id>.png`, `<id>.json`); judging a claim again replaces its own.", "",
        markdown_table(["id", "claim", "verdict", "p", "effect (what it is)", "n",
                        "judged (experiment)"], summary),
        "", METHODS, "",
        *fair_comparison_lines(records),
    ]  # fmt: skip
    for record in records:
        stem = file_stem(record["id"])
        section = folder / f"{stem}.md"
        if section.exists():  # its figure is beside it: from here, under claims/
            text = section.read_text().replace(f"]({stem}.png)", f"](claims/{stem}.png)")
            lines.append(text)
    path = out / "claims.md"
    path.write_text("\n".join(lines))
    return path
