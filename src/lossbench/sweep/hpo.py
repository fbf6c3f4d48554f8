"""Tuning with Optuna inside a Hydra sweep: one study per combination of the swept groups
(e.g. the learning rate per optimizer).

lossbench's sweeper runs this when ``hydra.sweeper.optuna.search`` is set. It is written on
current Optuna because Hydra's Optuna sweeper pins optuna < 3 and stops the sweep when a trial
returns NaN. Every trial is an ordinary job of the launcher (an MLflow run under its
study's run, itself under the sweep's parent run); ``trials_per_round`` trials of each study run
together; a trial that diverges or fails gets ``penalty`` as its value: it steers the search
away, and the search goes on.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lossbench.config.spec import ConfigError

log = logging.getLogger(__name__)
SPACE = re.compile(r"^\s*(log|float|int|choice)\((.*)\)\s*$")


def parse_space(search: Mapping[str, str]) -> dict[str, Any]:
    """``{"optimizer.lr": "log(1e-4, 1)"}`` -> Optuna distributions; a :class:`ConfigError`
    names a bad entry and the valid forms."""
    import optuna

    space: dict[str, Any] = {}
    for key, text in search.items():
        match = SPACE.match(str(text))
        if not match:
            raise ConfigError(
                f"hydra.sweeper.optuna.search.{key}={text!r}: expected log(lo, hi), float(lo, hi), "
                "int(lo, hi) or choice(a, b, ...)"
            )
        kind, args = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        if kind == "choice":
            space[key] = optuna.distributions.CategoricalDistribution(args)
            continue
        if len(args) != 2:
            raise ConfigError(f"hydra.sweeper.optuna.search.{key}={text!r}: {kind} takes (lo, hi)")
        lo, hi = (float(a) for a in args)
        if not lo < hi or (kind == "log" and lo <= 0):
            raise ConfigError(
                f"hydra.sweeper.optuna.search.{key}={text!r}: needs lo < hi (and 0 < lo for log)"
            )
        if kind == "int":
            space[key] = optuna.distributions.IntDistribution(int(lo), int(hi))
        else:
            space[key] = optuna.distributions.FloatDistribution(lo, hi, log=kind == "log")
    return space


def objective(ret: Any, metric: str, penalty: float) -> float:
    """A trial's value: its final ``metric``, or ``penalty`` if it diverged, failed or lacks it."""
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        return penalty
    result = ret.return_value
    value = result.get(metric) if isinstance(result, dict) else None
    if (
        not isinstance(result, dict)
        or result.get("diverged")
        or value is None
        or not math.isfinite(value)
    ):
        return penalty
    return float(value)


def study_direction(
    metric: str, direction: str | None, declared: Mapping[str, bool] | None = None
) -> str:
    """``minimize`` or ``maximize``: as given, else as the metric's direction says
    (:mod:`lossbench.problem.directions`; ``declared``: the config's ``metrics:`` entries).
    ConfigError for another value, a direction that contradicts the metric's, or a metric
    without one and no direction given."""
    from lossbench.problem.directions import higher_is_better

    if direction is not None and direction not in ("minimize", "maximize"):
        raise ConfigError(f"hydra.sweeper.optuna.direction={direction!r}: minimize or maximize")
    higher = higher_is_better(metric, declared)
    implied = None if higher is None else ("maximize" if higher else "minimize")
    if direction is not None and implied is not None and direction != implied:
        raise ConfigError(
            f"hydra.sweeper.optuna.direction={direction} contradicts "
            f"hydra.sweeper.optuna.metric={metric}, where {'higher' if higher else 'lower'} is "
            f"better: use direction={implied} (or leave it out)"
        )
    if direction is None and implied is None:
        raise ConfigError(
            f"hydra.sweeper.optuna.metric={metric} has no better end: give "
            "hydra.sweeper.optuna.direction=minimize or maximize"
        )
    return str(direction or implied)


def run_studies(
    combos: Sequence[Sequence[str]],
    launch: Callable[[list[list[str]], int], Sequence[Any]],
    options: Mapping[str, Any],
    sweep_dir: Path,
    declared: Mapping[str, bool] | None = None,
) -> list[Sequence[Any]]:
    """One study per override combination, ``n_trials`` trials each, launched in rounds;
    returns the JobReturns of each round and writes the best trials to ``optuna_best.yaml``.
    ``declared``: the config's ``metrics:`` entries' directions (Optuna's default direction)."""
    import optuna
    from omegaconf import OmegaConf

    from lossbench.tracking.sweeps import log_studies, open_studies

    metric = str(options.get("metric", "val/loss"))
    direction = study_direction(metric, options.get("direction"), declared)
    n_trials, per_round = int(options.get("n_trials", 20)), int(options.get("trials_per_round", 2))
    if n_trials < 1 or per_round < 1:
        raise ConfigError("hydra.sweeper.optuna.n_trials and trials_per_round must be >= 1")
    penalty = options.get("penalty")
    # default: worse than any finite value (a fixed 1e9 would beat a finite loss of 1e30)
    penalty = (
        float(penalty)
        if penalty is not None
        else (math.inf if direction == "minimize" else -math.inf)
    )
    space = parse_space(options.get("search") or {})
    seed = int(options.get("seed", 0))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [
        optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(seed=seed + i))
        for i in range(len(combos))
    ]
    common = set.intersection(*(set(c) for c in combos)) if len(combos) > 1 else set(combos[0])
    labels = [" ".join(o for o in c if o not in common) or "all" for c in combos]
    open_studies(sweep_dir, list(zip(combos, labels, strict=True)))
    log.info(
        "Optuna: %d studies of %d trials on %s (%s)",
        len(studies),
        n_trials,
        metric,
        "; ".join(labels),
    )
    rounds: list[Sequence[Any]] = []
    asked, job = [0] * len(studies), 0
    while any(n < n_trials for n in asked):
        batch, trials = [], []
        for s, (study, combo) in enumerate(zip(studies, combos, strict=True)):
            for _ in range(min(per_round, n_trials - asked[s])):
                trial = study.ask(space)
                trials.append((study, trial))
                batch.append([*combo, *(f"{k}={v}" for k, v in trial.params.items())])
                asked[s] += 1
        results = launch(batch, job)
        job += len(batch)
        for (study, trial), ret in zip(trials, results, strict=True):
            study.tell(trial, objective(ret, metric, penalty))
        rounds.append(results)
    best = {}
    for label, study in zip(labels, studies, strict=True):
        if not math.isfinite(study.best_value):
            log.warning("Optuna: every trial of %s diverged or failed", label)
            best[label] = {"value": None, "params": {}}
            continue
        best[label] = {"value": study.best_value, "params": study.best_params}
        log.info(
            "Optuna best for %s: %s = %.4g with %s",
            label,
            metric,
            study.best_value,
            study.best_params,
        )
    (sweep_dir / "optuna_best.yaml").write_text(OmegaConf.to_yaml(best))
    log_studies(sweep_dir, best, metric)
    return rounds
