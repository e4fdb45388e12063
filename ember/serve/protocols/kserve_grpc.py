"""KServe v2 / Open Inference Protocol over gRPC (``inference.GRPCInferenceService``).

The servicer maps the six v2 RPCs onto a :class:`~ember.serve.repository.ModelRepository`:
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer. Tensors arrive
either as typed ``contents`` or as ``raw_input_contents`` and always leave as
``raw_output_contents`` (what Triton's clients expect). Errors become gRPC status codes:
``ServeError`` 400 -> INVALID_ARGUMENT, 404 -> NOT_FOUND, 413 -> RESOURCE_EXHAUSTED,
503 -> UNAVAILABLE, anything unexpected -> INTERNAL.

``grpc`` and the generated protobuf modules are imported lazily, so ``import ember`` stays fast.
"""

from __future__ import annotations

import functools
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ember.serve.errors import ServeError, brief
from ember.serve.tensors import datatype_of, decode_binary, decode_tensor, numpy_dtype
from ember.serve.versions import parse_version

if TYPE_CHECKING:
    import grpc

    from ember.serve.repository import ModelRepository

__all__ = ["InferenceServicer", "add_inference_service", "start_grpc_server"]

logger = logging.getLogger(__name__)

_SERVICE = "inference.GRPCInferenceService"

# Typed InferTensorContents field of each datatype; FP16 has none (raw bytes only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


async def start_grpc_server(
    repository: ModelRepository,
    host: str = "0.0.0.0",
    port: int = 8081,
    *,
    server_name: str = "ember",
    max_message_bytes: int = 64 * 1024 * 1024,
    reuse_port: bool = False,
) -> grpc.aio.Server:
    """Start a KServe v2 gRPC server for ``repository`` on the running asyncio loop.

    Args:
        repository: The model repository to serve (already started or starting).
        host: Interface to listen on.
        port: TCP port to listen on (8081 is the KServe/Triton convention next to REST on 8080).
        server_name: Name reported by ServerMetadata.
        max_message_bytes: Largest request or response message accepted (gRPC's default is 4 MiB).
        reuse_port: share ``port`` with the other workers of a group (``SO_REUSEPORT``).

    Returns:
        The started ``grpc.aio.Server``; stop it with ``await server.stop(grace=5)``.

    Example:
        >>> server = await start_grpc_server(repository, "0.0.0.0", 8081)  # doctest: +SKIP
        >>> await server.stop(grace=5)  # doctest: +SKIP
    """
    import grpc

    if not 0 <= port <= 65535:
        raise ValueError(f"Received an invalid `port`, expected 0..65535. Received: port={port}")
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Without this a second server on a busy port starts fine and silently shares the traffic.
        ("grpc.so_reuseport", int(reuse_port)),
    ]
    server = grpc.aio.server(options=options)
    add_inference_service(server, repository, server_name=server_name)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"Could not bind the gRPC server to {address}: {exc}") from exc
    if bound == 0:  # older grpcio reports a failed bind this way
        raise OSError(f"Could not bind the gRPC server to {address}; is the port already in use?")
    await server.start()
    logger.info("KServe v2 gRPC server listening on %s:%d", host, bound)
    return server


def add_inference_service(
    server: grpc.aio.Server, repository: ModelRepository, *, server_name: str = "ember"
) -> None:
    """Register ``inference.GRPCInferenceService`` for ``repository`` on an existing aio server.

    Use it to share one server with other services, or to add TLS ports and interceptors yourself.

    Args:
        server: A ``grpc.aio.Server`` that has not been started yet.
        repository: The model repository to serve.
        server_name: Name reported by ServerMetadata.

    Returns:
        None.

    Example:
        >>> server = grpc.aio.server()  # doctest: +SKIP
        >>> add_inference_service(server, repository)  # doctest: +SKIP
        >>> server.add_secure_port("0.0.0.0:8081", credentials)  # doctest: +SKIP
    """
    from ember.serve.protocols._grpc import grpc_predict_v2_pb2_grpc as pb_grpc

    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(repository, server_name), server
    )


