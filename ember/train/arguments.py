"""Checks of the arguments users give training objects (Trainer, callbacks, loggers): each
raises a ValueError that names the argument, what it must be and what was received."""

from __future__ import annotations

from typing import Any

__all__ = ["check_positive", "check_seconds"]


def check_positive(**kwargs: Any) -> None:
    """Raise ValueError unless every keyword's value is a positive integer.

    Example:
        >>> check_positive(accumulate_grad_batches=0)
        Traceback (most recent call last):
        ValueError: Received an invalid value for `accumulate_grad_batches`, expected a positive ...
    """
    for name, value in kwargs.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a positive integer. "
                f"Received: {name}={value!r}"
            )


def check_seconds(name: str, value: object) -> float:
    """Return `value` if it is a number of seconds >= 0, else raise a ValueError naming `name`.

    Example:
        >>> check_seconds("flush_secs", -1)
        Traceback (most recent call last):
        ...
        ValueError: Received an invalid value for `flush_secs`, expected seconds >= 0. Received: flush_secs=-1
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected seconds >= 0. "
            f"Received: {name}={value!r}"
        )
    return value
