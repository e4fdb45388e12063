"""Protocol front ends: each maps its wire format onto ``ModelVersion.infer``.

``kserve_rest`` (KServe v2 / Open Inference Protocol), ``tfserving`` (TF Serving REST),
``torchserve`` (TorchServe style) and ``kserve_grpc``. The helpers here are shared by the REST ones:
a lean orjson response, body reading with a size limit, and the ``{"error": ...}`` answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ember.serve.errors import ServeError

__all__ = [
    "Context",
    "JSONResponse",
    "endpoint",
    "error_response",
    "read_body",
    "read_json",
]

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass
class Context:
    """What every route needs: the repository, the metrics and the request body limit.

    Args:
        repository: the ``ModelRepository`` being served.
        metrics: a ``ServeMetrics`` (or None to record nothing).
        body_limit: largest request body in bytes (413 above it).
        server_name: returned by ``GET /v2``.
        server_version: returned by ``GET /v2``.
    """

    repository: Any
    metrics: Any = None
    body_limit: int = 64 * 1024 * 1024
    server_name: str = "ember"
    server_version: str = "0.1.0"


class JSONResponse(Response):
    """A JSON response serialised by orjson (numpy arrays included)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_JSON_OPTIONS)


def error_response(status: int, message: str) -> JSONResponse:
    """Returns ``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """Reads the request body, refusing one over ``limit`` bytes with ``ServeError(413)``."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ServeError(400, f"Invalid Content-Length header {length!r}.")
        if int(length) > limit:
            raise ServeError(413, f"Request body of {length} bytes is over the limit of {limit}.")
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServeError(413, f"Request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def read_json(body: bytes, what: str = "request body") -> dict:
    """Parses a JSON object (``ServeError(400)`` for invalid JSON or a non-object)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServeError(400, f"Invalid JSON in the {what}: {exc}") from None
    if not isinstance(payload, dict):
        raise ServeError(
            400, f"The {what} must be a JSON object, received {type(payload).__name__}."
        )
    return payload


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(ctx: Context, protocol: str, *, infer: bool = False) -> Callable[[Handler], Handler]:
    """Decorates a route: ``ServeError`` becomes ``{"error": ...}``; inference calls are counted.

    The handler of an inference route stores the version that served it in
    ``request.state.version`` so the metrics name it.
    """

    def wrap(handler: Handler) -> Handler:
        if not infer:

            async def plain(request: Request) -> Response:
                try:
                    return await handler(request)
                except ServeError as exc:
                    return error_response(exc.status, exc.message)

            return plain

        async def counted(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await handler(request)
            except ServeError as exc:
                response = error_response(exc.status, exc.message)
            if ctx.metrics is not None:
                version = getattr(request.state, "version", "")
                name = request.path_params.get("name", "")
                if version == "" and name not in ctx.repository.models():
                    name = ""  # never a label per unknown name a client made up
                elapsed = time.perf_counter() - start
                ctx.metrics.request(name, version, protocol, response.status_code, elapsed)
            return response

        return counted

    return wrap
