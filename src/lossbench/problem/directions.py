"""Which way each metric is better: the one place lossbench says it.

Built-in metrics declare theirs here (:data:`CLASSIFICATION`, :data:`REGRESSION`, :data:`LOSSES`,
:data:`DERIVED`). A ``metrics:`` entry of the config declares its own with
``higher_is_better: true|false`` (default false: lower is better, as for a loss or an error);
the shipped ``ece`` and ``brier`` leave it at that default. The key is part of the entry, so a
run records it as the param ``metrics.<name>.higher_is_better`` (where it was given), and
commands that only read the store (``lossbench-report``, claims' judging) recover every
direction from a run's params with :func:`recorded_directions`, as training reads it from the
config with :func:`config_directions`.

Every consumer asks :func:`higher_is_better`: the report's "best" and ranks, the fair comparison
and ``--nuisance``, claims' ``at: best``, nuisance selection and ``beats``/``ranks_first``,
``diagnostics.target`` and Optuna's default direction. A name it does not know (a gradient norm,
``lr``, a weight statistic) has no direction: ``None``, and each consumer says what to give.

Light: the standard library only (the report and claims import it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# built-in metrics of each split (val/<name>, test/<name>), by task: name -> higher is better
CLASSIFICATION = {"acc": True, "balanced_acc": True, "f1_macro": True}
REGRESSION = {"rmse": False, "mae": False, "r2": True}
LOSSES = {"loss": False, "final_loss": False}  # every split's loss; train/final_loss
# the shipped metrics: entries (conf/train.yaml), for a reader that has no run's entries
SHIPPED = {"ece": False, "brier": False}
# whole names of other metrics a run records or a reader derives
DERIVED = {
    "target/epochs": False,
    "target/seconds": False,
    "target/reached": True,
    "time/seconds": False,
    "time/epoch_seconds": False,
}
KEY = "higher_is_better"  # the key a metrics: entry declares its direction with
DEFAULT = False  # an entry that does not declare one: lower is better
SPLITS = ("train", "val", "test")


def entry_direction(name: str, node: Any) -> bool:
    """Whether higher is better for a ``metrics:`` entry: its ``higher_is_better``, else
    :data:`DEFAULT`. ``ValueError`` naming the entry when the value is not a boolean."""
    value = node.get(KEY, DEFAULT) if isinstance(node, Mapping) else DEFAULT
    if not isinstance(value, bool):
        raise ValueError(f"metrics.{name}.{KEY}={value!r} must be true or false")
    return value


def config_directions(cfg: Mapping[str, Any]) -> dict[str, bool]:
    """Each ``metrics:`` entry of a run config (name -> whether higher is better)."""
    nodes = cfg.get("metrics") or {}
    if not isinstance(nodes, Mapping):
        return {}
    return {str(name): entry_direction(str(name), node) for name, node in nodes.items()}


def recorded_directions(params: Mapping[str, Any]) -> dict[str, bool]:
    """The same as :func:`config_directions`, from a run's recorded params: each entry has a
    ``metrics.<name>._target_`` param, and ``metrics.<name>.higher_is_better`` where it
    declared one (``True``/``False``, as configs are flattened)."""
    directions = {}
    for key in params:
        if key.startswith("metrics.") and key.endswith("._target_"):
            name = key.removeprefix("metrics.").removesuffix("._target_")
            declared = params.get(f"metrics.{name}.{KEY}")
            directions[name] = DEFAULT if declared is None else str(declared).lower() == "true"
    return directions


def higher_is_better(metric: str, declared: Mapping[str, bool] | None = None) -> bool | None:
    """Whether larger values of ``metric`` (``val/acc``, ``test/<name>``, ``target/epochs``)
    are better: ``declared`` (the run's ``metrics:`` entries, by name) for ``<split>/<name>``,
    then the built-in metrics; ``None`` for a name with no direction (``lr``,
    ``grad_norm/layer0``)."""
    if metric in DERIVED:
        return DERIVED[metric]
    split, _, name = metric.partition("/")
    if split not in SPLITS or not name:
        return None
    if declared and name in declared:
        return declared[name]
    for table in (LOSSES, CLASSIFICATION, REGRESSION, SHIPPED):
        if name in table:
            return table[name]
    return None


def direction(metric: str, declared: Mapping[str, bool] | None = None) -> str | None:
    """``"max"`` or ``"min"``: which end of ``metric`` is best (:func:`higher_is_better`), or
    ``None`` where it has no direction."""
    higher = higher_is_better(metric, declared)
    return None if higher is None else ("max" if higher else "min")


def describe(metric: str, higher: bool) -> str:
    """``val/acc: higher is better``."""
    return f"{metric}: {'higher' if higher else 'lower'} is better"
