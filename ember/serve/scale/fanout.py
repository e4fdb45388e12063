"""The management API of a worker group: every call goes to every worker, the answer lists each.

``POST /v2/repository/models/{name}/load`` (and unload, default, canary, labels, rollback) is
sent to each worker's private management port; the answer is::

    {"workers": 2, "applied": 2,
     "results": [{"worker": 0, "pid": 4242, "status": 200, "body": [...status rows...]}, ...]}

with the status of the first worker that refused (and its ``error``) when one did. A change every
worker accepted is kept in the group's journal and replayed on a worker that restarts.
``GET /v2/repository/index`` answers the same way, with each worker's index.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember.serve.management import refuse_token
from ember.serve.protocols import JSONResponse, error_response
from ember.serve.scale._http import fetch

if TYPE_CHECKING:
    from ember.serve.scale.workers import WorkerGroup

__all__ = ["build_fanout_app", "start_management"]

logger = logging.getLogger(__name__)

_BODY_LIMIT = 64 * 1024


def build_fanout_app(group: WorkerGroup) -> Starlette:
    """Builds the group's management app (same routes and token as ``build_management_app``)."""
    expected = f"Bearer {group.token}".encode()

    async def route(request: Request) -> Response:
        refused = refuse_token(request, expected)
        if refused is not None:
            return refused
        body = await request.body()
        if len(body) > _BODY_LIMIT:
            return error_response(413, f"Request body over {_BODY_LIMIT} bytes.")
        members = group.live_members()
        if len(members) < group.count:
            return error_response(503, f"Only {len(members)} of {group.count} workers are up "
                                  "(one is restarting); try again.")  # fmt: skip
        path, method = request.url.path, request.method
        results = await asyncio.gather(*(_call(m, method, path, body, group.auth) for m in members))
        failed = [r for r in results if r["status"] != 200]
        if method == "POST" and not failed:
            group.journal.append((method, path, body))
        payload: dict[str, Any] = {"workers": group.count, "applied": len(results) - len(failed),
                                   "results": results}  # fmt: skip
        if failed:
            body_ = failed[0]["body"]
            payload["error"] = body_.get("error") if isinstance(body_, dict) else str(body_)
        return JSONResponse(payload, status_code=failed[0]["status"] if failed else 200)

    async def not_found(request: Request, exc: Any) -> Response:
        return error_response(
            exc.status_code, f"No management route {request.method} {request.url.path}."
        )

    routes = [Route("/v2/repository/index", route, methods=["GET", "POST"])]
    for action in ("load", "unload", "default", "canary", "labels", "rollback"):
        routes.append(Route("/v2/repository/models/{name}/" + action, route, methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


async def start_management(group: WorkerGroup, host: str, port: int) -> Any:
    """Serves ``build_fanout_app(group)`` on ``host:port``; returns the uvicorn server.

    The server's ``serving`` attribute is its task; set ``should_exit`` to stop it.
    """
    import uvicorn

    config = uvicorn.Config(build_fanout_app(group), host=host, port=port, loop="none",
                            lifespan="off", log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # uvicorn < 0.29
    server.capture_signals = _no_signals  # the group owns SIGTERM/SIGINT
    server.serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if server.serving.done():
            await server.serving
            raise OSError(f"Cannot listen on {host}:{port} for the management API.")
        await asyncio.sleep(0.01)
    sock = server.servers[0].sockets[0]
    bound = sock.getsockname()[1]
    group.urls["management"] = f"http://{host}:{bound}"
    return server


def _no_signals() -> Any:
    import contextlib

    return contextlib.nullcontext()


async def _call(member: dict, method: str, path: str, body: bytes, auth: dict) -> dict:
    result: dict[str, Any] = {"worker": member["index"], "pid": member["pid"]}
    try:
        status, answer = await fetch(member["control"] + path, method, body, auth, timeout=120.0)
    except OSError as exc:
        return {**result, "status": 503, "body": {"error": f"worker unreachable: {exc}"}}
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = answer.decode(errors="replace")
    return {**result, "status": status, "body": parsed}
