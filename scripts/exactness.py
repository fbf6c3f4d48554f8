"""How far a stacked member is from its plain model, epoch by epoch, in stable and unstable
training: the measurement behind the README's exactness promise and the audit's allowance.

For each recipe, four seeds train as one stack; each member is compared with its plain model
trained alone by the plain loop (lossbench.fit.reference); that plain model with itself trained in
float64 (how far float32 rounding moves this training); and the stack trained in float64 with
the plain model in float64 (what the audit compares). Printed per epoch: the largest relative
difference of val/loss over the members, for each of the three.

    python scripts/exactness.py            # the two recipes of issue 29 (stable, unstable)
    python scripts/exactness.py --epochs 20
"""

from __future__ import annotations

import argparse

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lossbench.config.checks import check_run
from lossbench.config.spec import CONF_DIR, RunSpec
from lossbench.fit.reference import train_plain
from lossbench.fit.training import fit_members

RECIPES = {
    "stable: adam lr 1e-3, constant": ["optimizer=adam", "optimizer.lr=0.001"],
    "unstable: rmsprop lr 0.05, exponential": [
        "optimizer=rmsprop", "optimizer.lr=0.05", "scheduler=exponential",
    ],
}  # fmt: skip


def spec(overrides: list[str]) -> RunSpec:
    """A run composed from conf/ with ``overrides``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    return RunSpec.from_hydra_config(cfg)


def relative(a: float, b: float) -> float:
    """|a - b| / |b|."""
    return abs(a - b) / max(abs(b), 1e-12)


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    args = parser.parse_args()
    for label, recipe in RECIPES.items():
        specs = [
            spec(["tracking=none", f"trainer.max_epochs={args.epochs}", f"seed={seed}", *recipe])
            for seed in range(args.seeds)
        ]
        data = check_run(specs[0])
        stacked = fit_members([s.cfg for s in specs], data)
        stacked64 = fit_members([s.cfg for s in specs], data, exact=True)
        rows = [[0.0, 0.0, 0.0] for _ in range(args.epochs)]
        for s, mine, mine64 in zip(specs, stacked, stacked64, strict=True):
            plain = train_plain(s.cfg, data).series["val/loss"]
            plain64 = train_plain(s.cfg, data, exact=True).series["val/loss"]
            for epoch, row in enumerate(rows):
                row[0] = max(row[0], relative(mine.series["val/loss"][epoch], plain[epoch]))
                row[1] = max(row[1], relative(plain[epoch], plain64[epoch]))
                row[2] = max(row[2], relative(mine64.series["val/loss"][epoch], plain64[epoch]))
        print(f"\n{label} ({args.seeds} members, moons 2,000 rows, MLP 2x64, batch 64); val/loss")
        print(
            "epoch | float32: stacked vs plain | plain float32 vs float64 | float64: stacked vs plain"
        )
        for epoch, (a, b, c) in enumerate(rows):
            print(f"{epoch:5d} | {a:25.1e} | {b:24.1e} | {c:25.1e}")


if __name__ == "__main__":
    main()
