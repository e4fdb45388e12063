"""Tensors on the wire: KServe v2 datatypes, JSON decoding and signature checks.

Every protocol turns its request into ``dict[str, np.ndarray]`` with these helpers, so a bad
datatype, shape or element count is answered the same way (``ServeError(400)``) everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ember.serve.bigjson import RawArray, first_fraction
from ember.serve.errors import ServeError, brief

__all__ = [
    "TensorSpec",
    "datatype_of",
    "numpy_dtype",
    "decode_tensor",
    "values_array",
    "decode_binary",
    "check_inputs",
]

_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_FROM_NUMPY: dict[np.dtype, str] = {v: k for k, v in _TO_NUMPY.items()}
# Names used in ember.json ("float32") and ONNX Runtime ("tensor(float)") for the same types.
_ALIASES: dict[str, str] = {
    **{str(v): k for k, v in _TO_NUMPY.items() if k != "BYTES"},
    "float": "FP32",
    "double": "FP64",
    "float16": "FP16",
    "bool": "BOOL",
    "string": "BYTES",
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model signature.

    Args:
        name: tensor name.
        datatype: KServe v2 datatype (``"FP32"``, ``"INT64"``, ...).
        shape: dimensions, ``-1`` where dynamic (the batch dimension usually is).

    Example:
        >>> TensorSpec("input", "FP32", [-1, 4]).to_dict()
        {'name': 'input', 'datatype': 'FP32', 'shape': [-1, 4]}
    """

    name: str
    datatype: str
    shape: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Returns the KServe v2 metadata form ``{"name", "datatype", "shape"}``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def parse(cls, name: str, dtype: str, shape: list[Any]) -> TensorSpec:
        """Builds a spec from any dtype spelling (``float32``, ``tensor(float)``, ``FP32``).

        Non-integer dimensions (symbolic ONNX names, ``None``) become ``-1``.
        """
        text = str(dtype)
        if text.startswith("tensor(") and text.endswith(")"):
            text = text[7:-1]
        datatype = text.upper() if text.upper() in _TO_NUMPY else _ALIASES.get(text)
        if datatype is None:
            raise ServeError(400, f"Unsupported dtype {brief(dtype)} for tensor {brief(name)}.")
        dims = [d if isinstance(d, int) and d >= 0 else -1 for d in shape]
        return cls(name, datatype, dims)


def numpy_dtype(datatype: str) -> np.dtype:
    """Returns the numpy dtype of a KServe v2 datatype.

    Args:
        datatype: ``"FP32"``, ``"INT64"``, ``"BOOL"``, ``"BYTES"``, ...

    Returns:
        The numpy dtype (``object`` for ``BYTES``).

    Example:
        >>> numpy_dtype("FP32")
        dtype('float32')
    """
    try:
        return _TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise ServeError(
            400, f"Unknown datatype {brief(datatype)}. Choose one of: {', '.join(_TO_NUMPY)}"
        ) from None


def datatype_of(np_dtype: Any) -> str:
    """Returns the KServe v2 datatype of a numpy dtype.

    Example:
        >>> datatype_of(np.float32)
        'FP32'
    """
    dtype = np.dtype(np_dtype)
    if dtype.kind in "SUO":
        return "BYTES"
    try:
        return _FROM_NUMPY[dtype]
    except KeyError:
        raise ServeError(400, f"Unsupported numpy dtype {dtype}.") from None


def decode_tensor(name: str, datatype: str, shape: Any, data: Any) -> np.ndarray:
    """Decodes one KServe v2 JSON tensor (flat or nested ``data``) into an array of ``shape``.

    Args:
        name: the tensor name (used in error messages).
        datatype: KServe v2 datatype of ``data``.
        shape: list of non-negative ints.
        data: flat or nested list of numbers (or strings for ``BYTES``).

    Returns:
        A C-contiguous array with that dtype and shape.

    Raises:
        ServeError: 400 naming the tensor when the datatype, shape or element count is wrong.

    Example:
        >>> decode_tensor("x", "FP32", [2, 2], [1, 2, 3, 4]).shape
        (2, 2)
    """
    dtype = numpy_dtype(datatype)
    dims = _check_shape(name, shape)
    if not isinstance(data, (list, tuple, RawArray)):
        raise ServeError(
            400, f"Input {brief(name)}: 'data' must be a list, received {type(data).__name__}."
        )
    array = _to_array(name, datatype, dtype, data, "data does not fit datatype")
    expected = math.prod(dims)
    if array.size != expected:
        raise ServeError(
            400,
            f"Input {brief(name)}: shape {dims} needs {expected} elements, received {array.size}.",
        )
    return array.reshape(dims)


def values_array(name: str, datatype: str, values: Any) -> np.ndarray:
    """A JSON list of values (TF Serving rows, TorchServe data) as an array of ``datatype``.

    Raises:
        ServeError: 400 naming the input when the values do not convert (ragged rows, text).

    Example:
        >>> values_array("x", "FP32", [[1, 2], [3, 4]]).dtype
        dtype('float32')
    """
    return _to_array(name, datatype, numpy_dtype(datatype), values, "values do not fit")


