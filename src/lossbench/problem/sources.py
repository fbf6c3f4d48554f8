"""The built-in dataset sources: scikit-learn's bundled sets (no download), its generators, and
the articles' own toy sets, drawn from the data seed.

A *source* is a function ``source(*, seed, **params) -> RawData``; a dataset config names one
with ``_target_`` (``lossbench.problem.sources.moons``, or a function of yours) and gives its
parameters. NumPy and scikit-learn only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RawData:
    """Features and targets as a source produces them, before any split."""

    x: np.ndarray
    y: np.ndarray
    task: str  # "classification" (binary/multiclass decided from y) or "regression"


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
