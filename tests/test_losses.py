"""Every loss against a reference: scikit-learn's metrics, torch's own losses, or the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import hinge_loss, log_loss, mean_absolute_error, mean_squared_error

from lossbench.problem import losses as L

rng = np.random.default_rng(0)
PRED = rng.normal(size=32)
TARGET = rng.normal(size=32)
LOGIT = rng.normal(size=32) * 2
LABEL = rng.integers(0, 2, size=32)
LOGITS3 = rng.normal(size=(32, 3)) * 2
LABEL3 = rng.integers(0, 3, size=32)


def t(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype)


def reg(loss: L.Loss) -> float:
    """A regression loss on one member."""
    return float(loss(t(PRED)[None, :, None], t(TARGET)[None])[0])


def binary(loss: L.Loss, logit: np.ndarray = LOGIT, label: np.ndarray = LABEL) -> float:
    return float(loss(t(logit)[None, :, None], t(label, torch.long)[None])[0])


def multi(loss: L.Loss) -> float:
    return float(loss(t(LOGITS3)[None], t(LABEL3, torch.long)[None])[0])


def logit_of(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


def test_article_mse_example() -> None:
    """Article 001: MSE of y_true [1,0,1,1] against y_pred [0.9,0.1,0.8,0.6] is 0.055."""
    y_true, y_pred = np.array([1.0, 0, 1, 1]), np.array([0.9, 0.1, 0.8, 0.6])
    as_regression = L.MSE()(t(y_pred)[None, :, None], t(y_true)[None])
    assert float(as_regression[0]) == pytest.approx(0.055, abs=1e-6)
    # the same numbers as probabilities of a binary classifier (the quadratic cost)
    as_classifier = binary(L.MSE(), logit_of(y_pred), y_true.astype(int))
    assert as_classifier == pytest.approx(0.055, abs=1e-6)


def test_article_log_loss_example_matches_sklearn() -> None:
    """Article 001: the log loss of its example equals scikit-learn's log_loss."""
    y_true = np.array([1, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.5, 0.5]])
    expected = log_loss(y_true, probs)
    assert binary(L.BCE(), logit_of(probs[:, 1]), y_true) == pytest.approx(expected, abs=1e-6)
    assert binary(L.CrossEntropy(), logit_of(probs[:, 1]), y_true) == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (L.MSE(), mean_squared_error(TARGET, PRED)),
        (L.MAE(), mean_absolute_error(TARGET, PRED)),
        (L.Huber(delta=0.5), float(F.huber_loss(t(PRED), t(TARGET), delta=0.5))),
        (L.SmoothL1(beta=0.5), float(F.smooth_l1_loss(t(PRED), t(TARGET), beta=0.5))),
        (L.LogCosh(), float(np.mean(np.log(np.cosh(PRED - TARGET))))),
    ],
    ids=["mse", "mae", "huber", "smooth_l1", "log_cosh"],
)
def test_regression_losses(loss: L.Loss, expected: float) -> None:
    assert reg(loss) == pytest.approx(expected, rel=1e-9)


