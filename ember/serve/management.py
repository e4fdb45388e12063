"""The management API: load, unload, default version, canary, labels, rollback.

Served by its own listener (bound to 127.0.0.1 by default) and protected by a bearer token.
Models come only from directories inside the repository: names such as ``../x``, absolute paths,
URLs and symlinks to outside the repository are refused. ``load`` answers 400 with the reasons
when a version newer than every serving one ended FAILED or PENDING (the status rows come with it).

Routes (all need ``Authorization: Bearer <token>``)::

    GET  /v2/repository/index                      every model version and its state
    POST /v2/repository/models/{name}/load         load or reload root/<name>
    POST /v2/repository/models/{name}/unload       drain and unload every version
    POST /v2/repository/models/{name}/default      {"version": 2}
    POST /v2/repository/models/{name}/canary       {"version": 3, "percent": 10}
    POST /v2/repository/models/{name}/labels       {"label": "stable", "version": 2}
    POST /v2/repository/models/{name}/rollback     undo the last default/canary change
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember.serve.errors import ServeError
from ember.serve.protocols import JSONResponse, error_response, read_body, read_json
from ember.serve.repository import check_model_name

__all__ = ["build_management_app", "refuse_token", "resolve_token", "DEFAULT_TOKEN_FILE"]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_FILE = Path("~/.ember/serve-token")
_BODY_LIMIT = 64 * 1024


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None) -> str:
    """Returns the management token: ``token``, else the one in ``token_file``, else a new one.

    A new token is written to ``token_file`` (default ``~/.ember/serve-token``) with mode 0600.

    Args:
        token: the token to use, or None.
        token_file: where to read it from, or write a generated one to.

    Returns:
        The bearer token.

    Example:
        >>> token = resolve_token(token_file="/tmp/ember-token")  # doctest: +SKIP
    """
    if token is not None:
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError("The management token must be a string of at least 16 characters.")
        return token
    path = Path(token_file or DEFAULT_TOKEN_FILE).expanduser()
    if path.is_file():
        existing = path.read_text().strip()
        if len(existing) >= 16:
            if path.stat().st_mode & 0o077:
                logger.warning("Token file %s is readable by other users; chmod 600 it.", path)
            return existing
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    logger.info("Management token written to %s (mode 0600)", path)
    return token


def build_management_app(repository: Any, token: str) -> Starlette:
    """Builds the management app over a ``ModelRepository``.

    Args:
        repository: the repository to manage.
        token: the bearer token every request must present.

    Returns:
        A Starlette app; serve it on a separate, local listener.

    Example:
        >>> app = build_management_app(repo, resolve_token())  # doctest: +SKIP
    """
    expected = f"Bearer {token}".encode()

    def guarded(handler: Any) -> Any:
        async def route(request: Request) -> Response:
            refused = refuse_token(request, expected)
            if refused is not None:
                return refused
            try:
                name = request.path_params.get("name")
                if name is not None:
                    check_model_name(name)
                return await handler(request)
            except ServeError as exc:
                return error_response(exc.status, exc.message)

        return route

    async def body(request: Request) -> dict:
        return read_json(await read_body(request, _BODY_LIMIT) or b"{}")

    async def index(request: Request) -> Response:
        return JSONResponse(repository.status())

    async def load(request: Request) -> Response:
        name = request.path_params["name"]
        logger.info("Management: load %s", name)
        return _load_answer(name, await repository.load_model(name))

    async def unload(request: Request) -> Response:
        name = request.path_params["name"]
        logger.info("Management: unload %s", name)
        return JSONResponse(await repository.unload_model(name))

    async def default(request: Request) -> Response:
        name, payload = request.path_params["name"], await body(request)
        repository.set_default(name, _field(payload, "version"))
        return JSONResponse(repository.status(name))

    async def canary(request: Request) -> Response:
        name, payload = request.path_params["name"], await body(request)
        repository.set_canary(name, _field(payload, "version"), _field(payload, "percent"))
        return JSONResponse(repository.status(name))

    async def labels(request: Request) -> Response:
        name, payload = request.path_params["name"], await body(request)
        repository.set_label(name, _field(payload, "label"), _field(payload, "version"))
        return JSONResponse(repository.status(name))

    async def rollback(request: Request) -> Response:
        name = request.path_params["name"]
        repository.rollback(name)
        return JSONResponse(repository.status(name))

    base = "/v2/repository/models/{name}"
    routes = [Route("/v2/repository/index", guarded(index), methods=["GET", "POST"])]
    for suffix, handler in (("/load", load), ("/unload", unload), ("/default", default),
                            ("/canary", canary), ("/labels", labels), ("/rollback", rollback)):  # fmt: skip
        routes.append(Route(base + suffix, guarded(handler), methods=["POST"]))
    return Starlette(routes=routes, exception_handlers={404: _no_route, 405: _no_route})


async def _no_route(request: Request, exc: Any) -> Response:
    # JSON like every other answer (a name with "/" or "..%2F" in it lands here).
    return error_response(
        exc.status_code, f"No management route {request.method} {request.url.path}."
    )


def _load_answer(name: str, rows: list[dict]) -> Response:
    """200 with the status rows, or 400 naming each version that ended FAILED or PENDING and is
    newer than every version serving (an older failed version that a newer one replaced is not
    an error of this load)."""
    newest = max((r["version"] for r in rows if r["state"] == "AVAILABLE"), default=-1)
    bad = [r for r in rows if r["state"] in ("FAILED", "PENDING") and r["version"] > newest]
    if not bad:
        return JSONResponse(rows)
    reasons = "; ".join(f"version {r['version']} {r['state']}: {r.get('error')}" for r in bad)
    return JSONResponse(
        {"error": f"Model {name!r} did not load: {reasons}.", "versions": rows}, status_code=400
    )


def _field(payload: dict, key: str) -> Any:
    if key not in payload:
        raise ServeError(400, f"The request body needs {key!r}; received keys: {sorted(payload)}.")
    return payload[key]


def refuse_token(request: Request, expected: bytes) -> Response | None:
    """A 401 unless the request carries ``expected`` (``b"Bearer <token>"``); None when it does.

    The comparison takes the same time whatever the token, so it leaks nothing by timing.

    Example:
        >>> refused = refuse_token(request, b"Bearer s3cret")  # doctest: +SKIP
    """
    given = request.headers.get("authorization", "").encode()
    if hmac.compare_digest(given, expected):
        return None
    response = error_response(
        401, "Missing or wrong bearer token (Authorization: Bearer <token>, from the token file)."
    )
    response.headers["WWW-Authenticate"] = "Bearer"
    return response
