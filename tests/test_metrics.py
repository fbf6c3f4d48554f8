"""Per-member metrics equal scikit-learn's, member by member; ece and brier equal loops over rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from lossbench.problem.metrics import (
    brier,
    classification_metrics,
    ece,
    probabilities,
    regression_metrics,
)

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


def ece_by_loop(probs: np.ndarray, target: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE written out: bins (i/n, (i+1)/n], weighted |accuracy - confidence|."""
    total = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        rows = [n for n in range(len(target)) if lo < probs[n].max() <= hi]
        if rows:
            accuracy = np.mean([probs[n].argmax() == target[n] for n in rows])
            confidence = np.mean([probs[n].max() for n in rows])
            total += len(rows) / len(target) * abs(accuracy - confidence)
    return total


def brier_by_loop(probs: np.ndarray, target: np.ndarray) -> float:
    """Multiclass Brier score written out: mean over rows of sum over classes (p - onehot)^2."""
    rows = []
    for n in range(len(target)):
        rows.append(sum((probs[n, c] - (c == target[n])) ** 2 for c in range(probs.shape[1])))
    return float(np.mean(rows))


@pytest.mark.parametrize("n_outputs", [1, 4], ids=["binary-one-logit", "four-classes"])
def test_ece_and_brier_equal_a_direct_computation(n_outputs: int) -> None:
    """Three stacked members at once, each against a loop over its rows: one member with
    spread-out confidences, one confident, one almost uniform (every row in one bin)."""
    n_classes = max(n_outputs, 2)
    target = torch.as_tensor(rng.integers(0, n_classes, 300))
    logits = torch.as_tensor(rng.normal(size=(3, 300, n_outputs)), dtype=torch.float32)
    logits[1] *= 8
    logits[2] *= 0.01
    probs = probabilities(logits)
    assert probs.shape == (3, 300, n_classes)
    got_ece, got_brier = ece(probs, target), brier(probs, target)
    assert got_ece.shape == got_brier.shape == (3,)
    for k in range(3):
        z = logits[k].double().numpy()
        if n_outputs == 1:  # sigmoid: confidence of the predicted class
            p1 = 1 / (1 + np.exp(-z[:, 0]))
            p = np.stack([1 - p1, p1], axis=1)
        else:
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
        y = target.numpy()
        assert float(got_ece[k]) == pytest.approx(ece_by_loop(p, y), abs=1e-5)
        assert float(got_brier[k]) == pytest.approx(brier_by_loop(p, y), rel=1e-5)
        if n_outputs == 1:  # both classes counted: twice scikit-learn's binary Brier score
            assert float(got_brier[k]) == pytest.approx(2 * skm.brier_score_loss(y, p1), rel=1e-5)


def test_ece_and_brier_of_known_cases() -> None:
    target = torch.tensor([0, 1, 1, 0])
    certain = torch.eye(2)[target][None]  # right and sure: perfectly calibrated
    assert float(ece(certain, target)) == 0 and float(brier(certain, target)) == 0
    wrong = torch.eye(2)[1 - target][None]  # wrong and sure
    assert float(ece(wrong, target)) == 1 and float(brier(wrong, target)) == 2
    # 0.7 confident, right 3 times of 4: |0.75 - 0.7| in one bin
    probs = torch.tensor([[[0.7, 0.3], [0.3, 0.7], [0.3, 0.7], [0.3, 0.7]]])
    assert float(ece(probs, target)) == pytest.approx(0.05)


def test_a_diverged_member_leaves_its_siblings_values_alone() -> None:
    target = torch.as_tensor(rng.integers(0, 3, 50))
    logits = torch.as_tensor(rng.normal(size=(2, 50, 3)), dtype=torch.float32)
    before = ece(probabilities(logits), target), brier(probabilities(logits), target)
    logits[1] = math.nan
    after = ece(probabilities(logits), target), brier(probabilities(logits), target)
    for b, a in zip(before, after, strict=True):
        assert a[0] == b[0] and math.isnan(a[1])
