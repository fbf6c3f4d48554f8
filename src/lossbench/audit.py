"""The audit: every sweep checks its own promise on one member of each stack.

A stacked fit is a faster way to compute each member's plain model (:mod:`lossbench.reference`),
never a different computation. The audit takes one member of a stack, chosen by a seed drawn
from the stack's configs (the same stack audits the same member), trains its plain model alone
by the plain loop, and compares every per-epoch and final metric the reference records.

**Rounding.** Two code paths round differently in the last bits, and unstable training
amplifies that (rmsprop at lr 0.05 with an exponential schedule: 3.4e-3 after 4 epochs, with
torch's own RMSprop as well). So the audit measures the amplification on the spot: it trains
the plain model a second time from weights moved by one float32 rounding (each weight to the
next float up or down, from a fixed generator) and allows each value to differ from the reference by
the larger of the tolerance policy (1e-5, relative or absolute) and ``NOISE_FACTOR`` times what
that one rounding became at that value. A coupling between members (one member's gradient,
norm or state reaching another) moves results from the first steps on, by far more than
rounding (1e-2 and up in the cases found), and fails. A coupling smaller than what one rounding
becomes in this very training cannot be told from rounding: ``lossbench.audit_noise`` says how
large that was.

Modes (``hydra.launcher.audit``): ``auto`` (default) audits a stack whose runs use anything
outside lossbench's own tested menu: a ``_target_`` that no shipped config names (a user's
optimizer, loss, schedule, metric or data source) or ``trainer.callbacks``; ``all`` audits
every stack; ``off`` none. Costs one plain run per audited stack, twice (about 0.4 s each for the
standard 50-epoch run here).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lossbench.config import CONF_DIR
from lossbench.identity import config_hash
from lossbench.results import RunResult

AUDIT_MODES = ("auto", "all", "off")
RTOL = ATOL = 1e-5  # the tolerance policy (tests/conftest.py)
NOISE_FACTOR = 10.0  # times what one rounding of the weights became
TAG = "lossbench.audit"


@cache
def shipped_targets(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every ``_target_`` that a shipped config (``conf/**/*.yaml``) names."""
    import yaml

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if isinstance(node.get("_target_"), str):
                found.add(node["_target_"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in conf_dir.rglob("*.yaml"):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found)


def _targets(node: Any) -> Iterator[str]:
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield str(node["_target_"])
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def off_menu(cfg: Mapping[str, Any]) -> list[str]:
    """What in a run's config is outside lossbench's own tested menu (empty: nothing)."""
    shipped = shipped_targets()
    found = sorted({t for t in _targets(cfg) if t not in shipped})
    if cfg.get("trainer", {}).get("callbacks"):
        found.append("trainer.callbacks")
    return found


def wants_audit(cfgs: Sequence[Mapping[str, Any]], mode: str) -> bool:
    """Whether a stack of these runs is audited under ``mode`` (one of :data:`AUDIT_MODES`)."""
    if mode not in AUDIT_MODES:
        raise ValueError(f"hydra.launcher.audit={mode!r} is not one of {', '.join(AUDIT_MODES)}")
    return mode == "all" or (mode == "auto" and any(off_menu(cfg) for cfg in cfgs))


def audit_member(cfgs: Sequence[Mapping[str, Any]]) -> list[int]:
    """The members in the order the audit tries them: a seeded shuffle of the stack (the same
    configs give the same order, whatever order they come in)."""
    hashes = sorted(config_hash(cfg) for cfg in cfgs)
    seed = int(hashlib.sha256("|".join(hashes).encode()).hexdigest()[:16], 16)
    order = sorted(range(len(cfgs)), key=lambda i: config_hash(cfgs[i]))
    random.Random(seed).shuffle(order)
    return order


@dataclass
class Finding:
    """The audit of one member: the largest difference from its plain model and where."""

    passed: bool
    worst: float  # the largest relative difference, |stacked - plain| / |plain|
    noise: float  # the largest relative difference one rounding of the weights made
    where: str  # the value that failed, or the one with the largest difference

    def tags(self, member: int, seed: int) -> dict[str, str]:
        """The tags every run of the audited stack gets."""
        return {
            TAG: "passed" if self.passed else "failed",
            f"{TAG}_difference": f"{self.worst:.2e}",
            f"{TAG}_noise": f"{self.noise:.2e}",
            f"{TAG}_member": f"{member} (seed {seed})",
            **({f"{TAG}_detail": self.where} if not self.passed else {}),
        }


def _values(result: RunResult, names: Sequence[str]) -> dict[str, float]:
    """``metric[epoch]`` -> value of the per-epoch metrics ``names``, and the final values."""
    values = {f"{name}[{epoch}]": value for name in names for epoch, value in result.points(name)}
    values.update({k: v for k, v in result.final.items() if not k.startswith("time/")})
    return values


def compare(stacked: RunResult, plain: RunResult, nudged: RunResult) -> Finding:
    """Every value the stacked run records of what the plain model records (the plain loop
    validates every epoch; a fit may validate less often), stacked against plain, allowing
    the larger of the tolerance policy and :data:`NOISE_FACTOR` times the nudged run's
    difference."""
    names = sorted(plain.series)
    mine, reference, noisy = (_values(r, names) for r in (stacked, plain, nudged))
    worst = noise = 0.0
    where, failure = "", ""
    missing = sorted(set(plain.series) - set(stacked.series))
    missing += sorted(k for k in plain.final if k not in stacked.final and k in reference)
    if missing:
        return Finding(False, float("inf"), 0.0, f"{missing[0]}: not recorded by the stacked run")
    for key, value in mine.items():
        if key not in reference:  # a metric of the fit's own (diagnostics): not the plain model's
            continue
        expected = reference[key]
        scale = max(abs(expected), 1e-12)
        difference = abs(value - expected)
        spread = abs(noisy.get(key, expected) - expected)
        allowed = max(ATOL, RTOL * abs(expected), NOISE_FACTOR * spread)
        noise = max(noise, spread / scale)
        if difference / scale > worst:
            worst, where = difference / scale, f"{key}: {value:.6g} vs plain {expected:.6g}"
        if difference > allowed and not failure:
            failure = (
                f"{key}: {value:.6g} stacked vs {expected:.6g} plain (relative "
                f"{difference / scale:.2e}; allowed {allowed / scale:.2e})"
            )
    return Finding(not failure, worst, noise, failure or where)


def audit_stack(
    cfgs: Sequence[dict[str, Any]], results: Sequence[RunResult], data: Any = None
) -> None:
    """Audit one member of a stack that trained (``results``, in ``cfgs``' order) and tag every
    run with the outcome: passed or failed, or skipped where no member finished."""
    from lossbench.reference import train_plain

    finished = [i for i in audit_member(cfgs) if results[i].status == "FINISHED"]
    if not finished:
        for result in results:
            result.tags[TAG] = "skipped"
        return
    member = finished[0]
    plain = train_plain(cfgs[member], data)
    nudged = train_plain(cfgs[member], data, nudged=True)
    finding = compare(results[member], plain, nudged)
    tags = finding.tags(member, int(cfgs[member]["seed"]))
    for result in results:
        result.tags.update(tags)
