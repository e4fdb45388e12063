"""Protocol front ends: each maps its wire format onto ``ModelVersion.infer``.

``kserve_rest`` (KServe v2 / Open Inference Protocol), ``tfserving`` (TF Serving REST),
``torchserve`` (TorchServe style) and ``kserve_grpc``. The helpers here are shared by the REST ones:
a lean orjson response, body reading within size and time limits (big bodies decoded in a worker
thread, a few at a time), and the ``{"error": ...}`` answer.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ember.serve import bigjson
from ember.serve.errors import ServeError, brief

__all__ = [
    "BIG_BODY",
    "Body",
    "Context",
    "DEFAULT_BODY_TIMEOUT",
    "JSONResponse",
    "dumps",
    "endpoint",
    "error_response",
    "parse_json",
    "parse_length",
    "read_body",
    "read_json",
    "release_memory",
    "request_body",
    "respond",
]

logger = logging.getLogger(__name__)

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# Bodies from this size on are decoded in a worker thread; smaller ones on the event loop, where
# decoding costs less than the hop to a thread (the serve benchmarks' requests are all small).
BIG_BODY = 256 * 1024
DEFAULT_BODY_TIMEOUT = 60.0


@dataclass
class Context:
    """What every route needs: the repository, the metrics and the request body limits.

    Args:
        repository: the ``ModelRepository`` being served.
        metrics: a ``ServeMetrics`` (or None to record nothing).
        body_limit: largest request body in bytes (413 above it).
        server_name: returned by ``GET /v2``.
        server_version: returned by ``GET /v2``.
        body_timeout: seconds a request body may take to arrive (408 after); None waits forever.
        big_body: bodies of this many bytes or more are decoded in a worker thread.
        big_parallel: how many big bodies are decoded at once (the others wait their turn).
    """

    repository: Any
    metrics: Any = None
    body_limit: int = 64 * 1024 * 1024
    server_name: str = "ember"
    server_version: str = "0.1.0"
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    big_body: int = BIG_BODY
    big_parallel: int = 2
    big_slots: asyncio.Semaphore = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.big_slots = asyncio.Semaphore(self.big_parallel)


class JSONResponse(Response):
    """A JSON response serialised by orjson (numpy arrays included; NaN and infinities as null)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if getattr(_big_answer, "active", False):  # built by respond() for big outputs
            return dumps(content)
        return orjson.dumps(content, option=_JSON_OPTIONS, default=_unparsed)


_big_answer = threading.local()


