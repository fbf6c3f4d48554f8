"""Running the claims' sweeps: through :func:`lossbench.sweep.run.run_sweep`, as the launcher
does, so that nothing already in the store trains again and a config shared by two claims
trains once; then reading back what evaluation needs."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lossbench.claims.evidence import RunData
from lossbench.claims.select import selects
from lossbench.claims.spec import Claim, ClaimError, RunKey, check_direction, job_key
from lossbench.config.checks import recorded_metrics
from lossbench.config.spec import CONF_DIR, RunSpec
from lossbench.identity import config_hash
from lossbench.problem.directions import config_directions, recorded_directions


def run_claims(
    claims: Sequence[Claim],
    uri: str,
    experiment: str,
    n_jobs: int | None,
    sweep_dir: Path,
    config_dir: Path | None = None,
) -> dict[RunKey, RunData]:
    """Train what the store does not hold yet for these claims; return every job's run data.
    ``config_dir``: a folder of the user's own config options, searched after lossbench's."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from hydra.types import RunMode

    from lossbench.interrupts import interrupts
    from lossbench.sweep.checking import check_all
    from lossbench.sweep.executors import make_executor, worker_count
    from lossbench.sweep.jobs import compose_jobs
    from lossbench.sweep.plan import SweepPlan
    from lossbench.sweep.run import run_sweep
    from lossbench.tracking.records import metric_histories
    from lossbench.tracking.writer import Tracker

    keys, overrides, alone = [], [], set()
    for claim in claims:
        for labels, seed, job in claim.jobs():
            if not claim.stack:
                alone.add(len(keys))
            keys.append(job_key(claim, labels, seed))
            overrides.append([*job, f"tracking.experiment={experiment}", f"tracking.uri={uri}"])
    if not keys:
        return {}
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        search = [f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"] if config_dir else []
        try:
            master = loader.load_configuration("train", search, run_mode=RunMode.MULTIRUN)
            jobs = compose_jobs(loader, master, overrides, 0)
        except HydraException as err:
            raise ClaimError(f"composing the claims' runs: {err}") from None
    GlobalHydra.instance().clear()
    specs = [job.spec for job in jobs]
    for spec in specs:
        spec.cfg["rerun"] = False

    def announce(plan: SweepPlan) -> None:
        print(f"{len(specs)} runs for {len(claims)} claims: {len(plan.done)} already in the store, "
              f"{plan.shared} shared between claims, {plan.trained} to train as {len(plan.stacks)} "
              f"fits on {plan.n_workers} worker(s)", flush=True)  # fmt: skip

    n_workers = worker_count(n_jobs, len(specs))
    executor = make_executor(n_workers)
    interrupted = True
    try:
        with interrupts():
            facts = check_all(specs, executor, n_workers)
            check_metrics(claims, keys, specs, facts)
            run_sweep(specs, facts, sweep_dir, executor, n_workers, lambda job, result: None,
                         alone=alone, on_plan=announce)  # fmt: skip
        interrupted = False
    finally:
        executor.stop(kill=interrupted)

    latest = Tracker(uri, experiment).latest_runs()
    data: dict[RunKey, RunData] = {}
    for key, spec in zip(keys, specs, strict=True):
        record = latest.get(config_hash(spec.cfg))
        max_epochs = int(spec.cfg["trainer"]["max_epochs"])
        val_every = int(spec.cfg["trainer"].get("check_val_every_n_epoch") or 1)
        if record is None:
            data[key] = RunData("missing", {}, {}, max_epochs, val_every=val_every)
        else:
            audit = record.tags.get("lossbench.audit")
            data[key] = RunData(record.outcome, record.metrics, {}, max_epochs, record.run_id,
                                audit, recorded_directions(record.params), val_every)  # fmt: skip
    needed: dict[str, set[str]] = {}
    for claim in claims:
        selectors = [a.metric for a in claim.assertions if a.metric is not None]
        selectors += [claim.nuisance.select] if claim.nuisance else []
        for selector in selectors:
            if selector.needs_history:
                for key, run in data.items():
                    if key[0] == claim.id and run.run_id:
                        needed.setdefault(selector.name, set()).add(run.run_id)
    for name, run_ids in needed.items():
        histories = metric_histories(uri, sorted(run_ids), name)
        for run in data.values():
            if run.run_id in histories:
                run.histories[name] = histories[run.run_id]
    return data


def check_metrics(
    claims: Sequence[Claim],
    keys: Sequence[RunKey],
    specs: Sequence[RunSpec],
    facts: Sequence[Mapping[str, Any]],
) -> None:
    """Every metric a claim reads must be one its runs record, and an assertion judged at a
    chosen nuisance value may not read epochs to a validation target (before anything trains)."""
    by_claim = {}
    for key, spec, fact in zip(keys, specs, facts, strict=True):
        by_claim.setdefault(key[0], (spec, fact))
    for claim in claims:
        if claim.id not in by_claim:
            continue
        spec, fact = by_claim[claim.id]
        names = recorded_metrics(spec.cfg, str(fact["task"]))
        _check_directions(claim, config_directions(spec.cfg))
        reads = [("nuisance select", claim.nuisance.select.name)] if claim.nuisance else []
        for i, assertion in enumerate(claim.assertions):
            wanted = [] if assertion.metric is None else [assertion.metric.name]
            wanted += [str(assertion.options[k]) for k in ("low", "high") if k in assertion.options]
            reads += [(f"assert[{i}]", metric) for metric in wanted]
            if selects(claim, assertion):
                _check_target_split(claim, spec.cfg, wanted, f"assert[{i}]")
        for where, metric in reads:
            if not any(fnmatch.fnmatch(metric, pattern) for pattern in names):
                raise ClaimError(
                    f"{claim.path.name}: {where} reads metric {metric!r}, which its runs do not "
                    f"record; they record: {', '.join(sorted(names))} (switch diagnostics on in "
                    "base for the others)"
                )


def _check_directions(claim: Claim, declared: dict[str, bool]) -> None:
    """With the runs' ``metrics:`` entries known: the direction of every metric the claim
    chooses or ranks by, or reads at its best (a nuisance's ``select`` is set to it)."""
    where = claim.path.name
    if claim.nuisance is not None:
        nuisance = claim.nuisance
        higher = check_direction(
            nuisance.select.name, nuisance.mode, [], f"{where}: nuisance", declared
        )
        claim.nuisance = replace(nuisance, higher=higher)
    for i, assertion in enumerate(claim.assertions):
        metric = assertion.metric
        if metric is None:
            continue
        if (
            assertion.kind in ("beats", "ranks_first")
            or metric.at == "best"
            or metric.diverged == "worst"
        ):
            mode = (
                assertion.options.get("mode")
                if assertion.kind in ("beats", "ranks_first")
                else None
            )
            check_direction(metric.name, mode, [], f"{where}: assert[{i}]:", declared)


def _check_target_split(
    claim: Claim, cfg: Mapping[str, Any], metrics: Sequence[str], where: str
) -> None:
    """``target/*`` counts epochs to a target on ``diagnostics.target.metric``: judged at a
    nuisance value chosen on validation, that metric may not be a validation one."""
    target = ((cfg.get("diagnostics") or {}).get("target") or {}).get("metric")
    for metric in metrics:
        if metric.startswith("target/") and str(target).startswith("val/"):
            assert claim.nuisance is not None
            raise ClaimError(
                f"{claim.path.name}: {where} judges {metric!r}, epochs to a target on {target}: "
                f"the validation split, where the nuisance {claim.nuisance.axis!r} is selected "
                f"({claim.nuisance.select.name}); judge on another split"
            )