def test_log_cosh_does_not_overflow() -> None:
    value = L.LogCosh()(t([1000.0])[None, :, None], t([0.0])[None])
    assert float(value[0]) == pytest.approx(1000 - np.log(2))


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (L.BCE(), log_loss(LABEL, 1 / (1 + np.exp(-LOGIT)))),
        (L.CrossEntropy(), log_loss(LABEL, 1 / (1 + np.exp(-LOGIT)))),
        (L.Hinge(), hinge_loss(2 * LABEL - 1, LOGIT)),
        (L.SquaredHinge(), float(np.mean(np.maximum(0, 1 - (2 * LABEL - 1) * LOGIT) ** 2))),
        (
            L.Focal(gamma=2.0, alpha=0.25),
            float(
                np.mean(
                    np.where(LABEL == 1, 0.25, 0.75)
                    * (1 - np.where(LABEL == 1, 1 / (1 + np.exp(-LOGIT)), 1 / (1 + np.exp(LOGIT))))
                    ** 2
                    * -np.log(
                        np.where(LABEL == 1, 1 / (1 + np.exp(-LOGIT)), 1 / (1 + np.exp(LOGIT)))
                    )
                )
            ),
        ),
    ],
    ids=["bce", "cross_entropy", "hinge", "squared_hinge", "focal"],
)
def test_binary_losses(loss: L.Loss, expected: float) -> None:
    assert binary(loss) == pytest.approx(expected, rel=1e-9)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (L.CrossEntropy(), log_loss(LABEL3, softmax(LOGITS3))),
        (
            L.CrossEntropy(label_smoothing=0.1),
            float(F.cross_entropy(t(LOGITS3), t(LABEL3, torch.long), label_smoothing=0.1)),
        ),
        (L.Hinge(), float(F.multi_margin_loss(t(LOGITS3), t(LABEL3, torch.long)))),
        (L.SquaredHinge(), float(F.multi_margin_loss(t(LOGITS3), t(LABEL3, torch.long), p=2))),
        (
            L.BCE(),
            float(
                F.binary_cross_entropy_with_logits(
                    t(LOGITS3), F.one_hot(t(LABEL3, torch.long), 3).double()
                )
            ),
        ),
        (
            L.Focal(gamma=2.0),
            float(
                np.mean(
                    (1 - softmax(LOGITS3)[np.arange(32), LABEL3]) ** 2
                    * -np.log(softmax(LOGITS3)[np.arange(32), LABEL3])
                )
            ),
        ),
        (
            L.MSE(),
            mean_squared_error(np.eye(3)[LABEL3], softmax(LOGITS3)),
        ),
    ],
    ids=[
        "cross_entropy",
        "label_smoothing",
        "hinge",
        "squared_hinge",
        "bce",
        "focal",
        "mse_on_probs",
    ],
)
def test_multiclass_losses(loss: L.Loss, expected: float) -> None:
    assert multi(loss) == pytest.approx(expected, rel=1e-9)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    focal, ce = L.Focal(gamma=0.0), L.CrossEntropy()
    assert binary(focal) == pytest.approx(binary(ce), rel=1e-12)
    assert multi(focal) == pytest.approx(multi(ce), rel=1e-12)


def test_focal_per_class_alpha_weights_multiclass() -> None:
    weights = [0.2, 0.3, 0.5]
    weighted = multi(L.Focal(gamma=0.0, alpha=weights))
    logp = np.log(softmax(LOGITS3))[np.arange(32), LABEL3]
    assert weighted == pytest.approx(float(np.mean(-np.array(weights)[LABEL3] * logp)), rel=1e-9)


def test_losses_are_per_member() -> None:
    """Stacked members [K, B, O] get one loss each, equal to the loss of that member alone."""
    out = torch.randn(4, 16, 3, dtype=torch.float64)
    target = torch.randint(0, 3, (4, 16))
    for loss in (L.CrossEntropy(), L.Focal(), L.Hinge(), L.MSE()):
        stacked = loss(out, target)
        assert stacked.shape == (4,)
        for k in range(4):
            alone = loss(out[k : k + 1], target[k : k + 1])
            assert float(stacked[k]) == pytest.approx(float(alone[0]), rel=1e-12)


def test_classification_loss_refuses_regression_targets() -> None:
    with pytest.raises(TypeError, match="classification loss"):
        L.Focal()(t(PRED)[None, :, None], t(TARGET)[None])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: L.Focal(gamma=-1), "gamma must be >= 0"),
        (lambda: L.Focal(alpha=1.5), "alpha must be in"),
        (lambda: L.Huber(delta=0), "delta must be > 0"),
        (lambda: L.SmoothL1(beta=-1), "beta must be > 0"),
        (lambda: L.CrossEntropy(label_smoothing=1.0), "label_smoothing"),
        (lambda: L.Hinge(margin=0), "margin must be > 0"),
    ],
)
def test_bad_loss_arguments(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        make()


def test_weight_penalty_forms() -> None:
    w = [torch.tensor([[[1.0, -2.0]], [[0.5, 0.5]]])]  # two members, one 1x2 matrix each
    assert L.weight_penalty(w, "none", 1.0) is None
    assert L.weight_penalty(w, "l1", 0.1).tolist() == pytest.approx([0.3, 0.1])
    assert L.weight_penalty(w, "l2", 0.1).tolist() == pytest.approx([0.25, 0.025])
    with pytest.raises(ValueError, match="penalty.kind='l3' is not one of none, l1, l2"):
        L.check_penalty("l3", 0.1)
