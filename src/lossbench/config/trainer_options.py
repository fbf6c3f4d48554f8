"""Which ``pytorch_lightning.Trainer`` options a run may set, and to what.

lossbench feeds the Trainer its own data path (every member's batches from tensors in memory),
records its own metrics and compares every run with its plain model (:mod:`lossbench.fit.reference`).
An option that changes what that path computes without lossbench following it would train
something other than the config says, silently: ``reload_dataloaders_every_n_epochs`` (the data
order is drawn per epoch anyway), ``overfit_batches`` (a new batch each epoch here),
``limit_train_batches`` (a part of each epoch), ``max_time`` (stops by the clock: not
reproducible), devices other than one, half precision. Such values are refused before
training; every option is checked against :data:`OPTIONS`, and an option not listed is refused
too, naming the supported ones.

Light: no torch, Lightning or Hydra imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]


def _any(value: Any) -> bool:
    return True


def _one_of(*allowed: Any) -> Check:
    return lambda value: any(value == a and type(value) is type(a) for a in allowed)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _steps(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and (value == -1 or value >= 1)


def _interval(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return (isinstance(value, float) and 0.0 < value <= 1.0) or _positive_int(value)


def _limit(value: Any) -> bool:  # validation and test: the whole split (one batch) or none
    return value in (1, 1.0) and not isinstance(value, bool)


# option -> (what it may be, its check). Values lossbench follows faithfully: the rest differ.
OPTIONS: dict[str, tuple[str, Check]] = {
    "_target_": ("pytorch_lightning.Trainer", _one_of("pytorch_lightning.Trainer")),
    "max_epochs": ("an integer >= 1", _positive_int),
    "max_steps": ("-1 (none) or an integer >= 1", _steps),
    "accelerator": ("any Lightning accelerator usable here", _any),
    "devices": ("1 (a fit trains on one device)", _one_of(1, "1", [0], "auto")),
    "precision": ("32 (float32: the plain model's)", _one_of(32, "32", "32-true")),
    "deterministic": ("true or false", _one_of(True, False, "warn")),
    "benchmark": ("true, false or null", _one_of(True, False, None)),
    "inference_mode": ("true or false", _one_of(True, False)),
    "logger": ("false (lossbench records to MLflow itself)", _one_of(False, None)),
    "enable_checkpointing": ("false (tracking.log_model saves each member)", _one_of(False)),
    "enable_progress_bar": ("true or false", _one_of(True, False)),
    "enable_model_summary": ("true or false", _one_of(True, False)),
    "num_sanity_val_steps": ("an integer >= 0 or -1", lambda v: isinstance(v, int) and v >= -1),
    "check_val_every_n_epoch": ("an integer >= 1", _positive_int),
    "val_check_interval": ("a float in (0, 1] or an integer >= 1", _interval),
    "limit_val_batches": ("1.0 (the split is one batch)", _limit),
    "limit_test_batches": ("1.0 (the split is one batch)", _limit),
    "accumulate_grad_batches": ("an integer >= 1", _positive_int),
    "gradient_clip_val": ("null or a number > 0", lambda v: v is None or (
        isinstance(v, int | float) and not isinstance(v, bool) and v > 0)),
    "gradient_clip_algorithm": ("norm or value", _one_of("norm", "value", None)),
    "callbacks": ("a list of Lightning callbacks", lambda v: v is None or isinstance(v, list | dict)),
    "default_root_dir": ("a directory", _any),
    "log_every_n_steps": ("an integer >= 1", _positive_int),
    "detect_anomaly": ("true or false", _one_of(True, False)),
    "reload_dataloaders_every_n_epochs": ("0 (each epoch draws its own order anyway)", _one_of(0)),
    "overfit_batches": ("0", _one_of(0, 0.0)),
    "limit_train_batches": ("1.0 (every batch of every epoch)", _limit),
    "fast_dev_run": ("false", _one_of(False, 0)),
    "max_time": ("null (a clock would make runs irreproducible)", _one_of(None)),
    "num_nodes": ("1", _one_of(1)),
    "strategy": ("auto (one device)", _one_of("auto")),
    "barebones": ("false (it turns off what lossbench reads)", _one_of(False)),
    "min_epochs": ("null", _one_of(None)),
    "min_steps": ("null", _one_of(None)),
    "sync_batchnorm": ("false", _one_of(False)),
    "plugins": ("null", _one_of(None)),
    "profiler": ("a Lightning profiler (it changes nothing computed)", _any),
    "limit_predict_batches": ("anything (lossbench does not predict)", _any),
    "use_distributed_sampler": ("anything (one device)", _any),
    "enable_autolog_hparams": ("anything (no logger)", _any),
    "model_registry": ("null", _one_of(None)),
}  # fmt: skip


def check_trainer_options(trainer: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` for a ``trainer.*`` option lossbench does not support, or a value
    of one it would not honour, naming the supported options or values."""
    for key, value in trainer.items():
        if key not in OPTIONS:
            supported = ", ".join(k for k in OPTIONS if not k.startswith("_"))
            raise ValueError(
                f"trainer.{key}={value!r} is not an option lossbench follows (it could train "
                f"something other than the config says); supported: {supported}"
            )
        allowed, check = OPTIONS[key]
        if not check(value):
            raise ValueError(f"trainer.{key}={value!r} is not supported here: use {allowed}")
