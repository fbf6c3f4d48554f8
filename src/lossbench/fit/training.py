"""One Lightning fit for a set of runs that can be stacked (see :func:`lossbench.sweep.stacking.stack_key`).

This module imports Lightning; light commands and the sweep's main process never import it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import SLURMEnvironment

from lossbench.config.checks import MEMBER_SAFE, epoch_metrics
from lossbench.config.spec import batch_rows, build, build_trainer
from lossbench.fit.batches import InMemoryDataModule
from lossbench.fit.diagnostics import Diagnostics
from lossbench.fit.heap import limit_heap_growth
from lossbench.fit.model_export import save_member, wants_models
from lossbench.fit.module import EpochRow, RecipeModule
from lossbench.fit.platform_facts import float_tags
from lossbench.identity import canonical
from lossbench.problem.data import SplitData, load_dataset
from lossbench.problem.metrics import build_metrics
from lossbench.recipe.early_stopping import member_stopping
from lossbench.recipe.stacked_optim import Recipe, StackedOptimizer, group_key, member_schedules
from lossbench.results import RunResult
from lossbench.sweep.live import MemberRow, member_rows
from lossbench.sweep.stacking import vectorized_optimizer


def fit_members(
    cfgs: Sequence[dict[str, Any]],
    data: SplitData | None = None,
    on_epoch_end: Callable[[int, list[MemberRow]], None] | None = None,
    exact: bool = False,
) -> list[RunResult]:
    """Train the runs described by ``cfgs`` together, as stacked members of one model.

    The configs must share everything but their seed, loss, penalty, optimizer and schedule
    (see :func:`lossbench.sweep.stacking.stack_key`); the first one's ``metrics`` are everyone's. Returns one result per config, in order: its
    per-epoch metrics, its test metrics and ``time/seconds``, the fit's wall time shared
    equally among its members, and tags naming what decided its floating-point results
    (:func:`lossbench.fit.platform_facts.float_tags`). ``on_epoch_end(epoch, rows)`` gets each
    epoch's values as they come, one row per config (``None`` for a member that has diverged).
    ``exact``: the same fit in float64 (the audit's: see :mod:`lossbench.sweep.audit`).
    """
    limit_heap_growth()  # a worker trains stack after stack: its memory stays flat
    order = _member_order(cfgs)
    stacked = [cfgs[i] for i in order]
    first = stacked[0]
    torch.set_num_threads(int(first["threads"]))
    pl.seed_everything(int(first["seed"]), workers=False, verbose=False)
    if data is None:
        data = load_dataset(first["dataset"], int(first["data_seed"]))
    seeds = [int(c["seed"]) for c in stacked]

    def epoch_rows(epoch: int, row: EpochRow, alive: torch.Tensor) -> None:
        # (not a closure over the module: a cycle would keep each fit's tensors until a full
        # collection, and the workers' memory grew by 200 MB over the standard sweep)
        assert on_epoch_end is not None
        on_epoch_end(epoch, member_rows(row, order, alive.tolist()))

    model = build(first["model"])(
        in_features=data.n_features, out_features=data.n_outputs, seeds=seeds
    )
    module = RecipeModule(
        model=model,
        losses=[build(c["loss"]) for c in stacked],
        **_recipes(stacked),
        data=data,
        penalties=[(str(c["penalty"]["kind"]), float(c["penalty"]["strength"])) for c in stacked],
        on_epoch_end=epoch_rows if on_epoch_end is not None else None,
        metrics=build_metrics(first.get("metrics"), data.task),
        stopping=member_stopping(first, epoch_metrics(first, data.task), len(stacked)),
    )
    datamodule = InMemoryDataModule(data, seeds, batch_rows(first["batch_size"], data))
    trainer_cfg, callbacks = config_callbacks(first["trainer"])
    if callbacks and len(cfgs) == 1:  # they may watch metrics Lightning has logged
        module.log_epoch_metrics = True
    elif callbacks and not all(getattr(type(c), MEMBER_SAFE, False) is True for c in callbacks):
        raise ValueError("callbacks that are not member-safe cannot see a stack (they train alone)")
    if Diagnostics.wanted(first.get("diagnostics")):
        x_train = torch.from_numpy(data.x_train)
        callbacks.append(Diagnostics(first["diagnostics"], x_train, data.summary()))
    if exact:
        trainer_cfg["precision"] = "64-true"
    if SLURMEnvironment.detect():
        # in a SLURM job (executor=slurm) Lightning would requeue the job itself on SIGUSR1;
        # the sweep retries a lost stack instead, so a stack must never run twice in SLURM
        trainer_cfg["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    trainer: pl.Trainer = build_trainer(trainer_cfg, callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    trainer.test(module, datamodule=datamodule, verbose=False)
    seconds = (time.perf_counter() - start) / len(cfgs)
    results: list[RunResult] = [RunResult()] * len(cfgs)
    diverged_at, stopped_at = module.diverged_at.tolist(), module.stopped_at.tolist()
    end = {name: value.detach().cpu() for name, value in module.end_metrics.items()}
    # the device the strategy trained on: the module itself is moved back to the CPU after fit
    facts = float_tags(trainer.strategy.root_device)
    log_model = wants_models(first)
    for member, index in enumerate(order):
        results[index] = RunResult.from_rows(
            module.history, end, member, seconds, diverged_at[member], stopped_at[member]
        )
        results[index].tags.update(facts)
        if log_model and results[index].status == "FINISHED":
            results[index].model_files = save_member(model, member, data)
    return results


def config_callbacks(trainer: dict[str, Any]) -> tuple[dict[str, Any], list[pl.Callback]]:
    """The Trainer config without its ``callbacks``, and those callbacks built: they join
    lossbench's own (a ``callbacks=`` keyword would replace the config's list)."""
    trainer = dict(trainer)
    nodes = trainer.pop("callbacks", None) or []
    if isinstance(nodes, dict):  # Lightning takes one callback as well as a list
        nodes = [nodes]
    return trainer, [build(node) for node in nodes]


def _member_order(cfgs: Sequence[dict[str, Any]]) -> list[int]:
    """The order of the members in the stack: by optimizer group where recipes differ (each
    group's update then works on one slice of the parameters), then by loss (each loss sees a
    slice of the outputs, or, across groups, a few gathered rows: far fewer values)."""
    groups: dict[str, str] = {}
    if len({canonical(c["optimizer"]) for c in cfgs}) > 1:
        for cfg in cfgs:
            key = canonical(cfg["optimizer"])
            if key not in groups:
                groups[key] = group_key(_recipe(cfg))

    def position(i: int) -> tuple[str, str]:
        return groups.get(canonical(cfgs[i]["optimizer"]), ""), canonical(cfgs[i]["loss"])

    return sorted(range(len(cfgs)), key=position)


def _recipe(cfg: dict[str, Any]) -> Recipe:
    scheduler = build(cfg["scheduler"]) if cfg.get("scheduler") else None
    return Recipe(build(cfg["optimizer"]), scheduler, vectorized_optimizer(cfg["optimizer"]))


def _recipes(cfgs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The module's ``optimizer`` and ``scheduler``: torch.optim and the schedule itself when
    every member has the same recipe and lossbench's vectorized update implements it (its
    update is elementwise: the stacked tensors step as the plain model's would), else a
    :class:`StackedOptimizer` that steps each member with its own (built once per distinct
    recipe; an optimizer it does not vectorize gets an instance per member, over the plain
    model's shapes)."""
    keys = [canonical([c["optimizer"], c.get("scheduler")]) for c in cfgs]
    distinct = list(dict.fromkeys(keys))
    recipes = [_recipe(cfgs[keys.index(key)]) for key in distinct]
    if len(recipes) == 1 and recipes[0].vectorized:
        return {"optimizer": recipes[0].optimizer, "scheduler": recipes[0].scheduler}
    member_recipe = [distinct.index(key) for key in keys]
    return {
        "optimizer": functools.partial(
            StackedOptimizer, recipes=recipes, member_recipe=member_recipe
        ),
        "scheduler": member_schedules,
    }
