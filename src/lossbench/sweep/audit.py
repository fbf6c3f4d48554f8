"""The audit: every sweep checks its own promise on one member of each stack.

A stacked fit is a faster way to compute each member's plain model (:mod:`lossbench.fit.reference`),
never a different computation. The audit checks that on the user's actual recipe: after a stack
trains, the worker trains the stack again in float64 through the same code path (stacking,
per-member optimizers, schedules, masks), and one member's plain model in float64 by the plain
loop, the member chosen by a seed drawn from the stack's configs (the same stack audits the
same member). Every per-epoch and final metric of that member must agree with its plain model
within the tolerance policy (1e-5, relative or absolute).

**Why float64.** Two code paths round differently in the last bits, and unstable training
amplifies that: rmsprop at lr 0.05 with an exponential schedule puts a float32 stacked member
5.6e-3 from its float32 plain model after 4 epochs, with no coupling at all (the member's
results are bit for bit the same whatever its companions); the float32 and float64 plain models
themselves drift apart by up to 6e-2 in 5 epochs there. In float64 the same rounding starts 2^29
times smaller, and the stack and the plain model agree to 2e-14 over 8 epochs of that training
(``scripts/exactness.py``), while a coupling between members (one
member's gradient, norm or state reaching another) does not depend on precision and shows at
full size (1e-2 and up in the cases found). So the audit compares computations, not
roundings, and holds in chaotic training too.

Modes (``hydra.launcher.audit``): ``auto`` (default) audits a stack whose runs use anything
outside lossbench's own tested menu: a ``_target_`` that no shipped config names (a user's
optimizer, loss, schedule, metric or data source) or ``trainer.callbacks``; ``all`` audits
every stack; ``off`` none. Cost per audited stack: the stack's fit again in float64 (about 1.4
times the float32 fit) and one plain run in float64.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lossbench.config.spec import CONF_DIR
from lossbench.identity import config_hash
from lossbench.results import RunResult

AUDIT_MODES = ("auto", "all", "off")
RTOL = ATOL = 1e-5  # the tolerance policy (tests/conftest.py)
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
    worst: float  # the largest relative difference, |stacked - plain| / |plain|, in float64
    where: str  # the value that failed, or the one with the largest difference

    def tags(self, member: int, seed: int) -> dict[str, str]:
        """The tags every run of the audited stack gets."""
        return {
            TAG: "passed" if self.passed else "failed",
            f"{TAG}_difference": f"{self.worst:.2e}",
            f"{TAG}_member": f"{member} (seed {seed})",
            **({f"{TAG}_detail": self.where} if not self.passed else {}),
        }


def _values(result: RunResult, names: Sequence[str]) -> dict[str, float]:
    """``metric[epoch]`` -> value of the per-epoch metrics ``names``, and the final values."""
    values = {f"{name}[{epoch}]": value for name in names for epoch, value in result.points(name)}
    values.update({k: v for k, v in result.final.items() if not k.startswith("time/")})
    return values


def compare(stacked: RunResult, plain: RunResult) -> Finding:
    """Every value the stacked run records of what the plain model records (the plain loop
    validates every epoch; a fit may validate less often), within the tolerance policy."""
    names = sorted(plain.series)
    mine, reference = _values(stacked, names), _values(plain, names)
    missing = sorted(set(plain.series) - set(stacked.series))
    missing += sorted(k for k in plain.final if k not in stacked.final and k in reference)
    if missing:
        return Finding(False, float("inf"), f"{missing[0]}: not recorded by the stacked run")
    worst, where, failure = 0.0, "", ""
    for key, value in mine.items():
        if key not in reference:  # a metric of the fit's own (diagnostics): not the plain model's
            continue
        expected = reference[key]
        scale = max(abs(expected), 1e-12)
        difference = abs(value - expected)
        if difference / scale > worst:
            worst, where = difference / scale, f"{key}: {value:.6g} vs plain {expected:.6g}"
        if difference > max(ATOL, RTOL * abs(expected)) and not failure:
            failure = (
                f"{key}: {value:.8g} stacked vs {expected:.8g} plain, in float64 (relative "
                f"{difference / scale:.2e}; allowed 1e-05)"
            )
    return Finding(not failure, worst, failure or where)


def audit_stack(
    cfgs: Sequence[dict[str, Any]], results: Sequence[RunResult], data: Any = None
) -> None:
    """Audit one member of a stack that trained (``results``, in ``cfgs``' order) and tag every
    run with the outcome: passed or failed, or skipped where no member finished."""
    from lossbench.fit.reference import train_plain
    from lossbench.fit.training import fit_members

    exact = fit_members(cfgs, data, exact=True)
    order = audit_member(cfgs)
    finished = [i for i in order if results[i].status == exact[i].status == "FINISHED"]
    if not finished:
        for result in results:
            result.tags[TAG] = "skipped"
        return
    member = finished[0]
    finding = compare(exact[member], train_plain(cfgs[member], data, exact=True))
    tags = finding.tags(member, int(cfgs[member]["seed"]))
    for result in results:
        result.tags.update(tags)
