"""Per-member metrics equal scikit-learn's, member by member."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lossbench.metrics import classification_metrics, regression_metrics

rng = np.random.default_rng(1)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_classification_metrics_match_sklearn(n_classes: int) -> None:
    n_out = 1 if n_classes == 2 else n_classes
    target = torch.as_tensor(rng.integers(0, n_classes, 50))
    target[:3] = 0  # make sure some class is present
    output = torch.as_tensor(rng.normal(size=(3, 50, n_out)))
    output[2] = -10  # one member predicts a single class: classes missing from predictions
    got = classification_metrics(output, target, n_classes)
    for k in range(3):
        pred = (output[k, :, 0] > 0).long() if n_out == 1 else output[k].argmax(-1)
        y, p = target.numpy(), pred.numpy()
        assert float(got["acc"][k]) == pytest.approx(skm.accuracy_score(y, p))
        assert float(got["balanced_acc"][k]) == pytest.approx(skm.balanced_accuracy_score(y, p))
        f1 = skm.f1_score(y, p, average="macro", zero_division=0)
        assert float(got["f1_macro"][k]) == pytest.approx(f1, abs=1e-6)


def test_regression_metrics_match_sklearn_in_original_units() -> None:
    target = torch.as_tensor(rng.normal(size=40))
    output = torch.as_tensor(rng.normal(size=(2, 40, 1)))
    got = regression_metrics(output, target, y_mean=5.0, y_std=2.0)
    y = target.numpy() * 2 + 5
    for k in range(2):
        p = output[k, :, 0].numpy() * 2 + 5
        assert float(got["rmse"][k]) == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)))
        assert float(got["mae"][k]) == pytest.approx(skm.mean_absolute_error(y, p))
        assert float(got["r2"][k]) == pytest.approx(skm.r2_score(y, p))
