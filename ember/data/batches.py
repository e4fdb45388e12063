"""Batches from Python generators and any iterable: Keras' `fit(generator, steps_per_epoch=...)`."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["BatchStream", "is_batch_list", "to_tensors"]

log = logging.getLogger(__name__)


class BatchStream:
    """Batches drawn from a generator, an iterator or any re-iterable of batches, epoch after epoch.

    A re-iterable (a list of batches, an object with `__iter__`) starts again every epoch. A
    generator or iterator is one stream shared by all epochs: each epoch takes `steps` batches
    from it (Keras' `steps_per_epoch`), or, without `steps`, runs it to its end, once. numpy
    arrays in a batch become tensors (float64 as float32); a list of inputs becomes a tuple.

    Args:
        source: yields batches such as `(x, y)`, `((x1, x2), y)` or `({"a": xa, "b": xb}, y)`.
        steps: batches per epoch; None = the whole iterable.

    Example:
        >>> def batches():
        ...     while True:
        ...         yield np.random.rand(32, 4), np.random.randint(0, 2, 32)
        >>> model.fit(batches(), steps_per_epoch=10, epochs=3)
    """

    def __init__(self, source: Iterable, steps: int | None = None) -> None:
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
        ):
            raise ValueError(
                f"Received an invalid value for `steps_per_epoch`, expected a positive integer or "
                f"None. Received: steps_per_epoch={steps!r}"
            )
        self.source = source
        self.steps = steps
        self._one_shot = isinstance(source, Iterator)
        # Batches drawn from a one-shot source but not consumed yet (a peek, an abandoned epoch).
        self._pending: deque = deque()
        self._epochs_done = 0

    def __len__(self) -> int:
        if self.steps is not None:
            return self.steps
        return len(self.source)  # TypeError for a generator: the loop then shows no total

    def __iter__(self) -> Iterator[Any]:
        if not self._one_shot:
            return self._epoch(iter(self.source))
        return self._one_shot_epoch()

    def peek(self) -> Any:
        """The next batch without consuming it (for a sample of inputs or building lazy layers)."""
        return next(iter(self))

    def _epoch(self, it: Iterator) -> Iterator[Any]:
        for n, batch in enumerate(it):
            if self.steps is not None and n >= self.steps:
                return
            yield to_tensors(batch)

    def _one_shot_epoch(self) -> Iterator[Any]:
        n = 0
        while self.steps is None or n < self.steps:
            if not self._pending:
                try:
                    self._pending.append(to_tensors(next(self.source)))
                except StopIteration:
                    break
            yield self._pending[0]
            # Dropped only when the next batch is asked for: a caller that takes one batch and
            # stops (a peek) leaves it for the epoch.
            self._pending.popleft()
            n += 1
        if n == 0:
            raise ValueError(self._exhausted_message())
        if self.steps is not None and n < self.steps:
            log.warning(
                "The generator ran out after %d of steps_per_epoch=%d batches in this epoch.",
                n,
                self.steps,
            )
        self._epochs_done += 1

    def _exhausted_message(self) -> str:
        if self._epochs_done == 0:
            return "The generator passed as training data yielded no batch."
        return (
            f"The generator passed as training data ran out after {self._epochs_done} epoch(s); a "
            "generator can be read only once. Make it loop (`while True: ... yield x, y`) and pass "
            "steps_per_epoch=N to fit, or pass a re-iterable (a list of batches, a DataLoader, an "
            "object whose __iter__ starts over), or train for fewer epochs."
        )


def is_batch_list(x: list) -> bool:
    """True for a list of batches (each a tuple/list/dict holding arrays), not a list of numbers."""
    if not x or not isinstance(x[0], (tuple, list, dict)):
        return False
    parts = x[0].values() if isinstance(x[0], dict) else x[0]
    return any(isinstance(p, (np.ndarray, torch.Tensor, tuple, list, dict)) for p in parts) and any(
        isinstance(p, (np.ndarray, torch.Tensor)) for p in _leaves(x[0])
    )


def to_tensors(batch: Any) -> Any:
    """numpy arrays in a batch -> tensors (float64 as float32); lists of inputs -> tuples."""
    if isinstance(batch, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(batch))
        return t.float() if t.dtype == torch.float64 else t
    if isinstance(batch, dict):
        return {k: to_tensors(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return tuple(to_tensors(b) for b in batch)
    return batch


def _leaves(x: Any) -> Iterator[Any]:
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x
