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


def test_due_while_all_runs_and_one_more_fit_in_the_share():
    clock = _Clock()
    budget = TimeBudget(0.01, clock=clock)
    assert budget.due()  # the first time, always
    _run(budget, clock, cost=0.25)  # 0.25 s spent: another 0.25 s fits at 1% of 50 s
    clock.now = 100.0 + 49.75
    assert not budget.due()
    clock.now = 100.0 + 50.0
    assert budget.due()
    _run(budget, clock, cost=0.5)  # 0.75 s spent, one more at 0.5 s: 125 s after the start
    assert not budget.due()
    clock.now = 100.0 + 125.0
    assert budget.due()


def test_a_costly_run_is_paid_for_before_the_next():
    clock = _Clock()
    budget = TimeBudget(0.5, clock=clock)
    _run(budget, clock, cost=1.0)
    clock.now = 104.0
    assert budget.due()  # 1 s spent, one more at 1 s fits in half of 4 s
    _run(budget, clock, cost=3.0)  # this one cost three times as much
    clock.now = 113.0
    assert not budget.due()  # 4 s spent + 3 s > half of 13 s
    clock.now = 114.0
    assert budget.due()


def test_none_is_due_every_time():
    clock = _Clock()
    budget = TimeBudget(None, clock=clock)
    _run(budget, clock, cost=10.0)
    assert budget.due()


def test_a_failing_run_still_counts_its_cost():
    clock = _Clock()
    budget = TimeBudget(0.1, clock=clock)
    with pytest.raises(OSError), budget.timed():
        clock.now += 1.0
        raise OSError("disk full")
    assert not budget.due()


@pytest.mark.parametrize("share", [0, -0.1, 1.5, True, "0.1"])
def test_share_outside_zero_to_one_is_rejected(share):
    with pytest.raises(ValueError, match=r"Received an invalid value for `share`.*\(0, 1\]"):
        TimeBudget(share)
