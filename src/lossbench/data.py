"""Datasets: sources, the train/val/test split, standardization and training-target corruption.

Everything here is NumPy and scikit-learn only, so that configs can be validated (which needs
each dataset's task and sizes) without importing torch or Lightning.

A *source* is a function ``source(*, seed, **params) -> RawData``. Dataset configs name one with
``_target_`` and give its parameters; :func:`load_dataset` turns it into a :class:`SplitData`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

TASKS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class RawData:
    """Features and targets as a source produces them, before any split."""

    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" (binary/multiclass decided from y) or "regression"


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
# Sources. Bundled scikit-learn sets need no download; generators and the articles' toy sets are
# drawn from the data seed.


def _bundled(loader: Any) -> RawData:
    bunch = loader()
    task = "regression" if bunch.target.dtype.kind == "f" else "classification"
    return RawData(bunch.data, bunch.target, task)


def iris(*, seed: int) -> RawData:
    """Fisher's iris: 150 rows, 4 features, 3 classes (bundled with scikit-learn)."""
    from sklearn.datasets import load_iris

    return _bundled(load_iris)


def wine(*, seed: int) -> RawData:
    """UCI wine: 178 rows, 13 features, 3 classes (bundled with scikit-learn)."""
    from sklearn.datasets import load_wine

    return _bundled(load_wine)


def breast_cancer(*, seed: int) -> RawData:
    """Wisconsin breast cancer: 569 rows, 30 features, binary (bundled with scikit-learn)."""
    from sklearn.datasets import load_breast_cancer

    return _bundled(load_breast_cancer)


def digits(*, seed: int) -> RawData:
    """8x8 handwritten digits: 1,797 rows, 64 features, 10 classes (bundled with scikit-learn)."""
    from sklearn.datasets import load_digits

    return _bundled(load_digits)


def diabetes(*, seed: int) -> RawData:
    """Diabetes progression: 442 rows, 10 features, regression (bundled with scikit-learn)."""
    from sklearn.datasets import load_diabetes

    return _bundled(load_diabetes)


def moons(*, seed: int, n_samples: int = 2000, noise: float = 0.2) -> RawData:
    """Two interleaving half circles (binary)."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return RawData(x, y, "classification")


def circles(
    *, seed: int, n_samples: int = 2000, noise: float = 0.1, factor: float = 0.5
) -> RawData:
    """A small circle inside a large one (binary)."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return RawData(x, y, "classification")


def blobs(
    *,
    seed: int,
    n_samples: int = 1500,
    centers: int = 3,
    n_features: int = 2,
    cluster_std: float = 1.5,
) -> RawData:
    """Isotropic Gaussian blobs, one class per centre."""
    from sklearn.datasets import make_blobs

    x, y = make_blobs(
        n_samples=n_samples,
        centers=centers,
        n_features=n_features,
        cluster_std=cluster_std,
        random_state=seed,
    )
    return RawData(x, y, "classification")


def classification(
    *,
    seed: int,
    n_samples: int = 2000,
    n_features: int = 20,
    n_informative: int = 5,
    n_redundant: int = 2,
    n_classes: int = 2,
    weights: list[float] | None = None,
    flip_y: float = 0.0,
    class_sep: float = 1.0,
) -> RawData:
    """scikit-learn's make_classification; ``weights`` sets class imbalance, ``flip_y`` label noise."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=n_redundant,
        n_classes=n_classes,
        weights=None if weights is None else list(weights),
        flip_y=flip_y,
        class_sep=class_sep,
        random_state=seed,
    )
    return RawData(x, y, "classification")


def regression(
    *,
    seed: int,
    n_samples: int = 1000,
    n_features: int = 10,
    n_informative: int = 5,
    noise: float = 10.0,
) -> RawData:
    """scikit-learn's make_regression: a random linear target plus Gaussian noise."""
    from sklearn.datasets import make_regression

    x, y = make_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        noise=noise,
        random_state=seed,
    )
    return RawData(x, y, "regression")


def friedman1(
    *, seed: int, n_samples: int = 1000, n_features: int = 10, noise: float = 1.0
) -> RawData:
    """Friedman #1: a nonlinear target of the first five features; the rest are irrelevant."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(
        n_samples=n_samples, n_features=n_features, noise=noise, random_state=seed
    )
    return RawData(x, y, "regression")


def linear2(*, seed: int, n_samples: int = 100) -> RawData:
    """Article 000's data: x1, x2 ~ U(0,1), y = 2*x1 + 3*x2 + U(0,1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_samples, 2))
    y = 2 * x[:, 0] + 3 * x[:, 1] + rng.random(n_samples)
    return RawData(x, y, "regression")


def linear1(*, seed: int, n_samples: int = 100) -> RawData:
    """Article 004's data: x ~ U(0,1), y = 3*x + 2 + N(0,1)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n_samples, 1))
    y = 3 * x[:, 0] + 2 + rng.standard_normal(n_samples)
    return RawData(x, y, "regression")


def xor(*, seed: int) -> RawData:
    """Article 002's XOR: the four corners of the unit square, label x1 XOR x2."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    return RawData(x, y, "classification")


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
            f"Built-in sources: lossbench.data.{{{names}}}"
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


SOURCES = {
    fn.__name__: fn
    for fn in (
        iris,
        wine,
        breast_cancer,
        digits,
        diabetes,
        moons,
        circles,
        blobs,
        classification,
        regression,
        friedman1,
        linear2,
        linear1,
        xor,
    )
}