def dumps(content: Any) -> bytes:
    """``orjson.dumps``, writing numpy arrays of over ``_BIG_ARRAY`` elements a block of rows at
    a time: one call on 2 M floats holds the GIL for about 0.4 s, a block for about a millisecond.

    Example:
        >>> dumps({"y": np.arange(3)})
        b'{"y":[0,1,2]}'
    """
    parts: list[bytes] = []
    _dump(content, parts)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _dump(content: Any, parts: list[bytes]) -> None:
    if isinstance(content, np.ndarray) and content.size > _BIG_ARRAY and content.ndim:
        rows = max(1, _BIG_ARRAY // max(1, content[0].size))
        for i in range(0, len(content), rows):
            block = orjson.dumps(np.ascontiguousarray(content[i : i + rows]), option=_JSON_OPTIONS)
            parts += [b"[" if i == 0 else b",", memoryview(block)[1:-1]]
        parts.append(b"]")
    elif isinstance(content, (dict, list)) and 0 < len(content) <= 16:
        items = content.items() if isinstance(content, dict) else enumerate(content)
        for n, (key, value) in enumerate(items):
            parts.append((b"{" if isinstance(content, dict) else b"[") if n == 0 else b",")
            if isinstance(content, dict):
                parts += [orjson.dumps(str(key)), b":"]
            _dump(value, parts)
        parts.append(b"}" if isinstance(content, dict) else b"]")
    else:
        parts.append(orjson.dumps(content, option=_JSON_OPTIONS, default=_unparsed))


_BIG_ARRAY = 65536


async def respond(outputs: dict[str, np.ndarray], build: Callable[[], Response]) -> Response:
    """``build()`` on the event loop when ``outputs`` are small, in a worker thread when they
    are big (encoding 2 M floats as JSON takes about 0.4 s)."""
    if sum(getattr(a, "nbytes", 0) for a in outputs.values()) < BIG_BODY:
        return build()
    return await asyncio.to_thread(_build_big, build)


def _build_big(build: Callable[[], Response]) -> Response:
    _big_answer.active = True
    try:
        return build()
    finally:
        _big_answer.active = False


def _unparsed(value: Any) -> Any:
    if isinstance(value, bigjson.RawArray):  # a big array echoed back (an "id" of numbers)
        return value.value()
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def error_response(status: int, message: str) -> JSONResponse:
    """Returns ``{"error": message}`` with ``status``.

    A 408 also closes the connection: the rest of the slow body is never read.
    """
    headers = {"Connection": "close"} if status == 408 else None
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def parse_length(value: str, what: str) -> int:
    """A length header's value as an int: ASCII digits only (``"²".isdigit()`` is true too).

    Example:
        >>> parse_length("12", "Content-Length")
        12
    """
    if not (value.isascii() and value.isdigit()):
        raise ServeError(400, f"Invalid {what} header {brief(value)}: expected a number of bytes.")
    return int(value)


async def read_body(
    request: Request, limit: int, timeout: float | None = None, *, big: int = BIG_BODY
) -> bytes | bytearray | memoryview:
    """Reads the request body.

    Args:
        request: the request.
        limit: largest body in bytes (``ServeError(413)`` above it).
        timeout: seconds the whole body may take to arrive (``ServeError(408)`` after); None
            waits forever.
        big: a body this long or longer is read straight into one preallocated buffer (no list
            of chunks joined into a second copy) and returned as a ``memoryview``.

    Returns:
        The body.
    """
    length = request.headers.get("content-length")
    if length is not None:
        length = parse_length(length, "Content-Length")
        if length > limit:
            raise ServeError(413, f"Request body of {length} bytes is over the limit of {limit}.")
    # A bare timer that cancels this task: asyncio.timeout costs about 4 times as much, on
    # every request.
    task, expired = asyncio.current_task(), []
    timer = None
    if timeout is not None and task is not None:
        timer = asyncio.get_running_loop().call_later(timeout, _expire, task, expired)
    try:
        if length is not None and length < big:
            return await request.body()
        return await _read_stream(request, limit, length)
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        raise ServeError(
            408,
            f"The request body did not arrive within {timeout:g} s "
            "(the server's body timeout, `ember serve --body-timeout`).",
        ) from None
    except ClientDisconnect:
        raise ServeError(400, "The client disconnected before sending the whole body.") from None
    finally:
        if timer is not None:
            timer.cancel()


def _expire(task: asyncio.Task, expired: list) -> None:
    expired.append(True)
    task.cancel()


async def _read_stream(request: Request, limit: int, length: int | None) -> bytearray | memoryview:
    # np.empty leaves the pages untouched until the body fills them (bytearray(n) would zero
    # 64 MB on the event loop first).
    buffer = memoryview(np.empty(length, np.uint8)) if length else bytearray()
    size = 0
    async for chunk in request.stream():
        end = size + len(chunk)
        if end > limit:
            raise ServeError(413, f"Request body is over the limit of {limit} bytes.")
        if length is None:
            buffer += chunk
        elif end <= length:
            buffer[size:end] = chunk
        size = end
    if length is not None and size != length:
        raise ServeError(400, f"The request body has {size} bytes; Content-Length said {length}.")
    return buffer


class Body:
    """A request body read by ``request_body``: its bytes and where to decode them.

    Args:
        data: the body.
        big: whether it is big enough to be decoded in a worker thread.
    """

    __slots__ = ("data", "big")

    def __init__(self, data: bytes | bytearray | memoryview, big: bool) -> None:
        self.data = data
        self.big = big

    async def decode(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``: on the event loop for a small body, in a worker thread for a big one,
        so that parsing 60 MB of JSON does not hold up the other clients."""
        if not self.big:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)


def request_body(request: Request, ctx: Context) -> _RequestBody:
    """Reads the body within ``ctx``'s size and time limits, as an async context manager.

    A big one (``ctx.big_body`` bytes or more) then waits for one of ``ctx.big_parallel`` slots
    and holds it while it is decoded (inside the ``async with``); the memory it took is handed
    back to the system once the request is answered (see ``endpoint``).

    Example:
        >>> async with request_body(request, ctx) as body:  # doctest: +SKIP
        ...     payload = await body.decode(read_json, body.data)
    """
    return _RequestBody(request, ctx)


class _RequestBody:
    """``request_body``'s context manager (a class: ``asynccontextmanager`` costs more per
    request than the rest of reading a small body)."""

    __slots__ = ("request", "ctx", "body")

    def __init__(self, request: Request, ctx: Context) -> None:
        self.request, self.ctx = request, ctx
        self.body: Body | None = None

    async def __aenter__(self) -> Body:
        ctx = self.ctx
        data = await read_body(self.request, ctx.body_limit, ctx.body_timeout, big=ctx.big_body)
        self.body = Body(data, len(data) >= ctx.big_body)
        if self.body.big:
            self.request.state.big_body = True
            await ctx.big_slots.acquire()
        return self.body

    async def __aexit__(self, *exc_info: Any) -> None:
        if self.body is not None and self.body.big:
            self.ctx.big_slots.release()
            self.body.data = b""  # the caller keeps what it decoded, not the text


def parse_json(body: bytes | bytearray | memoryview, what: str = "request body") -> Any:
    """Parses JSON (``ServeError(400)`` when invalid); big arrays of numbers stay
    ``bigjson.RawArray`` until a decoder reads them into the input's dtype."""
    try:
        return bigjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ServeError(400, f"Invalid JSON in the {what}: {exc}") from None


def read_json(body: bytes | bytearray | memoryview, what: str = "request body") -> dict:
    """Parses a JSON object (``ServeError(400)`` for invalid JSON or a non-object)."""
    payload = parse_json(body, what)
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
            if getattr(request.state, "big_body", False) and response.background is None:
                response.background = BackgroundTask(release_memory)  # once the answer is sent
            return response

        return counted

    return wrap


def release_memory() -> None:
    """Hands the heap pages freed by a big request back to the system (glibc's ``malloc_trim``).

    glibc keeps freed memory for reuse, so a server that once parsed four 60 MB bodies would
    otherwise stay that big. A no-op where the C library is not glibc.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