def _grpc_errors(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turn ServeError / bad input into a gRPC status instead of a generic UNKNOWN."""

    @functools.wraps(method)
    async def wrapper(self: InferenceServicer, request: Any, context: Any) -> Any:
        import grpc

        try:
            return await method(self, request, context)
        except ServeError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.grpc_code), exc.message)
        except Exception as exc:
            logger.exception("%s/%s failed", _SERVICE, method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    return wrapper


class InferenceServicer:
    """The six v2 RPCs over a model repository (method names are fixed by the proto).

    ``add_inference_service`` registers one on a ``grpc.aio`` server; a host that routes gRPC
    calls itself (Ray Serve's proxy) calls its methods directly.

    Args:
        repository: the models to serve.
        server_name: the name ``ServerMetadata`` answers.

    Example:
        >>> servicer = InferenceServicer(repository, "ember")  # doctest: +SKIP
        >>> await servicer.ModelInfer(request, context)  # doctest: +SKIP
    """

    def __init__(self, repository: ModelRepository, server_name: str) -> None:
        from ember.serve.protocols._grpc import grpc_predict_v2_pb2

        self._repo = repository
        self._name = server_name
        self._pb = grpc_predict_v2_pb2

    @_grpc_errors
    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._pb.ServerLiveResponse(live=True)

    @_grpc_errors
    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._pb.ServerReadyResponse(ready=bool(self._repo.ready))

    @_grpc_errors
    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self._get(request.name, request.version)
        except ServeError as exc:
            if exc.status not in (404, 503):
                raise
            return self._pb.ModelReadyResponse(ready=False)
        return self._pb.ModelReadyResponse(ready=True)

    @_grpc_errors
    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._pb.ServerMetadataResponse(
            name=self._name, version=_ember_version(), extensions=[]
        )

    @_grpc_errors
    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = self._get(request.name, request.version)
        tensor = self._pb.ModelMetadataResponse.TensorMetadata
        return self._pb.ModelMetadataResponse(
            name=model.name,
            versions=self._versions(model),
            platform=model.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.inputs],
            outputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in model.outputs
            ],
        )

    @_grpc_errors
    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        model = self._get(request.model_name, request.model_version)
        inputs = _decode_inputs(request)
        names = _requested_outputs(request, model)
        results = await model.infer(inputs, names)
        response = self._pb.ModelInferResponse(
            model_name=model.name, model_version=str(model.version), id=request.id
        )
        for name in names or list(results):
            if name not in results:
                raise RuntimeError(f"Model '{model.name}' returned no output '{name}'.")
            _encode_output(response, name, np.asarray(results[name]))
        return response

    def _get(self, name: str, version: str) -> Any:
        """v2 version string: "" -> policy default, "3" -> version 3, "stable" -> label."""
        if not name:
            raise ServeError(400, "Received an empty model name; name the model to use.")
        if not version:
            return self._repo.get(name)
        if version.isdigit():  # any Unicode digit: parse_version refuses all but ASCII ones
            return self._repo.get(name, parse_version(version))
        return self._repo.get(name, label=version)

    def _versions(self, model: Any) -> list[str]:
        """Every AVAILABLE version of ``model`` that the repository reports, newest last."""
        found = {
            int(entry["version"])
            for entry in self._repo.status()
            if entry.get("name") == model.name and entry.get("state") == "AVAILABLE"
        }
        return [str(v) for v in sorted(found or {model.version})]


def _ember_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ember")
    except PackageNotFoundError:
        return "0+unknown"


def _decode_inputs(request: Any) -> dict[str, np.ndarray]:
    """ModelInferRequest inputs (typed contents or raw bytes) -> numpy arrays, by name."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ServeError(
            400,
            f"raw_input_contents must hold one entry per input: received {len(raw)} entries "
            f"for {len(request.inputs)} inputs.",
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in arrays:
            raise ServeError(400, f"Input {brief(tensor.name)} was given more than once.")
        if raw and tensor.HasField("contents"):
            raise ServeError(
                400,
                f"Input {brief(tensor.name)} has both `contents` and raw_input_contents; use one.",
            )
        arrays[tensor.name] = _decode_tensor(tensor, raw[index] if raw else None)
    return arrays


def _decode_tensor(tensor: Any, raw: bytes | None) -> np.ndarray:
    """One InferInputTensor -> array, through the same checks as the REST protocol."""
    name, datatype = tensor.name, tensor.datatype
    shape = [int(d) for d in tensor.shape]
    numpy_dtype(datatype)  # ServeError(400) listing the datatypes for an unknown one
    if raw is not None and datatype != "BYTES":
        return decode_binary(name, datatype, shape, raw)
    if raw is not None:
        values = list(_unpack_bytes(name, raw))
    elif datatype not in _CONTENTS_FIELD:
        raise ServeError(
            400,
            f"Input {brief(name)} is {brief(datatype)}, which has no typed `contents` field; "
            "send it in raw_input_contents.",
        )
    else:
        values = list(getattr(tensor.contents, _CONTENTS_FIELD[datatype]))
    return decode_tensor(name, datatype, shape, values)


def _unpack_bytes(name: str, raw: bytes) -> list[bytes]:
    """Triton's raw BYTES layout: each element is a 4-byte little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ServeError(400, f"Input {brief(name)} (BYTES) has a truncated length prefix.")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ServeError(
                400, f"Input {brief(name)} (BYTES) has an element longer than its data."
            )
        items.append(raw[offset : offset + length])
        offset += length
    return items


def _requested_outputs(request: Any, model: Any) -> list[str] | None:
    """Requested output names (None: all), checked against the model's signature."""
    if not request.outputs:
        return None
    known = [spec.name for spec in model.outputs]
    names = []
    for output in request.outputs:
        if output.name not in known:
            raise ServeError(
                400,
                f"Unknown output {brief(output.name)} requested from model {model.name!r}. "
                f"Choose from: {', '.join(known)}.",
            )
        if "classification" in output.parameters:
            raise ServeError(
                400, "The classification extension is not supported; omit class_count."
            )
        names.append(output.name)
    return names


def _encode_output(response: Any, name: str, array: np.ndarray) -> None:
    """Append one output to ``response`` as metadata plus raw little-endian bytes."""
    datatype = datatype_of(array.dtype)
    if datatype == "BYTES":
        data = _pack_bytes(array)
    else:
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    response.raw_output_contents.append(data)


def _pack_bytes(array: np.ndarray) -> bytes:
    chunks = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        chunks.append(struct.pack("<I", len(data)) + data)
    return b"".join(chunks)
