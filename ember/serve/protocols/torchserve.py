"""TorchServe style inference API: ``POST /predictions/{name}[/{version}]`` and ``GET /ping``.

The body is JSON: one instance (the input without its batch dimension), a batch, or an object
``{"data": ...}``. A classifier answers one instance with its top-5 ``{label: probability}``, as
TorchServe's classification handlers do; other models answer the output values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember.serve.bigjson import RawArray
from ember.serve.errors import ServeError
from ember.serve.protocols import (
    Context,
    JSONResponse,
    endpoint,
    parse_json,
    request_body,
    respond,
)
from ember.serve.protocols.tfserving import softmax_scores
from ember.serve.tensors import values_array

__all__ = ["routes", "TOP_K"]

TOP_K = 5


def routes(ctx: Context) -> list[Route]:
    """Returns the TorchServe style routes."""
    repo = ctx.repository

    @endpoint(ctx, "torchserve", infer=True)
    async def predict(request: Request) -> Response:
        p = request.path_params
        async with request_body(request, ctx) as body:
            payload = await body.decode(parse_json, body.data)
            mv = repo.get(p["name"], p.get("version"))
            request.state.version = mv.version
            if len(mv.inputs) != 1:  # JSON objects {input name: value}
                inputs, single = _decode_named(payload, mv.inputs)
            else:
                x, single = await body.decode(_decode, payload, mv.inputs[0])
                inputs = {mv.inputs[0].name: x}
            del payload  # what is left of the body text goes now, before inference
        outputs = await mv.infer(inputs)
        return await respond(outputs, lambda: _answers(mv, outputs, single))

    async def ping(request: Request) -> Response:
        ok = repo.ready
        return JSONResponse(
            {"status": "Healthy" if ok else "Unhealthy"}, status_code=200 if ok else 503
        )

    return [
        Route("/predictions/{name}", predict, methods=["POST"]),
        Route("/predictions/{name}/{version}", predict, methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
    ]


def _decode(payload: Any, spec: Any) -> tuple[np.ndarray, bool]:
    if isinstance(payload, dict):
        key = next((k for k in ("data", "instances", "input", "inputs") if k in payload), None)
        if key is None:
            raise ServeError(400, 'Send the input as a JSON list, or as {"data": [...]}.')
        payload = payload[key]
    if not isinstance(payload, (list, RawArray)):
        raise ServeError(400, f"The input must be a JSON list, received {type(payload).__name__}.")
    x = values_array(spec.name, spec.datatype, payload)
    if x.ndim == len(spec.shape) - 1:
        return x[None], True  # one instance: add the batch dimension
    return x, False


def _answers(mv: Any, outputs: dict[str, np.ndarray], single: bool) -> Response:
    values = next(iter(outputs.values()))
    values = values if values.ndim else values[None]
    if mv.task != "classification" and not mv.labels:
        return JSONResponse(values[0] if single else values)
    answers = [_answer(mv, row) for row in values]
    return JSONResponse(answers[0] if single else answers)


def _decode_named(payload: Any, specs: list) -> tuple[dict[str, np.ndarray], bool]:
    """A JSON object ``{input name: value}`` (one instance) or a list of them (a batch)."""
    names = [s.name for s in specs]
    if isinstance(payload, dict) and "data" in payload and not set(names) & set(payload):
        payload = payload["data"]
    rows = [payload] if isinstance(payload, dict) else payload
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ServeError(400, f"This model takes {len(names)} inputs ({', '.join(names)}): send "
                         'a JSON object {"' + names[0] + '": [...], ...} or a list of them.')  # fmt: skip
    missing = [n for n in names if any(n not in r for r in rows)]
    if missing:
        raise ServeError(400, f"Missing input(s) {missing}; the model takes {names}.")
    inputs = {s.name: values_array(s.name, s.datatype, [r[s.name] for r in rows]) for s in specs}
    return inputs, isinstance(payload, dict)


def _answer(mv: Any, row: np.ndarray) -> Any:
    if mv.task != "classification" and not mv.labels:
        return row
    scores = softmax_scores(row[None])[0]
    labels = mv.labels or [str(i) for i in range(scores.shape[0])]
    top = np.argsort(-scores)[:TOP_K]
    return {labels[i]: float(scores[i]) for i in top}
