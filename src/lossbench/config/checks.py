"""Checks that catch bad input before any training or recording: a run config is checked end to
end without training it (:func:`check_run`).

Imports torch (to dry-run losses, optimizers and schedules on dummies) but never Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from lossbench.config.keys import UnknownKey, check_known_keys
from lossbench.config.spec import (
    CONF_DIR,
    GROUPS,
    ConfigError,
    RunSpec,
    batch_rows,
    build,
    build_trainer,
)
from lossbench.config.trainer_options import check_trainer_options
from lossbench.identity import canonical
from lossbench.tracking.write_paths import parse_setting

if TYPE_CHECKING:
    from lossbench.problem.data import SplitData


@cache
def group_options(group: str) -> tuple[str, ...]:
    """The option names of a config group (its YAML files under ``conf/<group>/``)."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


@cache
def losses_of_kind(kind: str) -> tuple[str, ...]:
    """Names of the loss options whose class is a ``kind`` ("classification"/"regression") loss."""
    import yaml
    from hydra.utils import get_class

    names = []
    for name in group_options("loss"):
        target = yaml.safe_load((CONF_DIR / "loss" / f"{name}.yaml").read_text()).get("_target_")
        if target and getattr(get_class(target), "kind", None) == kind:
            names.append(name)
    return tuple(names)


def _unwrap(err: Exception) -> str:
    """The useful part of an error raised inside Hydra's instantiate."""
    cause = err.__cause__ or err
    return f"{type(cause).__name__}: {cause}" if not isinstance(cause, ValueError) else str(cause)


def _check_int(cfg: Mapping[str, Any], key: str, minimum: int) -> None:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        where = "tracking." if key == "log_every_n_epochs" else ""
        raise ConfigError(f"{where}{key}={value!r} must be an integer >= {minimum}")


def config_metrics(cfg: Mapping[str, Any], task: str) -> list[str]:
    """Names of the ``metrics:`` entries of a config that a run on ``task`` data (binary,
    multiclass or regression) records, as val/<name> and test/<name>. (Reads the config only.)"""
    kind = "regression" if task == "regression" else "classification"
    nodes = cfg.get("metrics") or {}
    return [
        str(name)
        for name, node in nodes.items()
        if isinstance(node, Mapping) and node.get("task") == kind
    ]


def epoch_metrics(cfg: Mapping[str, Any], task: str) -> set[str]:
    """The metrics a run of this config records every epoch (what early stopping may watch)."""
    every_epoch = [
        name
        for name in config_metrics(cfg, task)
        if (cfg.get("metrics") or {})[name].get("every_epoch")
    ]
    builtin = ("rmse", "mae", "r2") if task == "regression" else ("acc", "balanced_acc", "f1_macro")
    return {
        "train/loss",
        "train/grad_norm",
        "lr",
        *(f"val/{m}" for m in ("loss", *builtin, *every_epoch)),
    }


def recorded_metrics(cfg: Mapping[str, Any], task: str) -> set[str]:
    """The metric names a run of this config records (per epoch and at the end), for claims to
    check their metrics against before anything trains."""
    split = [
        "loss",
        *(("rmse", "mae", "r2") if task == "regression" else ("acc", "balanced_acc", "f1_macro")),
        *config_metrics(cfg, task),
    ]
    names = {
        "train/loss",
        "train/grad_norm",
        "lr",
        "train/final_loss",
        "time/seconds",
        "time/epoch_seconds",
    }
    names |= {f"{prefix}/{m}" for prefix in ("val", "test") for m in split}
    diagnostics = cfg.get("diagnostics") or {}
    layers = len(cfg["model"].get("hidden", [])) + 1
    if diagnostics.get("layer_grad_norms"):
        names |= {f"grad_norm/layer{i}" for i in range(layers)}
    if diagnostics.get("update_size"):
        names.add("update/size")
    if diagnostics.get("step_loss_noise"):
        names.add("train/step_loss_noise")
    if diagnostics.get("weights"):
        names |= {
            f"weights/{k}/layer{i}" for k in ("norm", "near_zero_share") for i in range(layers)
        }
    if diagnostics.get("dead_units") and layers > 1:
        names.add("units/dead_share")
    if diagnostics.get("target"):
        names |= {"target/epochs", "target/reached", "target/seconds"}  # seconds: read from epochs
    if diagnostics.get("coefficients") and layers == 1 and task == "regression":
        names |= {"coef/b", "ols/b", "ols/b_low", "ols/b_high"}
        names |= {"coef/w*", "ols/w*"}  # one per input feature
    return names


