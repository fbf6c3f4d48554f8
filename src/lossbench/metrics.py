"""Evaluation metrics for all stacked members at once.

Each function takes the members' outputs ``[K, N, n_outputs]`` and the shared targets ``[N]``
and returns one value per member, ``[K]``. They follow scikit-learn's definitions (the tests
check them against it): balanced accuracy averages recall over the classes present in the
targets; macro F1 averages over the classes present in targets or predictions.
"""

from __future__ import annotations

import torch
from torch import Tensor

CLASSIFICATION_METRICS = ("acc", "balanced_acc", "f1_macro")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def predicted_labels(output: Tensor) -> Tensor:
    """Class labels from logits: threshold 0 for one logit, argmax otherwise."""
    if output.shape[-1] == 1:
        return (output[..., 0] > 0).long()
    return output.argmax(dim=-1)


def classification_metrics(output: Tensor, target: Tensor, n_classes: int) -> dict[str, Tensor]:
    """Accuracy, balanced accuracy and macro F1 per member."""
    pred = predicted_labels(output)  # [K, N]
    acc = (pred == target).float().mean(-1)
    eye = torch.eye(n_classes, device=output.device)
    true_onehot, pred_onehot = eye[target], eye[pred]  # [N, C], [K, N, C]
    confusion = torch.einsum("nc,knd->kcd", true_onehot, pred_onehot)  # rows: true, cols: predicted
    tp = torch.diagonal(confusion, dim1=-2, dim2=-1)
    support = confusion.sum(-1)  # true count per class
    predicted = confusion.sum(-2)
    present = support > 0
    recall = torch.where(present, tp / support.clamp(min=1), torch.zeros_like(tp))
    balanced = recall.sum(-1) / present.sum(-1).clamp(min=1)
    denom = support + predicted  # 2TP + FP + FN
    in_union = denom > 0
    f1 = torch.where(in_union, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))
    f1_macro = f1.sum(-1) / in_union.sum(-1).clamp(min=1)
    return {"acc": acc, "balanced_acc": balanced, "f1_macro": f1_macro}


def regression_metrics(
    output: Tensor, target: Tensor, y_mean: float = 0.0, y_std: float = 1.0
) -> dict[str, Tensor]:
    """RMSE, MAE and R² per member, in the data's own units (standardization undone)."""
    pred = output[..., 0] * y_std + y_mean
    true = target * y_std + y_mean
    err = pred - true
    mse = err.square().mean(-1)
    total = (true - true.mean()).square().sum()
    r2 = 1 - err.square().sum(-1) / total.clamp(min=torch.finfo(total.dtype).tiny)
    return {"rmse": mse.sqrt(), "mae": err.abs().mean(-1), "r2": r2}
