"""TF Serving REST API: model status, metadata, ``:predict`` (row and columnar), ``:classify``,
``:regress``, with ``/versions/{v}`` or ``/labels/{label}`` to pick the version.

Bodies follow https://www.tensorflow.org/tfx/serving/api_rest; errors are ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ember.serve.bigjson import RawArray
from ember.serve.errors import ServeError, brief
from ember.serve.protocols import (
    Context,
    JSONResponse,
    endpoint,
    read_json,
    request_body,
    respond,
)
from ember.serve.tensors import TensorSpec, values_array
from ember.serve.versions import parse_version

__all__ = ["routes", "decode_predict", "softmax_scores"]

_DT = {
    "FP32": "DT_FLOAT", "FP64": "DT_DOUBLE", "FP16": "DT_HALF", "INT8": "DT_INT8",
    "INT16": "DT_INT16", "INT32": "DT_INT32", "INT64": "DT_INT64", "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16", "UINT32": "DT_UINT32", "UINT64": "DT_UINT64", "BOOL": "DT_BOOL",
    "BYTES": "DT_STRING",
}  # fmt: skip
_TF_STATE = {"FAILED": "END", "UNLOADED": "END", "PENDING": "START"}  # TF Serving's states
_VERBS = ("predict", "classify", "regress")


def routes(ctx: Context) -> list[Route]:
    """Returns the TF Serving REST routes."""
    repo = ctx.repository

    async def run(request: Request, verb: str) -> Response:
        p = request.path_params
        async with request_body(request, ctx) as body:
            payload = await body.decode(read_json, body.data)
            mv = repo.get(p["name"], p.get("version"), p.get("label"))
            request.state.version = mv.version
            if verb == "predict":
                inputs, columnar = await body.decode(decode_predict, payload, mv.inputs)
            else:
                inputs = await body.decode(_decode_examples, payload, mv.inputs)
            del payload  # what is left of the body text goes now, before inference
        if verb == "predict":
            outputs = await mv.infer(inputs)
            return await respond(outputs, lambda: JSONResponse(_predict_answer(outputs, columnar)))
        if verb == "classify":
            if mv.task != "classification" and not mv.labels:
                raise ServeError(
                    400, f"Model {mv.name!r} is not a classifier (task={mv.task!r}); use :predict."
                )
            outputs = await mv.infer(inputs)
            return await respond(outputs, lambda: _classify_answer(mv, outputs))
        outputs = await mv.infer(inputs)
        values = next(iter(outputs.values()))
        if values.size != values.shape[0]:
            raise ServeError(400, f"Model {mv.name!r} gives {values.shape[1:]} values per example; "
                             ":regress needs one. Use :predict.")  # fmt: skip
        return await respond(outputs, lambda: JSONResponse({"results": values.reshape(-1)}))

    @endpoint(ctx, "tfserving")
    async def status(request: Request) -> Response:
        p = request.path_params
        rows = repo.status(p["name"])
        wanted = _pick_version(repo, p)
        rows = [r for r in rows if wanted is None or r["version"] == wanted]
        if wanted is not None and not rows:
            raise ServeError(404, f"Version {wanted} of model {p['name']!r} not found.")
        return JSONResponse({"model_version_status": [_status(r) for r in rows]})

    @endpoint(ctx, "tfserving")
    async def metadata(request: Request) -> Response:
        p = request.path_params
        mv = repo.get(p["name"], p.get("version"), p.get("label"))
        signature = {
            "inputs": {s.name: _tensor_info(s) for s in mv.inputs},
            "outputs": {s.name: _tensor_info(s) for s in mv.outputs},
            "method_name": "tensorflow/serving/predict",
        }
        return JSONResponse({
            "model_spec": {"name": mv.name, "signature_name": "", "version": str(mv.version)},
            "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}},
        })  # fmt: skip

    def _bind(handler: Any, verb: str) -> Any:
        @endpoint(ctx, "tfserving", infer=True)
        async def route(request: Request) -> Response:
            return await handler(request, verb)

        return route

    base = "/v1/models/{name}"
    routes_ = []
    for suffix in ("", "/versions/{version}", "/labels/{label}"):
        routes_ += [
            Route(base + suffix + ":" + verb, _bind(run, verb), methods=["POST"]) for verb in _VERBS
        ]
        routes_ += [
            Route(base + suffix, status, methods=["GET"]),
            Route(base + suffix + "/metadata", metadata, methods=["GET"]),
        ]
    return routes_


def decode_predict(payload: dict, specs: list[TensorSpec]) -> tuple[dict[str, np.ndarray], bool]:
    """Decodes a ``:predict`` body; returns (inputs, whether it was columnar).

    Row form: ``{"instances": [...]}`` (a list of values for one input, a list of objects for
    several). Columnar form: ``{"inputs": value}`` or ``{"inputs": {name: value}}``.

    Example:
        >>> decode_predict({"instances": [1.0, 2.0]}, [TensorSpec("x", "FP32", [-1])])[0]["x"]
        array([1., 2.], dtype=float32)
    """
    if ("instances" in payload) == ("inputs" in payload):
        raise ServeError(400, "The body needs exactly one of 'instances' (row format) or "
                         "'inputs' (columnar format).")  # fmt: skip
    if "inputs" in payload:
        data = payload["inputs"]
        if isinstance(data, dict) and not (len(specs) == 1 and specs[0].name not in data):
            return {k: _array(k, v, specs) for k, v in data.items()}, True
        return {_only(specs): _array(_only(specs), data, specs)}, True
    rows = payload["instances"]
    if isinstance(rows, RawArray):  # a big array of numbers: one input's rows
        return {_only(specs): _array(_only(specs), rows, specs)}, False
    if not isinstance(rows, list) or not rows:
        raise ServeError(400, "'instances' must be a non-empty list.")
    if all(isinstance(r, dict) for r in rows):
        names = {s.name for s in specs}
        if len(specs) > 1 or all(set(r) <= names for r in rows):
            return {
                s.name: _array(s.name, [_field(r, s.name) for r in rows], specs) for s in specs
            }, False
    return {_only(specs): _array(_only(specs), rows, specs)}, False


def softmax_scores(values: np.ndarray) -> np.ndarray:
    """Returns class probabilities: ``values`` when its rows already are, else their softmax."""
    values = values.reshape(values.shape[0], -1).astype(np.float64)
    if values.size and values.min() >= 0 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return values
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _decode_examples(payload: dict, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    examples, context = payload.get("examples"), payload.get("context") or {}
    if (
        not isinstance(examples, list)
        or not examples
        or not all(isinstance(e, dict) for e in examples)
    ):
        raise ServeError(400, "The body needs 'examples': a non-empty list of objects.")
    if not isinstance(context, dict):
        raise ServeError(400, "'context' must be an object of features.")
    merged = [{**context, **e} for e in examples]
    if len(specs) == 1 and all(len(e) == 1 for e in merged):
        rows = [next(iter(e.values())) for e in merged]
        return {specs[0].name: _array(specs[0].name, rows, specs)}
    return {s.name: _array(s.name, [_field(e, s.name) for e in merged], specs) for s in specs}


def _classify_answer(mv: Any, outputs: dict[str, np.ndarray]) -> Response:
    scores = softmax_scores(next(iter(outputs.values())))
    labels = mv.labels or [str(i) for i in range(scores.shape[-1])]
    return JSONResponse({"results": [list(zip(labels, row.tolist())) for row in scores]})


def _predict_answer(outputs: dict[str, np.ndarray], columnar: bool) -> dict[str, Any]:
    if columnar:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    n = next(iter(outputs.values())).shape[0]
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(n)]}


def _array(name: str, value: Any, specs: list[TensorSpec]) -> np.ndarray:
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        raise ServeError(
            400,
            f"Unknown input {brief(name)}. The model takes: {', '.join(s.name for s in specs)}.",
        )
    array = values_array(name, spec.datatype, value)
    if array.ndim == 0:
        raise ServeError(400, f"Input {brief(name)}: expected a list of values, received a scalar.")
    return array


def _only(specs: list[TensorSpec]) -> str:
    if len(specs) != 1:
        raise ServeError(400, f"The model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}): "
                         "name each one.")  # fmt: skip
    return specs[0].name


def _field(row: dict, name: str) -> Any:
    if not isinstance(row, dict) or name not in row:
        raise ServeError(400, f"Every instance/example needs the input {brief(name)}.")
    return row[name]


def _pick_version(repo: Any, p: dict) -> int | None:
    if p.get("label") is not None:
        return repo.get(p["name"], label=p["label"]).version
    if p.get("version") is not None:
        return parse_version(p["version"])
    return None


def _status(row: dict) -> dict[str, Any]:
    error = row.get("error")
    return {
        "version": str(row["version"]),
        "state": _TF_STATE.get(row["state"], row["state"]),
        "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error or ""},
    }


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": _DT.get(spec.datatype, "DT_INVALID"),
        "tensor_shape": {
            "dim": [{"size": str(d), "name": ""} for d in spec.shape],
            "unknown_rank": False,
        },
        "name": spec.name,
    }