def check_target(cfg: Mapping[str, Any], task: str) -> None:
    """``diagnostics.target`` watches a validation metric the run records every epoch (else
    it would never be reached, silently), and its value is a number."""
    target = (cfg.get("diagnostics") or {}).get("target")
    if not isinstance(target, Mapping):
        return
    valid = sorted(m for m in epoch_metrics(cfg, task) if m.startswith("val/"))
    metric = target.get("metric")
    if metric not in valid:
        every = "; a metric of yours: every_epoch: true" if str(metric).startswith("val/") else ""
        raise ConfigError(
            f"diagnostics.target.metric={metric!r} is not a validation metric this run records "
            f"every epoch ({task} data); valid: {', '.join(valid)}{every}"
        )
    value = target.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"diagnostics.target.value={value!r} must be a number")


def check_seed(cfg: Mapping[str, Any]) -> None:
    """The training seed must be a non-negative integer."""
    _check_int(cfg, "seed", 0)


def _label(spec: RunSpec, group: str) -> str:
    choice = spec.choices.get(group)
    return f"{group}={choice}" if choice else group


def _key(*parts: Any) -> str:
    return canonical(parts)


def check_run(spec: RunSpec, seen: dict[str, Any] | None = None) -> SplitData:
    """Check a run config end to end without training it, and return its data.

    Builds every component on small dummies, so any value torch or Lightning would reject later
    is rejected now, with the key that holds it. Raises :class:`ConfigError`.

    ``seen``: a dict shared by the checks of several runs (a sweep's), so that each distinct
    component (the data of a dataset config and data seed, a model, a loss on its data, an
    optimizer, a schedule, a trainer config) is built once; runs that share it only repeat
    the cheap checks. Only components that passed are kept: a bad one fails each time.
    """
    from lossbench.problem.data import DatasetError, load_dataset
    from lossbench.problem.losses import check_penalty

    seen = {} if seen is None else seen
    cfg = spec.cfg
    keys_key = _key("keys", cfg)
    if keys_key not in seen:
        try:
            check_known_keys(cfg, CONF_DIR, GROUPS)
        except UnknownKey as err:
            raise ConfigError(str(err)) from None
        seen[keys_key] = True
    check_seed(cfg)
    _check_int(cfg, "data_seed", 0)
    _check_int(cfg, "threads", 1)
    _check_int(cfg["trainer"], "max_epochs", 1)
    tracking = cfg.get("tracking") or {}
    if "log_every_n_epochs" in tracking:
        _check_int(tracking, "log_every_n_epochs", 1)
    try:
        parse_setting(tracking.get("sql_batches", "auto"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    flush = tracking.get("flush_every_s")
    if flush is not None and (
        isinstance(flush, bool) or not isinstance(flush, int | float) or flush < 0
    ):
        raise ConfigError(
            f"tracking.flush_every_s={flush!r} must be a number of seconds >= 0 "
            "(0: as rows arrive), or null (write metrics only when a run ends)"
        )

    data_key = _key("data", cfg["dataset"], cfg["data_seed"])
    if data_key not in seen:
        try:
            seen[data_key] = load_dataset(cfg["dataset"], int(cfg["data_seed"]))
        except DatasetError as err:
            raise ConfigError(f"{_label(spec, 'dataset')}: {err}") from err
    data: SplitData = seen[data_key]
    batch_rows(cfg["batch_size"], data)
    try:
        check_penalty(str(cfg["penalty"]["kind"]), float(cfg["penalty"]["strength"]))
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err

    model_key = _key("model", cfg["model"], data.n_features, data.n_outputs)
    if model_key not in seen:
        try:
            seen[model_key] = build(cfg["model"])(
                in_features=data.n_features, out_features=data.n_outputs, seeds=[0]
            )
        except Exception as err:
            raise ConfigError(f"{_label(spec, 'model')}: {_unwrap(err)}") from err
    model = seen[model_key]

    loss_key = _key("loss", cfg["loss"], data_key, model_key)
    if loss_key not in seen:
        _check_loss(spec, data, model)
        seen[loss_key] = True

    lr = cfg["optimizer"].get("lr")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        raise ConfigError(f"optimizer.lr={lr!r} must be a number > 0 ({_label(spec, 'optimizer')})")
    recipe_key = _key("recipe", cfg["optimizer"], cfg.get("scheduler"), loss_key,
                      cfg["trainer"]["max_epochs"])  # fmt: skip
    if recipe_key not in seen:
        _check_recipe(spec, data, model)
        seen[recipe_key] = True

    metrics_key = _key("metrics", cfg.get("metrics"), data_key, model_key)
    if metrics_key not in seen:
        _check_metrics(spec, data, model)
        seen[metrics_key] = True

    if cfg.get("early_stopping"):
        from lossbench.recipe.early_stopping import StoppingRule

        try:
            StoppingRule.of(cfg["early_stopping"], epoch_metrics(cfg, data.task))
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err)) from None

    diagnostics_key = _key("diagnostics", cfg.get("diagnostics"))
    if diagnostics_key not in seen:
        try:
            from lossbench.fit.diagnostics import check_diagnostics

            check_diagnostics(cfg.get("diagnostics") or {})
        except ValueError as err:
            raise ConfigError(str(err)) from err
        seen[diagnostics_key] = True
    check_target(cfg, data.task)

    trainer_key = _key("trainer", cfg["trainer"])
    if trainer_key not in seen:
        try:
            check_trainer_options(cfg["trainer"])
        except ValueError as err:
            raise ConfigError(f"{_label(spec, 'trainer')}: {err}") from None
        _check_trainer(spec)
        seen[trainer_key] = True
    return data


