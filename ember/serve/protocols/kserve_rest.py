"""KServe v2 / Open Inference Protocol over REST, with the binary tensor data extension.

Routes: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``,
``/v2/models/{name}[/versions/{v}]``, ``.../ready``, ``POST .../infer``. Inputs come as JSON (flat or nested ``data``) or, as
``tritonclient`` sends them by default, as raw bytes after the JSON header
(``Inference-Header-Content-Length``); outputs go back the same way when asked
(``"binary_data": true`` per output or ``"binary_data_output": true`` for the request).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember.serve.errors import ServeError, brief
from ember.serve.protocols import (
    Context,
    JSONResponse,
    endpoint,
    parse_length,
    read_json,
    request_body,
    respond,
)
from ember.serve.tensors import datatype_of, decode_binary, decode_tensor

__all__ = ["routes", "parse_infer_request", "encode_infer_response"]

_HEADER = "inference-header-content-length"


def routes(ctx: Context) -> list[Route]:
    """Returns the KServe v2 REST routes (inference first: the router tries routes in order).

    Example:
        >>> app = Starlette(routes=routes(Context(repository)))  # doctest: +SKIP
    """
    repo = ctx.repository
    kserve = endpoint(ctx, "kserve")

    @endpoint(ctx, "kserve", infer=True)
    async def infer(request: Request) -> Response:
        header_length = request.headers.get(_HEADER)
        async with request_body(request, ctx) as body:
            payload, inputs, outputs, binary_out = await body.decode(
                parse_infer_request, body.data, header_length
            )
        request_id = payload.get("id")
        del payload  # what is left of the body text goes now, before inference
        p = request.path_params
        mv = repo.get(p["name"], p.get("version"))  # right before infer: drain sees us
        request.state.version = mv.version
        results = await mv.infer(inputs, [n for n, _ in outputs] or None)
        return await respond(
            results, lambda: encode_infer_response(mv, request_id, results, outputs, binary_out)
        )

    @kserve
    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    @kserve
    async def ready(request: Request) -> Response:
        ok = repo.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @kserve
    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "name": ctx.server_name,
                "version": ctx.server_version,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
        )

    @kserve
    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        mv = repo.get(p["name"], p.get("version"))
        meta = mv.metadata()
        if p.get("version") is None:
            meta["versions"] = [str(v.version) for v in repo.versions(p["name"])]
        return JSONResponse(meta)

    @kserve
    async def model_ready(request: Request) -> Response:
        p = request.path_params
        try:
            mv = repo.get(p["name"], p.get("version"))
        except ServeError as exc:
            if exc.status == 400:
                raise
            answer = {"name": p["name"], "ready": False, "error": exc.message}  # the reason
            return JSONResponse(answer, status_code=exc.status)
        return JSONResponse({"name": mv.name, "version": str(mv.version), "ready": True})

    base, versioned = "/v2/models/{name}", "/v2/models/{name}/versions/{version}"
    return [
        Route(base + "/infer", infer, methods=["POST"]),
        Route(versioned + "/infer", infer, methods=["POST"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route(base, model_metadata, methods=["GET"]),
        Route(versioned, model_metadata, methods=["GET"]),
        Route(base + "/ready", model_ready, methods=["GET"]),
        Route(versioned + "/ready", model_ready, methods=["GET"]),
    ]


def parse_infer_request(
    body: bytes | bytearray, header_length: str | None = None
) -> tuple[dict, dict[str, np.ndarray], list[tuple[str, bool]], bool]:
    """Decodes a v2 infer request.

    Args:
        body: the whole HTTP body.
        header_length: the ``Inference-Header-Content-Length`` header (binary extension), or None.

    Returns:
        (the JSON header, inputs by name, requested outputs as ``(name, binary)``,
        whether every output should be binary).

    Raises:
        ServeError: 400 naming the malformed field.
    """
    view = memoryview(body)
    raw = view[:0]
    if header_length is not None:
        size = parse_length(header_length, "Inference-Header-Content-Length")
        if size > len(view):
            raise ServeError(
                400,
                f"Invalid Inference-Header-Content-Length {size} for a body of {len(view)} bytes.",
            )
        raw, view = view[size:], view[:size]
    payload = read_json(view, "inference request")
    del view
    items = payload.get("inputs")
    if not isinstance(items, list) or not items:
        raise ServeError(400, "The request needs 'inputs': a non-empty list of tensors.")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ServeError(400, "Each input must be an object with a 'name' string.")
        name = item["name"]
        if name in inputs:
            raise ServeError(400, f"Input {brief(name)} is given twice.")
        size = _binary_size(item)
        if size is None:
            inputs[name] = decode_tensor(
                name, item.get("datatype"), item.get("shape"), item.get("data")
            )
        else:
            if offset + size > len(raw):
                raise ServeError(
                    400, f"Input {brief(name)}: binary_data_size {size} runs past the body."
                )
            chunk = raw[offset : offset + size]
            inputs[name] = decode_binary(name, item.get("datatype"), item.get("shape"), chunk)
            offset += size
    if offset != len(raw):
        raise ServeError(
            400,
            f"The body has {len(raw) - offset} bytes after the binary tensors, which take "
            f"{offset} (their binary_data_size); send exactly the bytes the inputs declare.",
        )
    params = payload.get("parameters")
    binary_all = isinstance(params, dict) and params.get("binary_data_output") is True
    return payload, inputs, _requested_outputs(payload.get("outputs"), binary_all), binary_all


def encode_infer_response(
    mv: Any,
    request_id: Any,
    results: dict[str, np.ndarray],
    requested: list[tuple[str, bool]],
    binary_all: bool = False,
) -> Response:
    """Builds the v2 infer response (JSON, or JSON header + raw bytes for binary outputs)."""
    binary = dict(requested)
    outputs, blobs = [], []
    for name, array in results.items():
        array = np.ascontiguousarray(array)
        out: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if binary.get(name, binary_all) and array.dtype != object:
            data = array.tobytes()
            out["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            out["data"] = array.reshape(-1)
        outputs.append(out)
    answer: dict[str, Any] = {"model_name": mv.name, "model_version": str(mv.version)}
    if request_id is not None:
        answer["id"] = request_id
    answer["outputs"] = outputs
    if not blobs:
        return JSONResponse(answer)
    header = JSONResponse(answer).body
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _binary_size(item: dict) -> int | None:
    params = item.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ServeError(
            400, f"Input {brief(item['name'])}: invalid binary_data_size {brief(size)}."
        )
    return size


def _requested_outputs(items: Any, binary_all: bool) -> list[tuple[str, bool]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise ServeError(400, "'outputs' must be a list of {\"name\": ...} objects.")
    requested = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ServeError(400, "Each requested output must be an object with a 'name' string.")
        params = item.get("parameters")
        flag = params.get("binary_data") if isinstance(params, dict) else None
        requested.append((item["name"], binary_all if flag is None else flag is True))
    return requested
