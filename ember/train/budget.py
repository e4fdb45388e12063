"""Pacing periodic bookkeeping: `TimeBudget`, the share of training time that work done after
every epoch (histograms, `history.json`) may take."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["TimeBudget"]


class TimeBudget:
    """Decides whether work done after every epoch (histograms, `history.json`) is due now.

    The work is due when the time since it last ended is at least its last cost divided by
    `share`, so it takes about `share` of the wall time at most. With epochs that last much
    longer than the work, that is every epoch; with very short ones (a small model on a small
    dataset) only every few epochs, instead of costing more than the training itself. The first
    two runs are always due: the first is warm-up (imports, first kernel calls) and its cost
    would overstate the wait.

    Args:
        share: the largest fraction of wall time the work may take, in (0, 1]; None makes it due
            every time.
        name: the argument `share` came from, for the error message.
        clock: a monotonic clock in seconds (default `time.perf_counter`).

    Example:
        >>> budget = TimeBudget(0.001)
        >>> if budget.due():
        ...     with budget.timed():
        ...         write_histograms()
    """

    def __init__(
        self,
        share: float | None,
        name: str = "share",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if share is not None and (
            not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1
        ):
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a share of time in (0, 1] "
                f"or None (every time). Received: {name}={share!r}"
            )
        self.share = share
        self._clock = clock or time.perf_counter
        self._cost: float | None = None  # seconds the last run took (None: not known yet)
        self._end = 0.0  # when it ended
        self._runs = 0

    def due(self) -> bool:
        """Whether running the work now keeps it within its share of time."""
        if self.share is None or self._cost is None:
            return True
        return (self._clock() - self._end) * self.share >= self._cost

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Measure one run of the work (its cost decides when it is due again)."""
        start = self._clock()
        try:
            yield
        finally:
            self._end = self._clock()
            self._runs += 1
            if self._runs > 1:  # the first run is warm-up: its cost does not set the wait
                self._cost = self._end - start
