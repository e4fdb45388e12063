"""The ASGI app: routes of every REST protocol, ``/metrics``, ``/openapi.json`` and ``/docs``.

No model logic lives here: routes come from ``ember.serve.protocols``, models from the repository.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from ember.serve.metrics import ServeMetrics
from ember.serve.protocols import (
    DEFAULT_BODY_TIMEOUT,
    Context,
    JSONResponse,
    error_response,
    kserve_rest,
    tfserving,
    torchserve,
)

__all__ = ["build_app", "openapi_schema", "DEFAULT_BODY_LIMIT", "DEFAULT_BODY_TIMEOUT"]

access_logger = logging.getLogger("ember.serve.access")
logger = logging.getLogger(__name__)

DEFAULT_BODY_LIMIT = 64 * 1024 * 1024


def build_app(
    repository: Any,
    *,
    metrics: ServeMetrics | None = None,
    body_limit: int = DEFAULT_BODY_LIMIT,
    server_version: str | None = None,
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
) -> Starlette:
    """Builds the inference app over a (started or starting) ``ModelRepository``.

    Args:
        repository: the models to serve.
        metrics: where requests are counted; a new ``ServeMetrics`` when None.
        body_limit: largest request body in bytes (413 above it).
        server_version: reported by ``GET /v2``; the installed ember version when None.
        body_timeout: seconds a request body may take to arrive (408 after, so a client sending
            a byte a second cannot hold a request open); None waits forever.

    Returns:
        A Starlette app; ``app.state.metrics`` and ``app.state.repository`` hold what it serves.

    Example:
        >>> app = build_app(ModelRepository("models"))  # doctest: +SKIP
        >>> uvicorn.run(app, port=8080)  # doctest: +SKIP
    """
    if not isinstance(body_limit, int) or body_limit <= 0:
        raise ValueError(
            f"`body_limit` must be a positive number of bytes. Received: {body_limit!r}"
        )
    if body_timeout is not None and (
        isinstance(body_timeout, bool)
        or not isinstance(body_timeout, (int, float))
        or not body_timeout > 0
    ):
        raise ValueError(
            f"`body_timeout` must be a positive number of seconds or None. Received: {body_timeout!r}"
        )
    metrics = metrics if metrics is not None else ServeMetrics()
    ctx = Context(
        repository,
        metrics,
        body_limit,
        server_version=server_version or _version(),
        body_timeout=body_timeout,
    )
    schema = openapi_schema(ctx.server_version)

    async def metrics_route(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def openapi_route(request: Request) -> Response:
        return JSONResponse(schema)

    async def docs_route(request: Request) -> Response:
        return HTMLResponse(_docs_page(schema))

    routes = kserve_rest.routes(ctx) + tfserving.routes(ctx) + torchserve.routes(ctx)
    routes += [
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/openapi.json", openapi_route, methods=["GET"]),
        Route("/docs", docs_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers=_HANDLERS)
    app.state.metrics = metrics
    app.state.repository = repository
    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """ASGI middleware logging ``method path status ms`` to ``ember.serve.access`` (INFO)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not access_logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [0]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                '%s "%s %s" %d %.2fms', client[0], scope["method"], scope["path"], status[0],
                (time.perf_counter() - start) * 1000.0,
            )  # fmt: skip


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, f"No route {request.method} {request.url.path}. See /docs.")


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return error_response(405, f"Method {request.method} is not allowed on {request.url.path}.")


