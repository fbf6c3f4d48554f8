"""Datasets: a source's rows (:mod:`lossbench.problem.sources`) split train/val/test,
standardized, and training targets corrupted where a config asks.

Everything here is NumPy and scikit-learn only, so that configs can be validated (which needs
each dataset's task and sizes) without importing torch or Lightning.

:func:`load_dataset` turns a dataset config (its source's ``_target_`` and parameters, the
fractions) into a :class:`SplitData`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbench.problem.sources import SOURCES, RawData

TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class SplitData:
    """A dataset split into train/val/test, features standardized with training statistics.

    ``y_mean``/``y_std`` undo target standardization (regression only), so that metrics can be
    reported in the data's own units.
    """

    name: str
    task: str
    n_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    y_mean: float = 0.0
    y_std: float = 1.0
    classes: tuple[str, ...] | None = None  # the source's labels of classes 0, 1, ..., if others

    @property
    def n_features(self) -> int:
        """Number of input features (the model's input size)."""
        return int(self.x_train.shape[1])

    @property
    def n_outputs(self) -> int:
        """The model's output size: one logit for binary, one per class, one value for regression."""
        return self.n_classes if self.task == "multiclass" else 1

    @property
    def is_classification(self) -> bool:
        """True for binary and multiclass tasks."""
        return self.task != "regression"

    def summary(self) -> dict[str, Any]:
        """Derived facts about the data, recorded with every run."""
        return {
            "task": self.task,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "n_train": len(self.y_train),
            "n_val": len(self.y_val),
            "n_test": len(self.y_test),
            **({"classes": list(self.classes)} if self.classes is not None else {}),
        }


# ---------------------------------------------------------------------------------------------
# Split, standardize, corrupt.

_SPLIT_KEYS = (
    "name",
    "source",
    "val_fraction",
    "test_fraction",
    "standardize_x",
    "standardize_y",
    "outlier_fraction",
    "outlier_scale",
)


class DatasetError(ValueError):
    """A dataset config that cannot produce a usable split."""


def _as_dict(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _source_function(target: str) -> Any:
    from hydra.utils import get_method

    try:
        return get_method(target)
    except Exception as err:  # Hydra raises ImportError or ValueError, depending on the cause
        names = ", ".join(sorted(SOURCES))
        raise DatasetError(
            f"dataset.source._target_={target!r} cannot be imported ({err}). "
            f"Built-in sources: lossbench.problem.sources.{{{names}}}"
        ) from err


def load_raw(source_cfg: Mapping[str, Any], data_seed: int) -> RawData:
    """Call the configured source function with the data seed."""
    params = dict(source_cfg)
    target = params.pop("_target_", None)
    if target is None:
        raise DatasetError("dataset.source needs a _target_ naming a source function")
    fn = _source_function(str(target))
    try:
        raw = fn(seed=data_seed, **params)
    except TypeError as err:
        raise DatasetError(f"dataset.source {target}: {err}") from err
    if raw.task not in ("classification", "regression"):
        raise DatasetError(f"source {target} returned task {raw.task!r}")
    return raw


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DatasetError(f"dataset.{key}={value} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise DatasetError(
            f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction:g} "
            "leaves no training rows; their sum must be < 1"
        )


def _split(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int, stratify: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split off ``fraction`` of the rows; returns (x_rest, x_part, y_rest, y_part)."""
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=y if stratify else None
        )
    except ValueError as err:
        raise DatasetError(f"cannot split {len(y)} rows with fraction {fraction}: {err}") from err


def load_dataset(cfg: Any, data_seed: int) -> SplitData:
    """Build the split data for a dataset config.

    - Rows are split train/val/test with ``data_seed`` (stratified for classification). A
      fraction of 0 evaluates that split on the training rows (for the four-point XOR).
    - Features (and regression targets, if ``standardize_y``) are standardized with the training
      split's statistics only.
    - ``outlier_fraction``/``outlier_scale`` corrupt training targets only, after the split.
    """
    cfg = _as_dict(cfg)
    unknown = sorted(set(cfg) - set(_SPLIT_KEYS))
    if unknown:
        raise DatasetError(
            f"unknown dataset key(s) {unknown}; valid keys: {', '.join(_SPLIT_KEYS)} "
            "(source parameters go under dataset.source)"
        )
    name = str(cfg.get("name", "dataset"))
    val_fraction = float(cfg.get("val_fraction", 0.2))
    test_fraction = float(cfg.get("test_fraction", 0.2))
    _check_fractions(val_fraction, test_fraction)

    raw = load_raw(cfg["source"], data_seed)
    x = np.asarray(raw.x, dtype=np.float64)
    class_names = None
    if x.ndim != 2 or len(x) != len(raw.y):
        raise DatasetError(f"source for {name} returned x{x.shape} and y{np.shape(raw.y)}")
    if raw.task == "classification":
        classes, y = np.unique(raw.y, return_inverse=True)
        n_classes = len(classes)
        if n_classes < 2:
            raise DatasetError(f"dataset {name} has a single class")
        task = "binary" if n_classes == 2 else "multiclass"
        y = y.astype(np.int64)
        numeric = classes.dtype.kind in "biuf"
        if not (numeric and np.array_equal(classes, np.arange(n_classes))):  # strings, say
            class_names = tuple(str(c) for c in classes)
    else:
        y = np.asarray(raw.y, dtype=np.float64)
        n_classes, task = 0, "regression"
    stratify = task != "regression"

    x_rest, y_rest = x, y
    if test_fraction > 0:
        x_rest, x_test, y_rest, y_test = _split(x, y, test_fraction, data_seed, stratify)
    if val_fraction > 0:
        part = val_fraction / (1.0 - test_fraction)
        x_train, x_val, y_train, y_val = _split(x_rest, y_rest, part, data_seed + 1, stratify)
    else:
        x_train, y_train = x_rest, y_rest
    if test_fraction == 0:
        x_test, y_test = x_train, y_train
    if val_fraction == 0:
        x_val, y_val = x_train, y_train
    for split, rows in (("train", y_train), ("val", y_val), ("test", y_test)):
        if len(rows) == 0:
            raise DatasetError(f"dataset {name}: the {split} split has no rows")

    if cfg.get("standardize_x", True):
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        x_train, x_val, x_test = ((a - mean) / std for a in (x_train, x_val, x_test))

    y_mean, y_std = 0.0, 1.0
    if task == "regression":
        y_train = _add_outliers(
            y_train,
            float(cfg.get("outlier_fraction", 0.0)),
            float(cfg.get("outlier_scale", 10.0)),
            data_seed,
        )
        if cfg.get("standardize_y", True):
            y_mean, y_std = float(y_train.mean()), float(y_train.std()) or 1.0
            y_train, y_val, y_test = ((a - y_mean) / y_std for a in (y_train, y_val, y_test))
    elif cfg.get("outlier_fraction", 0.0):
        raise DatasetError(f"dataset {name} is {task}: outlier_fraction applies to regression only")

    f32 = np.float32
    ydt = np.int64 if stratify else f32
    return SplitData(
        name=name,
        task=task,
        n_classes=n_classes,
        x_train=x_train.astype(f32),
        y_train=y_train.astype(ydt),
        x_val=x_val.astype(f32),
        y_val=y_val.astype(ydt),
        x_test=x_test.astype(f32),
        y_test=y_test.astype(ydt),
        y_mean=y_mean,
        y_std=y_std,
        classes=class_names,
    )


def _add_outliers(y: np.ndarray, fraction: float, scale: float, seed: int) -> np.ndarray:
    """Shift a ``fraction`` of the targets by ``scale`` standard deviations, in a random direction."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"dataset.outlier_fraction={fraction} must be in [0, 1)")
    n_out = int(round(fraction * len(y)))
    if n_out == 0:
        return y
    rng = np.random.default_rng([seed, 7])
    rows = rng.choice(len(y), size=n_out, replace=False)
    signs = rng.choice([-1.0, 1.0], size=n_out)
    y = y.copy()
    y[rows] += signs * scale * y.std()
    return y