def decode_binary(name: str, datatype: str, shape: Any, raw: bytes) -> np.ndarray:
    """Decodes one tensor sent with the binary tensor data extension (raw little-endian bytes).

    Example:
        >>> decode_binary("x", "INT32", [2], b"\\x01\\x00\\x00\\x00\\x02\\x00\\x00\\x00").tolist()
        [1, 2]
    """
    dtype = numpy_dtype(datatype)
    if datatype == "BYTES":
        raise ServeError(400, f"Input {brief(name)}: binary BYTES tensors are not supported.")
    dims = _check_shape(name, shape)
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        raise ServeError(
            400,
            f"Input {brief(name)}: shape {dims} of {datatype} needs {expected} bytes, "
            f"received {len(raw)}.",
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(dims)


def check_inputs(specs: list[TensorSpec], inputs: dict[str, np.ndarray]) -> None:
    """Checks inputs against a signature: every input present, datatype and shape matching.

    Raises:
        ServeError: 400 naming the input, what was expected and what was received.

    Example:
        >>> check_inputs([TensorSpec("x", "FP32", [-1, 2])], {"x": np.zeros((3, 2), np.float32)})
    """
    for spec in specs:
        array = inputs.get(spec.name)
        if array is None:
            names = ", ".join(s.name for s in specs)
            raise ServeError(
                400,
                f"Missing input {spec.name!r}. The model takes: {names}; "
                f"received: {', '.join(inputs) or 'none'}.",
            )
        received = _FROM_NUMPY.get(array.dtype) or str(array.dtype)
        if received != spec.datatype:
            raise ServeError(
                400,
                f"Input {spec.name!r}: expected datatype {spec.datatype}, received {received}.",
            )
        if len(array.shape) != len(spec.shape) or any(
            want not in (-1, got) for want, got in zip(spec.shape, array.shape)
        ):
            raise ServeError(
                400,
                f"Input {spec.name!r}: expected shape {spec.shape} (-1 = any), "
                f"received {list(array.shape)}.",
            )
    if len(inputs) > len(specs):
        known = {s.name for s in specs}
        extra = [n for n in inputs if n not in known]
        raise ServeError(
            400, f"Unknown input(s) {extra}. The model takes: {', '.join(sorted(known))}."
        )


def _to_array(name: str, datatype: str, dtype: np.dtype, data: Any, misfit: str) -> np.ndarray:
    """JSON values (lists, or a ``RawArray`` left unparsed) as an array of ``dtype``."""
    if isinstance(data, RawArray) or (
        isinstance(data, list) and any(isinstance(v, RawArray) for v in data)
    ):
        data = _materialize(data, dtype)
    elif dtype.kind in "fiu" and not isinstance(data, np.ndarray):
        _check_numbers(name, datatype, data)
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ServeError(
            400,
            f"Input {brief(name)}: {misfit} {datatype} ({str(exc)[:200]}).",
        ) from None
    if dtype.kind in "fiub" and array.dtype == object:
        raise ServeError(400, f"Input {brief(name)}: data is not a regular list of numbers.")
    return array


def _materialize(data: Any, dtype: np.dtype) -> Any:
    """Parses the ``RawArray``s in ``data`` (text straight into ``dtype``, chunk by chunk)."""
    if isinstance(data, RawArray):
        return data.to_numpy(dtype)
    return [v.to_numpy(dtype) if isinstance(v, RawArray) else v for v in data]


_NUMBERS = frozenset((int, float))
_FLOATS = frozenset((int, float, type(None)))  # null is NaN, as NaN outputs are written


def _check_numbers(name: str, datatype: str, data: Any, depth: int = 0) -> None:
    """Refuses JSON strings and booleans where numbers are due (numpy would take "1.5" and true
    as 1.5 and 1.0), and nulls but in float data (NaN). ``map(type)`` keeps it at C speed."""
    if depth > MAX_DIMS:
        raise ServeError(400, f"Input {brief(name)}: data is nested deeper than {MAX_DIMS} lists.")
    if not isinstance(data, (list, tuple)):
        data = [data]
    allowed = _FLOATS if datatype.startswith("FP") else _NUMBERS
    types = set(map(type, data))
    if float in types and datatype.startswith(("INT", "UINT")):
        _check_whole(name, datatype, data)  # numpy would cut 9.5 to 9 silently
    if types <= allowed:
        return
    for kind in (list, tuple):
        if kind in types:
            for item in data:
                if isinstance(item, (list, tuple)):
                    _check_numbers(name, datatype, item, depth + 1)
            types.discard(kind)
    bad = next((t for t in types if t not in allowed), None)
    if bad is not None:
        example = next(v for v in data if type(v) is bad)
        what = {bool: "a boolean", str: "a string", type(None): "null"}.get(bad, bad.__name__)
        raise ServeError(
            400,
            f"Input {brief(name)}: {datatype} data must be JSON numbers, received {what} "
            f"({brief(example)}).",
        )


def _check_whole(name: str, datatype: str, data: Any) -> None:
    bad = first_fraction(data)
    if bad is not None:
        raise ServeError(
            400, f"Input {brief(name)}: {datatype} data must be whole numbers, received {bad!r}."
        )


# numpy refuses arrays whose dimensions (0 counted as 1) multiply past its index range.
MAX_ELEMENTS = 2**40
MAX_DIMS = 32


def _check_shape(name: str, shape: Any) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ServeError(
            400,
            f"Input {brief(name)}: 'shape' must be a list of non-negative integers, "
            f"received {brief(shape)}.",
        )
    if len(shape) > MAX_DIMS or math.prod(d or 1 for d in shape) > MAX_ELEMENTS:
        raise ServeError(
            400,
            f"Input {brief(name)}: shape {brief(shape)} is too large: at most {MAX_DIMS} dimensions "
            f"whose sizes (0 counted as 1) multiply to at most {MAX_ELEMENTS}.",
        )
    return list(shape)
