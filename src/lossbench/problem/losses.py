"""Loss functions, one signature for all: ``loss(output, target) -> per-member loss``.

``output`` is the model's raw output, shaped ``[..., batch, n_outputs]``; ``target`` is
``[..., batch]``: int64 class labels for classification, floats for regression. Leading dims are
the stacked members of a vectorized fit; the batch dim is averaged, so the result is ``[...]``.

Binary tasks have one output (a logit); multiclass tasks one logit per class; regression one value.

- Classification losses (bce, cross_entropy, focal, hinge, squared_hinge) refuse regression
  targets.
- Regression losses (mse, mae, huber, smooth_l1, log_cosh) on a classification task compare the
  class probabilities (sigmoid or softmax) with the one-hot targets, averaged over classes: the
  articles' "quadratic cost".

Constructors only check and store their arguments.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


class Loss(ABC):
    """Base class; subclasses set ``kind`` and implement ``__call__``."""

    kind: ClassVar[str]  # "classification" or "regression"


def _is_classification(target: Tensor) -> bool:
    return not torch.is_floating_point(target)


# ---------------------------------------------------------------------------------------------
# Regression losses


class RegressionLoss(Loss):
    """A pointwise loss of (prediction, target); on classification tasks, of probabilities."""

    kind: ClassVar[str] = "regression"

    @abstractmethod
    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Elementwise loss of predictions against targets."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        """Per-member mean loss; see the module docstring for shapes."""
        if _is_classification(target):
            if output.shape[-1] == 1:
                probs, onehot = torch.sigmoid(output[..., 0]), target.to(output.dtype)
                return self.pointwise(probs, onehot).mean(-1)
            probs = torch.softmax(output, dim=-1)
            onehot = F.one_hot(target, output.shape[-1]).to(output.dtype)
            return self.pointwise(probs, onehot).mean(-1).mean(-1)
        return self.pointwise(output[..., 0], target).mean(-1)


@dataclass(frozen=True)
class MSE(RegressionLoss):
    """Mean squared error."""

    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Squared error."""
        return (pred - target).square()


@dataclass(frozen=True)
class MAE(RegressionLoss):
    """Mean absolute error (L1)."""

    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Absolute error."""
        return (pred - target).abs()


@dataclass(frozen=True)
class Huber(RegressionLoss):
    """Huber loss: quadratic within ``delta`` of the target, linear beyond."""

    delta: float = 1.0

    def __post_init__(self) -> None:
        if not self.delta > 0:
            raise ValueError(f"huber delta must be > 0, got delta={self.delta}")

    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Huber error, as torch's huber_loss."""
        return F.huber_loss(pred, target, reduction="none", delta=self.delta)


@dataclass(frozen=True)
class SmoothL1(RegressionLoss):
    """Smooth L1: Huber divided by ``beta`` (quadratic region scaled to slope 1)."""

    beta: float = 1.0

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"smooth_l1 beta must be > 0, got beta={self.beta}")

    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """Smooth L1 error, as torch's smooth_l1_loss."""
        return F.smooth_l1_loss(pred, target, reduction="none", beta=self.beta)


@dataclass(frozen=True)
class LogCosh(RegressionLoss):
    """log(cosh(error)): quadratic near zero, linear for large errors."""

    def pointwise(self, pred: Tensor, target: Tensor) -> Tensor:
        """log(cosh(pred - target)), computed without overflow."""
        err = pred - target
        return err + F.softplus(-2.0 * err) - math.log(2.0)


# ---------------------------------------------------------------------------------------------
# Classification losses


