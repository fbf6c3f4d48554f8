"""Which runs may train together as members of one stacked model.

Members of a stack share the problem and the fit: dataset and data_seed, architecture, batch
size, Trainer settings (max_epochs, ...), diagnostics, the ``metrics`` recorded. With
``by="recipe"`` (the default) they may differ in the whole recipe: seed, loss, penalty,
optimizer (class and hyperparameters: any optimizer, a user's included) and schedule. With
``by="seed_loss"`` only in seed and loss, as before recipe stacks existed.

Something that couples members makes a run train alone: a schedule reading a metric of the
whole fit (reduce_on_plateau), global-norm gradient clipping, an optimizer that evaluates the
loss many times per step (LBFGS: in a stack, each evaluation of one member is a step of all),
Lightning callbacks from ``trainer.callbacks``.

Optimizers with :data:`VECTORIZED_OPTIMIZERS`' options are stepped by lossbench's vectorized
update (:mod:`lossbench.recipe.stacked_updates`); any other by its own instance per member
(:mod:`lossbench.recipe.stacked_optim`), which is exact for any optimizer and slower.

Light: no torch, Lightning or Hydra imports (the sweep's main process plans stacks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lossbench.identity import canonical

if TYPE_CHECKING:  # lossbench.config imports Hydra
    from lossbench.config.spec import RunSpec

STACK_BY = ("recipe", "seed_loss")
SEED_LOSS_KEYS = ("seed", "loss")
RECIPE_KEYS = ("seed", "loss", "penalty", "optimizer", "scheduler")
COUPLED_OPTIMIZERS = ("torch.optim.LBFGS",)
COUPLED_SCHEDULES = ("lossbench.recipe.schedules.reduce_on_plateau",)

# Optimizers lossbench's vectorized update steps (lossbench.recipe.stacked_updates), with the options
# it implements. Options that change nothing computed (foreach, fused, capturable) are
# accepted and ignored.
_IGNORED = ("foreach", "fused", "capturable")
VECTORIZED_OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "torch.optim.SGD": ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"),
    "torch.optim.Adam": (
        "lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay",
    ),
    "torch.optim.AdamW": ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"),
    "torch.optim.NAdam": (
        "lr", "betas", "eps", "weight_decay", "momentum_decay", "decoupled_weight_decay",
        "maximize",
    ),
    "torch.optim.RMSprop": (
        "lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize",
    ),
    "torch.optim.Adagrad": (
        "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize",
    ),
}  # fmt: skip


def vectorized_optimizer(node: Any) -> bool:
    """Whether lossbench's vectorized update steps this optimizer config (else each member
    steps with its own instance)."""
    if not isinstance(node, dict) or not node.get("_partial_"):
        return False
    known = VECTORIZED_OPTIMIZERS.get(str(node.get("_target_")))
    if known is None:
        return False
    return all(k in known or k in _IGNORED or k in ("_target_", "_partial_") for k in node)


def trains_alone(cfg: dict[str, Any], member_safe_callbacks: bool = False) -> bool:
    """Whether something in a run couples stacked members, so it must train alone: also
    ``trainer.callbacks``, which see the fit as a whole (Lightning's EarlyStopping would stop
    every member of a stack at once), unless every one of them declares itself member-safe
    (``member_safe_callbacks``: the checks, which build them, say so)."""
    scheduler = cfg.get("scheduler") or {}
    return (
        scheduler.get("_target_") in COUPLED_SCHEDULES
        or cfg["trainer"].get("gradient_clip_val") is not None
        or (bool(cfg["trainer"].get("callbacks")) and not member_safe_callbacks)
        or cfg["optimizer"].get("_target_") in COUPLED_OPTIMIZERS
    )


def stack_key(spec: RunSpec, by: str = "recipe", member_safe_callbacks: bool = False) -> str | None:
    """Runs with equal keys can train as members of one stacked model; ``None`` if this run
    must train alone. ``by`` is one of :data:`STACK_BY`."""
    if by not in STACK_BY:
        raise ValueError(f"stack_by={by!r} is not one of {', '.join(STACK_BY)}")
    cfg = spec.cfg
    if trains_alone(cfg, member_safe_callbacks):
        return None
    members = SEED_LOSS_KEYS if by == "seed_loss" else RECIPE_KEYS
    shared = {k: v for k, v in cfg.items() if k not in members}
    return canonical(shared)
