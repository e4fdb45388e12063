"""Pacing periodic bookkeeping: `TimeBudget`, the share of training time that work done after
every epoch (histograms, `history.json`) may take."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["TimeBudget"]


class TimeBudget:
    """Decides whether work done after every epoch (histograms, `history.json`) is due now.

    The work is due when every run so far plus one more at the cost of the last fits in `share`
    of the wall time since the first run started: all runs together, the first included, take
    at most about `share` of the time. With epochs that last much longer than the work, that
    is every epoch; with very short ones (a small model on a small dataset) only every few
    epochs, instead of costing more than the training itself. The first run is always due.
    Counting the total, not the time since the last run, keeps to the share when one run costs
    several times another (the first run after a stretch of training finds cold caches).

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
        self._start: float | None = None  # when the first run started (None: no run yet)
        self._spent = 0.0  # seconds all runs took
        self._cost = 0.0  # seconds the last run took

    def due(self) -> bool:
        """Whether running the work now keeps it within its share of time."""
        if self.share is None or self._start is None:
            return True
        return self._spent + self._cost <= self.share * (self._clock() - self._start)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Measure one run of the work (its cost counts against the share)."""
        start = self._clock()
        if self._start is None:
            self._start = start
        try:
            yield
        finally:
            self._cost = self._clock() - start
            self._spent += self._cost
