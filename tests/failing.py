"""A loss that passes lossbench's checks (a 4-row dry run) and then fails in training: to test
what happens to a job that raises. Importable by the CLI's workers: tests/ is on PYTHONPATH."""

from __future__ import annotations

from torch import Tensor

from lossbench.problem.losses import CrossEntropy


class FailsInTraining(CrossEntropy):
    """Cross-entropy on batches of up to 4 rows; raises on anything larger."""

    def __call__(self, output: Tensor, target: Tensor) -> Tensor:
        if target.shape[-1] > 4:
            raise RuntimeError("boom: this loss fails in training")
        return super().__call__(output, target)