async def _internal(request: Request, exc: Exception) -> Response:
    logger.exception("Unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, f"Internal server error: {type(exc).__name__}")


_HANDLERS = {404: _not_found, 405: _not_allowed, Exception: _internal}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ember")
    except PackageNotFoundError:
        return "0.1.0"


# --------------------------------------------------------------------------- OpenAPI
_NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"}
_VERSION = {"type": "string", "pattern": "^[0-9]{1,18}$"}
_LABEL = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_NUMBERS = {"type": "array", "items": {}}
_V2_TENSOR = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "INT8", "INT16", "INT32",
                                                "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object"},
        "data": _NUMBERS,
    },
}  # fmt: skip
_BODIES = {
    "v2_infer": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": _V2_TENSOR, "minItems": 1},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    },  # fmt: skip
    "tf_predict": {
        "type": "object",
        "properties": {"signature_name": {"type": "string"}, "instances": _NUMBERS, "inputs": {}},
    },
    "tf_examples": {
        "type": "object",
        "required": ["examples"],
        "properties": {
            "signature_name": {"type": "string"},
            "context": {"type": "object"},
            "examples": {"type": "array", "items": {"type": "object"}},
        },
    },
    "torchserve": {"oneOf": [_NUMBERS, {"type": "object", "properties": {"data": _NUMBERS}}]},
}


def openapi_schema(version: str = "0.1.0") -> dict[str, Any]:
    """Returns the OpenAPI 3.0 document describing every REST endpoint of the inference app."""
    paths: dict[str, Any] = {}

    def add(path: str, method: str, summary: str, tag: str, body: str | None = None) -> None:
        params = [
            {"name": n, "in": "path", "required": True, "schema": s}
            for n, s in (("name", _NAME), ("version", _VERSION), ("label", _LABEL))
            if "{" + n + "}" in path
        ]
        op: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": params,
                              "responses": {"200": {"description": "OK"},
                                            "4XX": {"description": '{"error": "..."}'}}}  # fmt: skip
        if body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _BODIES[body]}},
            }
        paths.setdefault(path, {})[method] = op

    for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        add(base, "get", "Model metadata (KServe v2)", "KServe v2")
        add(base + "/ready", "get", "Model readiness (KServe v2)", "KServe v2")
        add(base + "/infer", "post", "Inference (KServe v2)", "KServe v2", "v2_infer")
    add("/v2", "get", "Server metadata (KServe v2)", "KServe v2")
    add("/v2/health/live", "get", "Liveness (KServe v2)", "KServe v2")
    add("/v2/health/ready", "get", "Readiness (KServe v2)", "KServe v2")
    for suffix in ("", "/versions/{version}", "/labels/{label}"):
        base = "/v1/models/{name}" + suffix
        add(base, "get", "Model version status (TF Serving)", "TF Serving")
        add(base + "/metadata", "get", "Model metadata (TF Serving)", "TF Serving")
        add(base + ":predict", "post", "Predict, row or columnar (TF Serving)", "TF Serving",
            "tf_predict")  # fmt: skip
        add(base + ":classify", "post", "Classify (TF Serving)", "TF Serving", "tf_examples")
        add(base + ":regress", "post", "Regress (TF Serving)", "TF Serving", "tf_examples")
    for path in ("/predictions/{name}", "/predictions/{name}/{version}"):
        add(path, "post", "Predict (TorchServe style)", "TorchServe", "torchserve")
    add("/ping", "get", "Health (TorchServe style)", "TorchServe")
    add("/metrics", "get", "Prometheus metrics", "Operations")
    return {
        "openapi": "3.0.3",
        "info": {"title": "ember serve", "version": version},
        "paths": paths,
    }


def _docs_page(schema: dict) -> str:
    rows = "".join(
        f"<li><code>{method.upper()} {path}</code> {op['summary']}</li>"
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>ember serve API</title>"
        "<link rel='stylesheet' href='https://unpkg.com/swagger-ui-dist@5/swagger-ui.css'></head>"
        "<body><div id='swagger-ui'><h1>ember serve API</h1>"
        "<p>Schema: <a href='/openapi.json'>/openapi.json</a></p><ul>" + rows + "</ul></div>"
        "<script src='https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js'></script>"
        "<script>if (window.SwaggerUIBundle) SwaggerUIBundle({url: '/openapi.json', "
        "dom_id: '#swagger-ui'});</script></body></html>"
    )