class ClassificationLoss(Loss):
    """A loss of logits against class labels, for binary and multiclass tasks."""

    kind: ClassVar[str] = "classification"

    @abstractmethod
    def binary(self, logit: Tensor, target: Tensor) -> Tensor:
        """Elementwise loss of one logit against 0/1 float targets."""

    @abstractmethod
    def multiclass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Elementwise loss of class logits ``[..., C]`` against labels."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        """Per-member mean loss; see the module docstring for shapes."""
        if not _is_classification(target):
            raise TypeError(
                f"{type(self).__name__} is a classification loss; the targets are regression values"
            )
        if output.shape[-1] == 1:
            return self.binary(output[..., 0], target.to(output.dtype)).mean(-1)
        return self.multiclass(output, target).mean(-1)


def _nll_multiclass(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(log-probabilities of all classes, log-probability of the true class)."""
    logp = torch.log_softmax(logits, dim=-1)
    return logp, logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)


@dataclass(frozen=True)
class BCE(ClassificationLoss):
    """Binary cross-entropy (log loss). On multiclass tasks: one-vs-rest, averaged over classes."""

    def binary(self, logit: Tensor, target: Tensor) -> Tensor:
        """-[y log p + (1-y) log(1-p)] with p = sigmoid(logit)."""
        return F.binary_cross_entropy_with_logits(logit, target, reduction="none")

    def multiclass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Mean over classes of the binary cross-entropy against the one-hot target."""
        onehot = F.one_hot(target, logits.shape[-1]).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").mean(-1)


@dataclass(frozen=True)
class CrossEntropy(ClassificationLoss):
    """Softmax cross-entropy (sigmoid for binary), with optional label smoothing."""

    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(
                f"cross_entropy label_smoothing must be in [0, 1), got {self.label_smoothing}"
            )

    def binary(self, logit: Tensor, target: Tensor) -> Tensor:
        """Binary cross-entropy against targets smoothed towards 1/2."""
        eps = self.label_smoothing
        return F.binary_cross_entropy_with_logits(
            logit, target * (1 - eps) + eps / 2, reduction="none"
        )

    def multiclass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy against targets smoothed towards uniform, as torch's cross_entropy."""
        logp, true_logp = _nll_multiclass(logits, target)
        eps = self.label_smoothing
        if eps == 0:
            return -true_logp
        return -(1 - eps) * true_logp - eps * logp.mean(-1)


@dataclass(frozen=True)
class Focal(ClassificationLoss):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by (1 - p_t)^gamma.

    ``alpha``: ``None`` for no class weighting; for binary, a float weights the positive class
    by alpha and the negative by 1 - alpha; for multiclass, a list gives one weight per class and
    a float scales all classes alike. With ``gamma=0`` and ``alpha=None`` it is cross-entropy.
    """

    gamma: float = 2.0
    alpha: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"focal gamma must be >= 0, got gamma={self.gamma}")
        if isinstance(self.alpha, list | tuple):  # a tuple keeps the loss hashable
            object.__setattr__(self, "alpha", tuple(float(a) for a in self.alpha))
        alphas = self.alpha if isinstance(self.alpha, tuple) else [self.alpha]
        for a in alphas:
            if a is not None and not 0 <= a <= 1:
                raise ValueError(f"focal alpha must be in [0, 1] or null, got alpha={self.alpha}")

    def binary(self, logit: Tensor, target: Tensor) -> Tensor:
        """-alpha_t (1 - p_t)^gamma log p_t, with p_t the probability of the true class."""
        ce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
        p_t = torch.exp(-ce)
        loss = (1 - p_t).pow(self.gamma) * ce if self.gamma else ce
        if self.alpha is None:
            return loss
        if isinstance(self.alpha, tuple):
            raise ValueError("focal alpha for a binary task is one float (positive-class weight)")
        return (self.alpha * target + (1 - self.alpha) * (1 - target)) * loss

    def multiclass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Multiclass focal loss on the softmax probability of the true class."""
        _, true_logp = _nll_multiclass(logits, target)
        p_t = true_logp.exp()
        loss = -((1 - p_t).pow(self.gamma) * true_logp if self.gamma else true_logp)
        if self.alpha is None:
            return loss
        if isinstance(self.alpha, tuple):
            if len(self.alpha) != logits.shape[-1]:
                raise ValueError(
                    f"focal alpha has {len(self.alpha)} weights for {logits.shape[-1]} classes"
                )
            weights = torch.as_tensor(self.alpha, dtype=logits.dtype, device=logits.device)
            return weights[target] * loss
        return self.alpha * loss


