"""How tests wait: ``wait_until`` for a condition, ``free_port`` for a port to hand a subprocess."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["free_port", "wait_until"]


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    message: str | Callable[[], str] = "condition not reached",
    interval: float = 0.05,
) -> Any:
    """Polls ``predicate()`` until it returns a truthy value, which is returned.

    Use it for conditions another thread or process makes true (a server becoming ready, a log
    line appearing); code under test that waits on time should take a clock instead.

    Args:
        predicate: called repeatedly; an exception it raises propagates (a process that died
            can fail the wait at once with its log).
        timeout: seconds before the wait fails.
        message: the failure message, or a callable making it at failure time (e.g. a log).
        interval: seconds between calls.

    Returns:
        The predicate's first truthy value.

    Raises:
        AssertionError: ``timeout`` passed with the predicate still falsy.

    Example:
        >>> wait_until(lambda: 1 + 1 == 2, timeout=1, message="arithmetic")
        True
    """
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s: {text}")
        time.sleep(interval)
    return value


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now (for servers that cannot be told ``--port 0``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