def _check_loss(spec: RunSpec, data: SplitData, model: Any) -> None:
    """The loss builds, suits the task, and takes the model's output on a few rows."""
    import torch

    try:
        loss = build(spec.cfg["loss"])
    except Exception as err:
        raise ConfigError(f"{_label(spec, 'loss')}: {_unwrap(err)}") from err
    if data.task == "regression" and getattr(loss, "kind", None) == "classification":
        raise ConfigError(
            f"{_label(spec, 'loss')} is a classification loss, but {_label(spec, 'dataset')} is a "
            f"regression task. Losses for regression: {', '.join(losses_of_kind('regression'))}"
        )
    from lossbench.config.recipe_checks import check_loss

    x = torch.from_numpy(data.x_train[:4])
    y = torch.from_numpy(data.y_train[:4])
    try:
        check_loss(loss, model(x), y.expand(1, -1))
    except Exception as err:
        raise ConfigError(f"{_label(spec, 'loss')} on {data.task} data: {_unwrap(err)}") from err


def _check_metrics(spec: RunSpec, data: SplitData, model: Any) -> None:
    """Every ``metrics:`` entry is well formed, its ``_target_`` imports and is callable, and
    those for this task take the model's outputs on a few rows and give one value per member."""
    import torch

    from lossbench.problem.metrics import build_metric, member_values, metric_inputs

    nodes = spec.cfg.get("metrics") or {}
    if not isinstance(nodes, Mapping):
        raise ConfigError(
            f"metrics={nodes!r} must be a mapping of name -> {{_target_: ..., task: ...}}"
        )
    built = {}
    for name, node in nodes.items():
        try:
            built[name] = build_metric(name, node)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    wanted = set(config_metrics(spec.cfg, data.task))
    if not wanted:
        return
    x = torch.from_numpy(data.x_val[:8])
    y = torch.from_numpy(data.y_val[:8])
    with torch.no_grad():
        outputs, target = metric_inputs(model(x), y, data.task, data.y_mean, data.y_std)
    for name in sorted(wanted):
        try:
            member_values(name, built[name](outputs, target), 1)
        except Exception as err:
            raise ConfigError(
                f"metrics.{name} ({nodes[name]['_target_']}) on {data.task} outputs "
                f"{tuple(outputs.shape)}: {_unwrap(err)}"
            ) from err


