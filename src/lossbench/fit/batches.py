"""Serving a fit's data to Lightning from tensors in memory: each member's shuffled
mini-batches of the training split, and the evaluation splits as one batch shared by all
members. No DataLoader, no per-sample collation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor

from lossbench.problem.data import SplitData
from lossbench.problem.models import member_generators

# A training epoch's inputs, in every member's order, are gathered at once up to this size
# (then each batch is a slice of them); above it, batch by batch.
EPOCH_GATHER_BYTES = 64 * 2**20


class MemberBatches:
    """Mini-batches for K members from tensors in memory, each member in its own shuffled order.

    Yields ``(x [K, B, F], y [K, B])``. A batch covering the whole split (full-batch training)
    needs no shuffling and is yielded once, shared by all members: ``(x [N, F], y [N])``.
    """

    def __init__(self, x: Tensor, y: Tensor, seeds: Sequence[int], batch_size: int) -> None:
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.generators = member_generators(seeds, stream=1)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.y)
        if self.batch_size >= n:
            yield self.x, self.y
            return
        order = torch.stack([torch.randperm(n, generator=g) for g in self.generators])
        order = order.to(self.x.device)
        size = order.numel() * self.x[0].numel() * self.x.element_size()
        if size > EPOCH_GATHER_BYTES:  # a big split: each batch's rows gathered as it comes
            for start in range(0, n, self.batch_size):
                idx = order[:, start : start + self.batch_size]
                yield self.x[idx], self.y[idx]
            return
        x, y = self.x[order], self.y[order]  # the epoch in each member's order, gathered once
        for start in range(0, n, self.batch_size):
            yield x[:, start : start + self.batch_size], y[:, start : start + self.batch_size]


class OneBatch:
    """A whole split as a single batch, shared by all members (validation and test)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.batch = (x, y)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield self.batch


class InMemoryDataModule(pl.LightningDataModule):
    """Serves a :class:`SplitData` as tensors, without DataLoader or per-sample collation."""

    def __init__(self, data: SplitData, seeds: Sequence[int], batch_size: int) -> None:
        super().__init__()
        self.data = data
        self.seeds = list(seeds)
        self.batch_size = batch_size
        self._tensors: dict[str, Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        """Move the splits to the trainer's device, once."""
        if self._tensors:
            return
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        d = self.data
        for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            self._tensors[name] = torch.from_numpy(getattr(d, name)).to(device)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(x, y)`` of the train, val or test split, on the trainer's device."""
        return self._tensors[f"x_{name}"], self._tensors[f"y_{name}"]

    def train_dataloader(self) -> MemberBatches:
        """Shuffled per-member mini-batches of the training split."""
        t = self._tensors
        return MemberBatches(t["x_train"], t["y_train"], self.seeds, self.batch_size)

    def val_dataloader(self) -> OneBatch:
        """The validation split as one batch."""
        return OneBatch(self._tensors["x_val"], self._tensors["y_val"])

    def test_dataloader(self) -> OneBatch:
        """The test split as one batch."""
        return OneBatch(self._tensors["x_test"], self._tensors["y_test"])
