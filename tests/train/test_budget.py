"""TimeBudget: periodic work is due once the time since it ended pays for its cost at the share."""

import pytest

from ember.train.budget import TimeBudget


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(budget: TimeBudget, clock: _Clock, cost: float) -> None:
    with budget.timed():
        clock.now += cost


def test_due_again_after_cost_over_share_has_passed():
    clock = _Clock()
    budget = TimeBudget(0.01, clock=clock)
    assert budget.due()  # the first time, always
    _run(budget, clock, cost=5.0)  # warm-up: its cost does not count
    assert budget.due()
    _run(budget, clock, cost=0.002)  # 2 ms of work at 1%: due again 0.2 s after it ended
    clock.now += 0.199
    assert not budget.due()
    clock.now += 0.001
    assert budget.due()


def test_the_latest_cost_sets_the_next_wait():
    clock = _Clock()
    budget = TimeBudget(0.5, clock=clock)
    _run(budget, clock, cost=1.0)  # warm-up
    _run(budget, clock, cost=1.0)
    clock.now += 2.0
    _run(budget, clock, cost=0.1)  # cheaper now: due after 0.2 s, not 2 s
    clock.now += 0.2
    assert budget.due()


def test_none_is_due_every_time():
    clock = _Clock()
    budget = TimeBudget(None, clock=clock)
    _run(budget, clock, cost=10.0)
    assert budget.due()


def test_a_failing_run_still_counts_its_cost():
    clock = _Clock()
    budget = TimeBudget(0.1, clock=clock)
    _run(budget, clock, cost=0.0)  # warm-up
    with pytest.raises(OSError), budget.timed():
        clock.now += 1.0
        raise OSError("disk full")
    assert not budget.due()


@pytest.mark.parametrize("share", [0, -0.1, 1.5, True, "0.1"])
def test_share_outside_zero_to_one_is_rejected(share):
    with pytest.raises(ValueError, match=r"Received an invalid value for `share`.*\(0, 1\]"):
        TimeBudget(share)