@dataclass(frozen=True)
class Hinge(ClassificationLoss):
    """Hinge loss: max(0, margin - y*f) for binary (y in {-1, 1}); for multiclass, as torch's
    multi_margin_loss: sum over wrong classes of max(0, margin - f_y + f_j), divided by C."""

    margin: float = 1.0
    power: ClassVar[int] = 1

    def __post_init__(self) -> None:
        if not self.margin > 0:
            raise ValueError(f"hinge margin must be > 0, got margin={self.margin}")

    def binary(self, logit: Tensor, target: Tensor) -> Tensor:
        """Binary hinge on the signed logit."""
        return F.relu(self.margin - (2 * target - 1) * logit).pow(self.power)

    def multiclass(self, logits: Tensor, target: Tensor) -> Tensor:
        """Weston-Watkins multiclass hinge, normalised by the number of classes."""
        true = logits.gather(-1, target.unsqueeze(-1))
        margins = F.relu(self.margin - true + logits).pow(self.power)
        # the true class contributes margin**power; remove it
        return (margins.sum(-1) - self.margin**self.power) / logits.shape[-1]


@dataclass(frozen=True)
class SquaredHinge(Hinge):
    """Squared hinge: the hinge terms squared (smooth at the margin)."""

    power: ClassVar[int] = 2


# ---------------------------------------------------------------------------------------------
# Weight penalty, kept apart from the optimizer's weight_decay.

PENALTIES = ("none", "l1", "l2")


def check_penalty(kind: str, strength: float) -> None:
    """Raise a clear error for an unknown penalty kind or a negative strength."""
    if kind not in PENALTIES:
        raise ValueError(f"penalty.kind={kind!r} is not one of {', '.join(PENALTIES)}")
    if not strength >= 0:
        raise ValueError(f"penalty.strength must be >= 0, got {strength}")
    if kind == "none" and strength != 0:
        raise ValueError(
            f"penalty.strength={strength} with penalty.kind=none: no penalty would be applied; "
            "set penalty.kind=l1 or l2, or leave penalty.strength at 0"
        )


def weight_penalty(weights: list[Tensor], kind: str, strength: float) -> Tensor | None:
    """Per-member penalty on stacked weight matrices ``[K, out, in]``: l1 = strength * sum|w|,
    l2 = strength / 2 * sum w^2 (the articles' forms). ``None`` when there is no penalty."""
    if kind == "none" or strength == 0:
        return None
    if kind == "l1":
        total = sum(w.abs().sum(dim=(-2, -1)) for w in weights)
        return strength * total
    total = sum(w.square().sum(dim=(-2, -1)) for w in weights)
    return 0.5 * strength * total


def member_penalty(weights: list[Tensor], penalties: Sequence[tuple[str, float]]) -> Tensor | None:
    """Each member's own penalty ``(kind, strength)`` on stacked weight matrices, ``[K]``, as
    :func:`weight_penalty` computes it for a member alone. ``None`` when no member has one."""
    if len(set(penalties)) == 1:
        return weight_penalty(weights, *penalties[0])
    coefficients = {"l1": [0.0] * len(penalties), "l2": [0.0] * len(penalties)}
    for member, (kind, strength) in enumerate(penalties):
        if kind in coefficients:
            coefficients[kind][member] = strength if kind == "l1" else 0.5 * strength
    total: Tensor | None = None
    for kind, column in coefficients.items():
        if any(column):
            size = sum((w.abs() if kind == "l1" else w.square()).sum(dim=(-2, -1)) for w in weights)
            term = torch.tensor(column, dtype=size.dtype, device=size.device) * size
            total = term if total is None else total + term
    return total
