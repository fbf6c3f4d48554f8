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

    @property
    def epochs(self) -> int:
        """Number of epochs recorded."""
        return max((len(v) for v in self.series.values()), default=0)

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, Any]],
        test: Mapping[str, Any],
        member: int,
        seconds: float,
    ) -> RunResult:
        """Pick one member's values out of per-epoch rows of ``[K]`` tensors."""
        series: dict[str, list[float]] = {}
        for row in rows:
            for name, values in row.items():
                series.setdefault(name, []).append(float(values[member]))
        final = {name: values[-1] for name, values in series.items()}
        final.update({name: float(values[member]) for name, values in test.items()})
        final["time/seconds"] = seconds
        return cls(series=series, final=final, seconds=seconds)

    @classmethod
    def failed(cls, error: str, status: str = "FAILED") -> RunResult:
        """A run that did not finish, with the reason."""
        return cls(status=status, error=error)
