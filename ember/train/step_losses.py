"""`StepLosses`: the training loss of every optimizer step, kept at a bounded size."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["StepLosses"]

_FLUSH_EVERY = 256  # step losses read from the device in batches: one sync per 256 steps


class StepLosses:
    """The training loss per optimizer step, in at most `limit` points.

    Losses on an accelerator stay there and are read 256 at a time (one sync each). When `limit`
    points are held, neighbours are averaged in pairs and each later point averages twice as many
    steps (`every`): a long run keeps its whole curve at a bounded size.

    Args:
        limit: the most points kept (even, >= 2).

    Example:
        >>> losses = StepLosses(limit=4)
        >>> for step in range(1, 7):
        ...     losses.add(step, torch.tensor(float(step)))
        >>> losses.as_dict()
        {'step': [2, 4, 6], 'loss': [1.5, 3.5, 5.5], 'every': 2}
    """

    def __init__(self, limit: int = 4096) -> None:
        if not isinstance(limit, int) or limit < 2 or limit % 2:
            raise ValueError(f"`limit` must be an even integer >= 2. Received: limit={limit!r}")
        self.limit = limit
        self.every = 1
        self.step: list[int] = []
        self.loss: list[float] = []
        self._pending_steps: list[int] = []
        self._pending: list = []  # floats (CPU) or detached scalar tensors (accelerators)
        self._sum, self._count = 0.0, 0  # the bucket being filled (`every` steps a point)
        self.last: float | torch.Tensor | None = None  # the latest step's loss (progress bar)

    def add(self, step: int, loss: float | torch.Tensor) -> None:
        """Record the loss of optimizer step `step`: a float, or a scalar tensor (an
        accelerator's losses wait on the device to be read 256 at a time)."""
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        self.last = loss
        self._pending_steps.append(step)
        self._pending.append(loss)
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    def as_dict(self) -> dict[str, Any]:
        """{"step": [...], "loss": [...], "every": steps per point}: what report.json holds."""
        self._flush()
        return {"step": list(self.step), "loss": list(self.loss), "every": self.every}

    def _flush(self) -> None:
        if not self._pending:
            return
        values = self._pending
        if isinstance(values[0], torch.Tensor):  # one loop records one kind
            values = torch.stack(values).float().cpu().tolist()
        for step, value in zip(self._pending_steps, values):
            self._sum += value
            self._count += 1
            if self._count == self.every:
                self.step.append(step)
                self.loss.append(self._sum / self._count)
                self._sum, self._count = 0.0, 0
                if len(self.loss) >= self.limit:
                    self._halve()
        self._pending_steps, self._pending = [], []

    def _halve(self) -> None:
        self.step = self.step[1::2]
        self.loss = [(a + b) / 2 for a, b in zip(self.loss[::2], self.loss[1::2])]
        self.every *= 2
