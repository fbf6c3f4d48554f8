"""Lightning callbacks from the config (``trainer.callbacks``) reach the Trainer next to
lossbench's own, and see the run's metrics: never silently dropped."""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl

from lossbench.config import check_run
from lossbench.training import fit_members

FAST = ["dataset.source.n_samples=200", "optimizer.lr=0.05", "trainer.max_epochs=40"]


class StopAt(pl.Callback):
    """A user's callback: stops the fit after epoch ``epoch`` (0-based)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch >= self.epoch:
            trainer.should_stop = True


def early_stop_epoch(values: Sequence[float], patience: int) -> int | None:
    """The epoch at which Lightning's EarlyStopping (mode min, min_delta 0) stops on these
    values: the first with ``patience`` epochs in a row without a new best; None: never."""
    best, waited = float("inf"), 0
    for epoch, value in enumerate(values):
        if value < best:
            best, waited = value, 0
        else:
            waited += 1
            if waited >= patience:
                return epoch
    return None


def test_a_callback_of_the_config_reaches_the_trainer(make_spec) -> None:  # noqa: ANN001
    spec = make_spec([*FAST, f"+trainer.callbacks=[{{_target_: {__name__}.StopAt, epoch: 4}}]"])
    check_run(spec)
    [result] = fit_members([spec.cfg])
    assert len(result.series["val/loss"]) == 5  # epochs 0-4, not 40


def test_early_stopping_of_the_config_stops_each_run_where_its_own_metric_says(
    make_spec,  # noqa: ANN001
) -> None:
    stopped = []
    for seed in range(3):
        early = (
            "{_target_: pytorch_lightning.callbacks.EarlyStopping, monitor: val/loss, patience: 3}"
        )
        spec = make_spec([*FAST, f"seed={seed}", f"+trainer.callbacks=[{early}]"])
        [result] = fit_members([spec.cfg])
        values = result.series["val/loss"]
        assert len(values) < 40
        assert early_stop_epoch(values, 3) == len(values) - 1  # stopped where the rule says
        stopped.append(len(values))
    assert len(set(stopped)) > 1  # each run by its own metric
