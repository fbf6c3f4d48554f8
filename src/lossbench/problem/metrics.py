"""Evaluation metrics for all stacked members at once.

Built-in metrics take the members' outputs ``[K, N, n_outputs]`` and the shared targets ``[N]``
and return one value per member, ``[K]``. They follow scikit-learn's definitions (the tests
check them against it): balanced accuracy averages recall over the classes present in the
targets; macro F1 averages over the classes present in targets or predictions.

Metrics named in the config's ``metrics:`` mapping (:data:`MetricFn`, see :func:`build_metrics`)
have one signature, ``fn(outputs, target) -> Tensor[K]``, and declare the task they are for:

- ``task: classification``: ``outputs`` are class probabilities ``[K, N, C]`` (``C`` = number of
  classes, also 2 for one-logit binary models), ``target`` the class indices ``[N]`` (long).
  Probabilities come from the logits by softmax, or by sigmoid for one logit (``[1 - p, p]``),
  whatever the loss trained them (hinge losses' scores too);
- ``task: regression``: ``outputs`` are predictions ``[K, N, 1]`` and ``target`` the true values
  ``[N]``, both in the data's own units (target standardization undone).

``val/<name>`` is the final model's value (recorded once, at the last epoch's step) unless the
entry says ``every_epoch: true`` (then every epoch's: a history, at one more value per epoch to
record). ``test/<name>`` is the final model's. ``higher_is_better: true`` says larger values are
better (default false: lower is better; see :mod:`lossbench.problem.directions`). Other keys of
an entry are the function's keyword arguments.

:func:`ece` and :func:`brier` are shipped this way (``conf/train.yaml`` records them).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lossbench.problem import directions

CLASSIFICATION_METRICS = tuple(directions.CLASSIFICATION)  # acc, balanced_acc, f1_macro
REGRESSION_METRICS = tuple(directions.REGRESSION)  # rmse, mae, r2
# Names a metric of the config cannot take: each split's loss and the built-in metrics.
BUILT_IN = ("loss", *CLASSIFICATION_METRICS, *REGRESSION_METRICS)
METRIC_TASKS = ("classification", "regression")
# what an entry says that is no argument of its function
RESERVED_KEYS = ("_target_", "task", "every_epoch", directions.KEY)
SHIPPED = ("lossbench.problem.metrics.ece", "lossbench.problem.metrics.brier")
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

MetricFn = Callable[[Tensor, Tensor], Tensor]
"""``fn(outputs, target) -> Tensor[K]``: see the module docstring for what each task gets."""


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


# ---------------------------------------------------------------------------------------------
# Metrics of the config (``metrics:``), with the signature of :data:`MetricFn`


def probabilities(output: Tensor) -> Tensor:
    """Class probabilities ``[K, N, C]`` from logits ``[K, N, n_outputs]``: softmax, or for one
    logit the sigmoid ``p`` of class 1 as ``[1 - p, p]``."""
    if output.shape[-1] == 1:
        p = torch.sigmoid(output)
        return torch.cat([1 - p, p], dim=-1)
    # softmax written out: torch.softmax over a last dim of a few classes is ~4x slower here
    exp = (output - output.amax(dim=-1, keepdim=True)).exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def ece(probs: Tensor, target: Tensor, n_bins: int = 15) -> Tensor:
    """Expected calibration error (top-label), per member ``[K]``.

    Each row's confidence is its largest probability, its prediction that class. Rows fall
    into ``n_bins`` equal-width bins of confidence, ``(i/n, (i+1)/n]``; the ECE is the sum over
    bins of (rows in bin / N) x |accuracy in bin - mean confidence in bin|.
    """
    confidence, predicted = probs.max(dim=-1)  # [K, N]
    correct = (predicted == target).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype, device=probs.device)
    bins = torch.bucketize(confidence, edges[1:-1])  # (lo, hi]: right edge included
    gap = torch.zeros(*confidence.shape[:-1], n_bins, dtype=probs.dtype, device=probs.device)
    gap.scatter_add_(-1, bins, correct - confidence)  # per bin: sum(correct) - sum(confidence)
    return gap.abs().sum(-1) / confidence.shape[-1]


def brier(probs: Tensor, target: Tensor) -> Tensor:
    """Multiclass Brier score per member ``[K]``: the mean over rows of the sum over classes of
    ``(p_c - onehot_c)^2`` (for a binary task both classes count: twice scikit-learn's
    ``brier_score_loss``)."""
    onehot = torch.nn.functional.one_hot(target, probs.shape[-1]).to(probs.dtype)
    return (probs - onehot).square().sum(-1).mean(-1)


def metric_task(task: str) -> str:
    """The metric task (classification or regression) of a data task (binary, multiclass or
    regression)."""
    return "regression" if task == "regression" else "classification"


def check_metric_node(name: Any, node: Any) -> None:
    """Raise ``ValueError`` if an entry of ``metrics:`` is malformed: a bad or built-in name, no
    ``_target_``, or a ``task`` other than classification or regression. (No imports.)"""
    where = f"metrics.{name}"
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(
            f"{where}: a metric name may hold letters, digits, '_', '.' and '-' only "
            "(it is recorded as val/<name> and test/<name>)"
        )
    if name in BUILT_IN:
        raise ValueError(
            f"{where}: {name!r} is a built-in metric name ({', '.join(BUILT_IN)}); "
            "give the metric another name"
        )
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str) or not target.strip("."):
        raise ValueError(
            f"{where}={node!r} must be a mapping with a _target_ (a function "
            f"fn(outputs, target) -> Tensor[K], e.g. {SHIPPED[0]}) and a task"
        )
    if node.get("task") not in METRIC_TASKS:
        raise ValueError(
            f"{where}.task={node.get('task')!r} must be one of {', '.join(METRIC_TASKS)}"
        )
    if not isinstance(node.get("every_epoch", False), bool):
        raise ValueError(f"{where}.every_epoch={node['every_epoch']!r} must be true or false")
    directions.entry_direction(name, node)


def locate(path: str) -> Any:
    """The object a dotted path names (``pkg.module.function``): the longest importable module,
    then attributes. ``ImportError`` or ``AttributeError`` says what is missing; an error raised
    while importing an existing module is its own."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name and (module == err.name or module.startswith(f"{err.name}.")):
                if i == 1:
                    raise
                continue  # this path is not a module: try its parent
            raise
        for attribute in parts[i:]:
            found = getattr(found, attribute)
        return found
    raise ImportError(f"no module in {path!r}")


