"""What a training run produces, in plain Python types (cheap to pickle between processes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunResult:
    """Per-epoch metric series and final metrics of one run (or one stacked member)."""

    series: dict[str, list[float]] = field(default_factory=dict)  # metric -> value per epoch
    final: dict[str, float] = field(default_factory=dict)  # last epoch's values, test/*, time/*
    seconds: float = 0.0
    status: str = "FINISHED"  # an MLflow run status: FINISHED, FAILED or KILLED
    error: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # e.g. lossbench.status=diverged
    # tracking.log_model: the member's saved MLflow model, relative path -> bytes (so that a
    # worker on another machine can hand it over), logged under the run's artifacts/model
    model_files: dict[str, bytes] | None = None
    # metric -> the epoch of each value, for a metric not recorded every epoch (val/* with
    # trainer.check_val_every_n_epoch > 1); a metric absent here has one value per epoch
    steps: dict[str, list[int]] = field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        """Whether the run stopped because its loss became NaN or inf."""
        return self.tags.get("lossbench.status") == "diverged"

    def job_return(self) -> dict[str, float]:
        """What a Hydra job returns: the final metrics, plus ``diverged: 1.0`` if it diverged."""
        return {**self.final, "diverged": 1.0} if self.diverged else dict(self.final)

    @property
    def outcome(self) -> str:
        """finished, diverged, failed or killed."""
        return "diverged" if self.diverged else self.status.lower()

    def points(self, name: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of one metric's series."""
        values = self.series.get(name, [])
        return list(zip(self.steps.get(name, range(len(values))), values, strict=True))

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return max((len(v) for v in self.series.values()), default=0)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        end: Mapping[str, Any],
        member: int,
        seconds: float,
        diverged_at: int = -1,
        stopped_at: int = -1,
    ) -> RunResult:
        """Pick one member's values out of per-epoch rows and end-of-fit metrics, ``[K]``
        tensors each. ``seconds`` is the member's share of the fit's time.

        A member that diverged in epoch ``diverged_at`` keeps the epochs before it (its last
        finite metrics) and no end metrics, and is FAILED with ``lossbench.status=diverged``.
        A member that early stopping stopped at epoch ``stopped_at`` keeps the epochs up to it
        and is FINISHED with ``lossbench.stopped_epoch``.
        """
        kept = rows if diverged_at < 0 else rows[:diverged_at]
        if stopped_at >= 0 and diverged_at < 0:
            kept = rows[: stopped_at + 1]
        series: dict[str, list[float]] = {}
        epochs: dict[str, list[int]] = {}
        for epoch, row in enumerate(kept):
            for name, values in row.items():
                series.setdefault(name, []).append(float(values[member]))
                epochs.setdefault(name, []).append(epoch)
        steps = {name: e for name, e in epochs.items() if e != list(range(len(e)))}
        final = {name: values[-1] for name, values in series.items()}
        final["time/seconds"] = seconds
        final["time/epoch_seconds"] = seconds / max(len(rows), 1)
        if diverged_at < 0:
            final.update({name: float(values[member]) for name, values in end.items()})
            tags = {"lossbench.stopped_epoch": str(stopped_at)} if stopped_at >= 0 else {}
            return cls(series=series, steps=steps, final=final, seconds=seconds, tags=tags)
        return cls(
            series=series,
            steps=steps,
            final=final,
            seconds=seconds,
            status="FAILED",
            error=f"diverged: the loss became NaN or inf in epoch {diverged_at} (counting from 0)",
            tags={"lossbench.status": "diverged", "lossbench.diverged_epoch": str(diverged_at)},
        )

    @classmethod
    def failed(cls, error: str, status: str = "FAILED") -> RunResult:
        """A run that did not finish, with the reason."""
        return cls(status=status, error=error)
