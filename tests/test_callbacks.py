"""Lightning callbacks from the config (``trainer.callbacks``) reach the Trainer next to
lossbench's own, and see the run's metrics: never silently dropped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import pytest
import pytorch_lightning as pl

from conftest import cross_path_approx
from lossbench.config.checks import check_run
from lossbench.config.spec import ConfigError
from lossbench.fit.training import fit_members
from lossbench.sweep.stacking import stack_key
from test_own_recipes import assert_members_match_plain_model

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


ES = ["early_stopping=val_loss", "early_stopping.patience=3"]
LIGHTNING_ES = (
    "+trainer.callbacks=[{_target_: pytorch_lightning.callbacks.EarlyStopping, "
    "monitor: val/loss, patience: 3}]"
)


@pytest.mark.slow
def test_members_of_a_stack_stop_where_lightnings_early_stopping_stops_each_alone(
    make_spec,  # noqa: ANN001
) -> None:
    """Four members, per-member early stopping: each stops at the epoch Lightning's own
    EarlyStopping stops it at trained alone, with the same metrics (1e-5), and is FINISHED
    with lossbench.stopped_epoch; its curves end there, its test metrics are of those weights."""
    specs = [make_spec([*FAST, *ES, f"seed={seed}"]) for seed in range(4)]
    assert len({stack_key(s) for s in specs}) == 1  # they stack
    stacked = fit_members([s.cfg for s in specs], check_run(specs[0]))
    stopped = []
    for seed, member in enumerate(stacked):
        [alone] = fit_members([make_spec([*FAST, LIGHTNING_ES, f"seed={seed}"]).cfg])
        assert member.status == "FINISHED"
        epoch = int(member.tags["lossbench.stopped_epoch"])
        assert len(member.series["val/loss"]) == len(alone.series["val/loss"]) == epoch + 1
        for name, values in alone.series.items():
            assert member.series[name] == cross_path_approx(values), name
        for name in ("test/loss", "test/acc", "train/final_loss"):
            assert member.final[name] == cross_path_approx(alone.final[name]), name
        stopped.append(epoch)
    assert len(set(stopped)) > 1 and max(stopped) < 39  # on their own, before max_epochs
    assert_members_match_plain_model(specs)  # the plain loop stops them alike


@pytest.mark.slow
def test_no_member_stops_with_a_patience_longer_than_the_fit_and_best_weights_are_kept(
    make_spec,  # noqa: ANN001
) -> None:
    specs = [make_spec([*FAST, "early_stopping=val_loss", "early_stopping.patience=100",
                        f"seed={seed}"]) for seed in range(2)]  # fmt: skip
    results = fit_members([s.cfg for s in specs], check_run(specs[0]))
    assert all(len(r.series["val/loss"]) == 40 for r in results)
    assert all("lossbench.stopped_epoch" not in r.tags for r in results)
    best = [make_spec([*FAST, *ES, "early_stopping.restore=best", f"seed={seed}"])
            for seed in range(3)]  # fmt: skip
    assert_members_match_plain_model(best)  # test metrics of each one's best weights


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["early_stopping.monitor=val/auroc"],
         "early_stopping.monitor='val/auroc' is not recorded every epoch.*val/loss"),
        (["early_stopping.mode=lowest"], "early_stopping.mode='lowest' is not one of min, max"),
        (["early_stopping.patience=-1"], "early_stopping.patience=-1 must be an integer >= 0"),
        (["early_stopping.restore=latest"], "restore='latest' is not one of final, best"),
    ],
)  # fmt: skip
def test_bad_early_stopping_is_refused_before_training(
    make_spec,
    overrides: list[str],
    message: str,  # noqa: ANN001
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_run(make_spec([*FAST, "early_stopping=val_loss", *overrides]))


@pytest.mark.parametrize(
    ("callback", "message"),
    [
        ("pytorch_lightning.callbacks.LearningRateMonitor", "records each member's learning rate"),
        ("pytorch_lightning.callbacks.ModelCheckpoint", "use tracking.log_model=true"),
    ],
)
def test_callbacks_lossbench_replaces_are_refused_saying_what_to_use(
    make_spec,
    callback: str,
    message: str,  # noqa: ANN001
) -> None:
    spec = make_spec([*FAST, f"+trainer.callbacks=[{{_target_: {callback}}}]"])
    with pytest.raises(ConfigError, match=f"trainer.callbacks: .*{message}"):
        check_run(spec)


class EpochCounter(pl.Callback):
    """A user's callback that only observes: it declares itself member-safe, so it stacks."""

    lossbench_member_safe = True
    seen: ClassVar[list[int]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        EpochCounter.seen.append(trainer.current_epoch)


def test_a_member_safe_callback_stacks_and_others_train_alone(make_spec) -> None:  # noqa: ANN001
    from lossbench.sweep.checking import check_specs
    from lossbench.sweep.plan import plan_stacks

    safe = f"+trainer.callbacks=[{{_target_: {__name__}.EpochCounter}}]"
    unsafe = f"+trainer.callbacks=[{{_target_: {__name__}.StopAt, epoch: 1}}]"
    specs = [make_spec([*FAST, "trainer.max_epochs=2", o, f"seed={s}"])
             for o in (safe, unsafe) for s in (0, 1)]  # fmt: skip
    stacks = plan_stacks(range(4), specs, check_specs(specs), True, 64, n_workers=1)
    assert sorted(stack.jobs for stack in stacks) == [[0, 1], [2], [3]]
    EpochCounter.seen.clear()
    results = fit_members([specs[0].cfg, specs[1].cfg])
    assert EpochCounter.seen == [0, 1] and all(r.epochs == 2 for r in results)
