"""Argument checks: a wrong value names the argument, what is allowed and what was received."""

import pytest

from ember.train.arguments import check_positive, check_seconds


@pytest.mark.parametrize("value", [0, 0.5, 10])
def test_check_seconds_returns_seconds(value):
    assert check_seconds("flush_secs", value) == value


@pytest.mark.parametrize("value", [-1, -0.1, "2", None, True, float("nan")])
def test_check_seconds_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=r"`refresh_interval`, expected seconds >= 0. Received: "):
        check_seconds("refresh_interval", value)


@pytest.mark.parametrize("value", [0, -2, 1.5, "3"])
def test_check_positive_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=r"`log_every_n_steps`, expected a positive integer"):
        check_positive(log_every_n_steps=value)