def _check_recipe(spec: RunSpec, data: SplitData, model: Any) -> None:
    """The optimizer builds on the plain model's parameters and takes a step with its closure,
    and the schedule builds on it (:mod:`lossbench.config.recipe_checks`)."""
    import torch

    from lossbench.config.recipe_checks import check_optimizer, check_schedule

    cfg = spec.cfg
    plain = model.member(0).train()
    loss = build(cfg["loss"])
    x = torch.from_numpy(data.x_train[:4])  # the rows the loss's own check used
    y = torch.from_numpy(data.y_train[:4])
    try:
        factory = build(cfg["optimizer"])
        optimizer = check_optimizer(factory, plain, lambda: loss(plain(x)[None], y[None])[0])
    except Exception as err:
        raise ConfigError(f"{_label(spec, 'optimizer')}: {_unwrap(err)}") from err
    if cfg.get("scheduler"):
        try:
            check_schedule(build(cfg["scheduler"]), optimizer, int(cfg["trainer"]["max_epochs"]))
        except Exception as err:
            raise ConfigError(f"{_label(spec, 'scheduler')}: {_unwrap(err)}") from err


# Callbacks lossbench does the work of: refused, saying what to use instead
REPLACED_CALLBACKS = {
    "LearningRateMonitor": "lossbench records each member's learning rate every epoch as the "
    "metric lr (its first param group's, as the epoch starts); remove LearningRateMonitor (it "
    "needs a Lightning logger, which lossbench's MLflow recording replaces)",
    "ModelCheckpoint": "use tracking.log_model=true: each run logs its trained member as an "
    "MLflow model (the best epoch's with early_stopping.restore=best); remove ModelCheckpoint",
}
MEMBER_SAFE = "lossbench_member_safe"  # a callback class's declaration that it may stack


def callbacks_member_safe(trainer: Mapping[str, Any]) -> bool:
    """Whether every callback of a ``trainer`` config declares itself safe in a stack (its
    class has ``lossbench_member_safe = True``: it observes the fit and acts on no member);
    ``ValueError`` for a callback lossbench replaces. Builds the callbacks."""
    nodes = trainer.get("callbacks") or []
    built = [build(node) for node in ([nodes] if isinstance(nodes, Mapping) else nodes)]
    for callback in built:
        for name, why in REPLACED_CALLBACKS.items():
            if any(c.__name__ == name for c in type(callback).__mro__):
                raise ValueError(f"trainer.callbacks: {type(callback).__name__}: {why}")
    return bool(built) and all(getattr(type(c), MEMBER_SAFE, False) is True for c in built)


def _check_trainer(spec: RunSpec) -> None:
    """Lightning builds the Trainer (it checks its own arguments: accelerator, ...)."""
    cfg = spec.cfg
    try:
        callbacks_member_safe(cfg["trainer"])
    except ValueError as err:
        raise ConfigError(f"{_label(spec, 'trainer')}: {err}") from None
    try:
        build_trainer(cfg["trainer"])
    except Exception as err:
        message = _unwrap(err)
        if "unexpected keyword argument" in message:
            import inspect

            import pytorch_lightning as pl

            valid = ", ".join(p for p in inspect.signature(pl.Trainer).parameters if p != "self")
            message += f"; valid keys: {valid}"
        accelerator = cfg["trainer"].get("accelerator", "auto")
        usable = _usable_accelerators()
        if isinstance(accelerator, str) and accelerator not in usable:
            # Lightning's message may name neither (for tpu: a missing package's requirement)
            message = (
                f"trainer.accelerator={accelerator!r} cannot be used here ({message}); "
                f"usable here: {', '.join(usable)}"
            )
        raise ConfigError(f"{_label(spec, 'trainer')}: {message}") from err


def _usable_accelerators() -> list[str]:
    """Lightning's accelerator names that work on this machine, ``auto`` first."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    usable = ["auto"]
    for name in sorted(AcceleratorRegistry.available_accelerators()):
        try:
            if AcceleratorRegistry[name]["accelerator"].is_available():
                usable.append(name)
        except Exception:  # noqa: BLE001 (e.g. an optional package it needs is missing)
            continue
    if "cuda" in usable or "mps" in usable:
        usable.append("gpu")  # Lightning's name for either
    return usable
