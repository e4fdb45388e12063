"""The server's one error type: every bad request becomes a ``ServeError`` with an HTTP status."""

from __future__ import annotations

import reprlib
from typing import Any

__all__ = ["ServeError", "brief"]

# Longest message answered: a client's 10 MB value must not come back as a 10 MB error.
MAX_MESSAGE = 2000
_ECHO = 80


class ServeError(Exception):
    """An error answered to the client as ``{"error": message}`` with an HTTP status.

    Args:
        status: HTTP status code: 400 bad input, 401 bad token, 404 unknown model or version,
            408 body too slow, 413 body too large, 503 not ready.
        message: what was wrong, what was received and what is allowed (cut to 2,000
            characters; echo client values through ``brief``).

    Example:
        >>> raise ServeError(404, "Unknown model 'digitz'. Available: digits")
        Traceback (most recent call last):
        ...
        ember.serve.errors.ServeError: Unknown model 'digitz'. Available: digits
    """

    def __init__(self, status: int, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + f"... ({len(message)} characters)"
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def grpc_code(self) -> str:
        """The gRPC status name matching ``status`` (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...)."""
        return _GRPC_CODES.get(self.status, "INTERNAL")


def brief(value: Any, limit: int = _ECHO) -> str:
    """The ``repr`` of a client's value, cut to about ``limit`` characters, for error messages.

    Long strings and big lists are cut before they are formatted, so echoing them costs little.

    Example:
        >>> brief("x" * 1000)
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (1000 characters)"
    """
    if isinstance(value, (str, bytes)) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = _REPR.repr(value)
    return text if len(text) <= limit + 20 else text[: limit + 20] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _ECHO
_REPR.maxother = _ECHO
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 8
_REPR.maxlevel = 3

_GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    413: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
