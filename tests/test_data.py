"""Datasets: task and shapes, splits, standardization from training rows only, corruption."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import DATASETS, conf_options
from lossbench.config.spec import CONF_DIR
from lossbench.problem.data import DatasetError, load_dataset


def dataset_cfg(name: str, **changes: object) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml"))
    for key, value in changes.items():
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def test_every_dataset_option_is_covered() -> None:
    # dataset=file needs a file of yours: tests/test_datafile.py covers it
    assert sorted([*DATASETS, "file"]) == conf_options("dataset")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_dataset_task_and_shapes(name: str) -> None:
    data = load_dataset(dataset_cfg(name), data_seed=0)
    task, n_features, n_classes = DATASETS[name]
    assert (data.task, data.n_features, data.n_classes) == (task, n_features, n_classes)
    assert data.n_outputs == (n_classes if task == "multiclass" else 1)
    for x, y in (
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
    ):
        assert x.dtype == np.float32 and x.shape == (len(y), n_features) and len(y) > 0
        assert y.dtype == (np.float32 if task == "regression" else np.int64)
    if name != "xor":  # xor evaluates on its four training points by design
        n = len(data.y_train) + len(data.y_val) + len(data.y_test)
        assert len(data.y_test) == pytest.approx(0.2 * n, abs=1)
        assert len(data.y_val) == pytest.approx(0.2 * n, abs=1)


@pytest.mark.parametrize("name", ["moons", "digits", "diabetes", "friedman1"])
def test_standardization_uses_training_rows_only(name: str) -> None:
    """Training features have mean 0 and std 1 exactly; held-out rows do not: the statistics
    came from the training split alone."""
    data = load_dataset(dataset_cfg(name), data_seed=0)
    varying = data.x_train.std(axis=0) > 0
    assert np.allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=0)[varying], 1, atol=1e-4)
    held_out = np.concatenate([data.x_val, data.x_test])
    assert not np.allclose(held_out.mean(axis=0)[varying], 0, atol=1e-3)
    if data.task == "regression":
        assert data.y_train.mean() == pytest.approx(0, abs=1e-5)
        assert data.y_train.std() == pytest.approx(1, abs=1e-4)


def test_classification_splits_are_stratified() -> None:
    data = load_dataset(dataset_cfg("classification", **{"source.weights": [0.9, 0.1]}), 0)
    shares = [y.mean() for y in (data.y_train, data.y_val, data.y_test)]
    assert max(shares) - min(shares) < 0.01


def test_data_seed_fixes_the_split() -> None:
    a, b = (load_dataset(dataset_cfg("moons"), 3) for _ in range(2))
    c = load_dataset(dataset_cfg("moons"), 4)
    assert np.array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)


def test_outliers_corrupt_training_targets_only() -> None:
    clean = load_dataset(dataset_cfg("regression"), 0)
    dirty = load_dataset(dataset_cfg("regression", outlier_fraction=0.1, outlier_scale=10.0), 0)

    def raw(d, y):  # noqa: ANN001, ANN202
        return y * d.y_std + d.y_mean

    assert np.allclose(raw(clean, clean.y_val), raw(dirty, dirty.y_val), atol=1e-3)
    assert np.allclose(raw(clean, clean.y_test), raw(dirty, dirty.y_test), atol=1e-3)
    moved = ~np.isclose(raw(clean, clean.y_train), raw(dirty, dirty.y_train), atol=1e-3)
    assert moved.sum() == round(0.1 * len(clean.y_train))


def test_article_sets_follow_their_formulas() -> None:
    data = load_dataset(dataset_cfg("linear1", val_fraction=0.0, test_fraction=0.0), 0)
    x, y = data.x_train[:, 0], data.y_train
    slope, intercept = np.polyfit(x, y, 1)
    assert slope == pytest.approx(3, abs=1.0) and intercept == pytest.approx(2, abs=0.6)
    xor = load_dataset(dataset_cfg("xor"), 0)
    assert xor.x_train.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert xor.y_train.tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "leaves no training rows"),
        ({"test_fraction": -0.1}, "must be in \\[0, 1\\)"),
        ({"source.n_samples": 3}, "cannot split"),
        ({"source._target_": "lossbench.problem.data.nope"}, "cannot be imported"),
        ({"source.bogus": 1}, "unexpected keyword argument 'bogus'"),
        ({"bogus": 1}, "unknown dataset key"),
    ],
)
def test_bad_dataset_configs(changes: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(dataset_cfg("moons", **changes), 0)