def build_metric(name: str, node: Mapping[str, Any]) -> MetricFn:
    """One entry of ``metrics:``: its ``_target_`` function with the entry's other keys (but
    ``task``) bound as keyword arguments; or, for a class, an instance built with them.
    Raises ``ValueError`` naming the entry when the target cannot be imported or called."""
    from hydra.utils import instantiate

    check_metric_node(name, node)
    target = node["_target_"]
    where = f"metrics.{name}._target_={target!r}"
    try:
        found = locate(target)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"{where} cannot be imported ({err}); shipped metrics: {', '.join(SHIPPED)}"
        ) from None
    if not callable(found):
        raise ValueError(
            f"{where} is not callable (it is {type(found).__name__} {found!r}); a metric is a "
            f"function fn(outputs, target) -> Tensor[K]; shipped metrics: {', '.join(SHIPPED)}"
        )
    kwargs = {k: v for k, v in node.items() if k not in RESERVED_KEYS[1:]}
    try:
        metric = instantiate(kwargs, _convert_="all", _partial_=not isinstance(found, type))
    except Exception as err:  # noqa: BLE001
        cause = err.__cause__ or err
        raise ValueError(f"metrics.{name}: {type(cause).__name__}: {cause}") from None
    if not callable(metric):
        raise ValueError(f"{where}: its instance is not callable (it needs a __call__)")
    return metric


@dataclass(frozen=True)
class Metric:
    """A metric of the config, built: its function, whether val/ records every epoch, and
    whether higher values are better."""

    fn: MetricFn
    every_epoch: bool = False
    higher_is_better: bool = directions.DEFAULT


def build_metrics(nodes: Mapping[str, Any] | None, task: str) -> dict[str, Metric]:
    """The metrics of a config's ``metrics:`` mapping that are for ``task`` (a data task:
    binary, multiclass or regression), by name. Every entry is checked, whatever its task."""
    kind = metric_task(task)
    built = {}
    for name, node in (nodes or {}).items():
        check_metric_node(name, node)
        if node["task"] == kind:
            built[name] = Metric(
                build_metric(name, node),
                bool(node.get("every_epoch", False)),
                directions.entry_direction(name, node),
            )
    return built


def metric_inputs(
    output: Tensor, target: Tensor, task: str, y_mean: float = 0.0, y_std: float = 1.0
) -> tuple[Tensor, Tensor]:
    """What a :data:`MetricFn` receives for a split: probabilities and class indices for
    classification; predictions and targets in the data's units for regression."""
    if task == "regression":
        return output * y_std + y_mean, target * y_std + y_mean
    return probabilities(output), target


def member_values(name: str, value: Any, members: int) -> Tensor:
    """A metric's result as ``[K]`` values; ``ValueError`` naming the metric otherwise."""
    if not isinstance(value, Tensor) or value.shape != (members,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"metrics.{name} returned {shape}; a metric returns one value per stacked member, "
            f"a tensor of shape ({members},)"
        )
    return value.detach()
