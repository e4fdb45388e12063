"""The server's one error type: every bad request becomes a ``ServeError`` with an HTTP status."""

from __future__ import annotations

__all__ = ["ServeError"]


class ServeError(Exception):
    """An error answered to the client as ``{"error": message}`` with an HTTP status.

    Args:
        status: HTTP status code: 400 bad input, 401 bad token, 404 unknown model or version,
            413 body too large, 503 not ready.
        message: what was wrong, what was received and what is allowed.

    Example:
        >>> raise ServeError(404, "Unknown model 'digitz'. Available: digits")
        Traceback (most recent call last):
        ...
        ember.serve.errors.ServeError: Unknown model 'digitz'. Available: digits
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def grpc_code(self) -> str:
        """The gRPC status name matching ``status`` (``INVALID_ARGUMENT``, ``NOT_FOUND``, ...)."""
        return _GRPC_CODES.get(self.status, "INTERNAL")


_GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
}
