"""The package's signature: named inputs and outputs of any dtype, and their dynamic axes.

A model may take one tensor, a tuple of tensors (passed positionally) or a dict of named tensors
(passed as keywords), and return a tensor, a tuple, a dict or a Hugging Face ``ModelOutput``.
:class:`FlatModule` turns any of these into ``forward(*tensors) -> tuple[tensor, ...]`` in the
signature's order, which is what ``torch.export`` and every export target need.

Axis 0 is always the dynamic batch. Other axes are dynamic when asked for in ``torch.export``'s
terms (``{"input_ids": {1: "sequence"}}``) or inferred (``dynamic_shapes="auto"``); the manifest
records them as ``signature.dynamic_axes`` (``{"input_ids": {"1": "sequence"}}``) and their
ranges as ``signature.dims`` (``{"sequence": {"min": 1, "max": 64}}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ember.package.manifest import PackageError

__all__ = [
    "FlatModule",
    "dims_for_export",
    "input_names",
    "named_example",
    "output_names",
    "parse_dynamic_shapes",
    "tensor_spec",
]

BATCH = "batch"


def named_example(model: torch.nn.Module, example: Any, arg: str) -> tuple[dict, bool]:
    """Name the tensors of an example input; returns ``({name: tensor}, keyword)``.

    A tensor is named ``input``; a tuple takes the names of ``model.forward``'s parameters
    (``input_0, input_1, ...`` when they are not plain names); a dict keeps its keys and is
    passed as keywords. Numpy arrays become tensors; every dtype is kept.
    """
    if isinstance(example, Mapping):
        if not example:
            raise ValueError(f"`{arg}` is an empty dict; give at least one named tensor")
        return {str(k): _tensor(f"{arg}[{k!r}]", v) for k, v in example.items()}, True
    if isinstance(example, (tuple, list)):
        if not example or not all(isinstance(v, (torch.Tensor, np.ndarray)) for v in example):
            raise ValueError(
                f"`{arg}` must be a tensor, a tuple of tensors or a dict of named tensors "
                f"(numpy arrays allowed). Received: {type(example).__name__} {_short(example)}"
            )
        names = _parameter_names(model, len(example))
        return {n: _tensor(f"{arg}[{i}]", v) for i, (n, v) in enumerate(zip(names, example))}, False
    return {"input": _tensor(arg, example)}, False


def same_names(names: list[str], example: Any, arg: str, model: torch.nn.Module) -> dict:
    """Name ``example`` (e.g. ``sample_inputs``) like the example input and check it matches."""
    named, _ = named_example(model, example, arg)
    if list(named) != names:
        raise ValueError(f"`{arg}` must have the inputs {names}. Received: {list(named)}")
    return named


def output_names(outputs: Any) -> tuple[list[str], list]:
    """Names of a model's tensor outputs and the keys that pick them out of the result.

    A tensor is ``output``; a tuple gives ``output_0, output_1, ...``; a dict or ``ModelOutput``
    keeps the keys whose values are tensors (others, e.g. a cache object, are left out).
    """
    if isinstance(outputs, torch.Tensor):
        return ["output"], [None]
    if isinstance(outputs, Mapping):
        keys = [k for k, v in outputs.items() if isinstance(v, torch.Tensor)]
        if keys:
            return [str(k) for k in keys], keys
    elif isinstance(outputs, (tuple, list)):
        index = [i for i, v in enumerate(outputs) if isinstance(v, torch.Tensor)]
        if index:
            return [f"output_{i}" for i in index], index
    raise PackageError(
        "save needs a model whose output is a tensor, a tuple of tensors, a dict of tensors "
        f"or a transformers ModelOutput. Received an output of type {type(outputs).__name__}"
    )


class FlatModule(torch.nn.Module):
    """``forward(*tensors) -> tuple`` over a model with named, keyword or structured in/outputs.

    Args:
        model: the user's module.
        names: input names in signature order.
        keyword: call ``model(**{name: tensor})`` instead of ``model(*tensors)``.
        keys: what picks each output out of the model's result (None: the result itself).
    """

    def __init__(self, model: torch.nn.Module, names: list[str], keyword: bool, keys: list):
        super().__init__()
        self.model = model
        self.names = list(names)
        self.keyword = keyword
        self.keys = list(keys)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.keyword:
            result = self.model(**dict(zip(self.names, args)))
        else:
            result = self.model(*args)
        return tuple(result if key is None else result[key] for key in self.keys)


def input_names(signature: dict) -> list[str]:
    """The signature's input names, in the order the exported program takes them."""
    return [spec["name"] for spec in signature["inputs"]]


def tensor_spec(name: str, t: torch.Tensor, dynamic: dict[int, str] | None = None) -> dict:
    """``{"name", "dtype", "shape"}`` with -1 for the batch and every other dynamic axis."""
    shape = [-1 if axis == 0 or axis in (dynamic or {}) else n for axis, n in enumerate(t.shape)]
    return {"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": shape}


def parse_dynamic_shapes(value: Any, names: list[str]) -> dict[str, dict[int, str]] | str:
    """Check ``dynamic_shapes=`` and return ``{input: {axis: dim name}}`` (axis 0 excluded).

    Accepts ``None``, ``"auto"``, a dict ``{input: {axis: name}}``, for a single input its
    ``{axis: name}``, or a tuple/list of those in input order. Names may also be
    ``torch.export.Dim`` objects (their ``__name__`` is used).
    """
    if value is None or value == "auto":
        return {} if value is None else "auto"
    if isinstance(value, Mapping) and len(names) == 1 and all(isinstance(k, int) for k in value):
        value = {names[0]: value}
    elif isinstance(value, (tuple, list)):
        if len(value) != len(names):
            raise ValueError(
                f"`dynamic_shapes` has {len(value)} entries but the model has {len(names)} inputs "
                f"({', '.join(names)})"
            )
        value = dict(zip(names, value))
    if not isinstance(value, Mapping):
        raise ValueError(
            "`dynamic_shapes` must be None, 'auto' or {input: {axis: name}}, e.g. "
            f"{{'{names[0]}': {{1: 'sequence'}}}}. Received: {value!r}"
        )
    unknown = [k for k in value if k not in names]
    if unknown:
        raise ValueError(f"`dynamic_shapes` names unknown input(s) {unknown}. Inputs: {names}")
    parsed: dict[str, dict[int, str]] = {}
    for name, axes in value.items():
        if axes is None:
            continue
        if not isinstance(axes, Mapping):
            raise ValueError(
                f"`dynamic_shapes[{name!r}]` must be {{axis: name}}. Received: {axes!r}"
            )
        for axis, dim in axes.items():
            label = getattr(dim, "__name__", dim)
            if not isinstance(axis, int) or axis < 0 or not isinstance(label, str) or not label:
                raise ValueError(
                    f"`dynamic_shapes[{name!r}]` must map axis numbers to names, e.g. "
                    f"{{1: 'sequence'}}. Received: {axes!r}"
                )
            if axis > 0:
                parsed.setdefault(name, {})[axis] = label
    return parsed


def dims_for_export(
    signature: dict,
    *,
    max_batch: int | None = None,
    max_sizes: dict[str, int] | None = None,
    static: bool = False,
) -> tuple | None:
    """``dynamic_shapes`` for ``torch.export`` of a :class:`FlatModule`-like program.

    Args:
        signature: the manifest's signature.
        max_batch: an upper bound for the batch (ExecuTorch plans memory ahead of time).
        max_sizes: upper bounds for other named dims, overriding the recorded ones.
        static: no dynamic axes at all (returns None).

    Example:
        >>> torch.export.export(model, tuple(args), dynamic_shapes=dims_for_export(signature))
    """
    if static:
        return None
    ranges = signature.get("dims") or {}
    dims: dict[str, Any] = {}

    def dim(name: str) -> Any:
        if name not in dims:
            info = ranges.get(name) or {}
            upper = (max_sizes or {}).get(name) or info.get("max")
            if name == BATCH:
                upper = max_batch
            kwargs = {"min": int(info.get("min") or 1)}
            if upper is not None:
                kwargs["max"] = int(upper)
            dims[name] = torch.export.Dim(name, **kwargs)
        return dims[name]

    axes = signature.get("dynamic_axes") or {}
    per_input = []
    for spec in signature["inputs"]:
        chosen = {0: dim(BATCH)}
        for axis, name in (axes.get(spec["name"]) or {}).items():
            chosen[int(axis)] = dim(name)
        per_input.append(chosen)
    return (tuple(per_input),)


def _parameter_names(model: torch.nn.Module, count: int) -> list[str]:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        params = []
    plain = [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name.isidentifier()
    ]
    if len(plain) >= count and len(set(plain[:count])) == count:
        return plain[:count]
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tensor(arg: str, value: Any) -> torch.Tensor:
    if isinstance(value, np.ndarray):  # Keras users hold numpy arrays: float64 -> float32
        array = value.astype(np.float32) if value.dtype == np.float64 else value
        value = torch.from_numpy(np.ascontiguousarray(array))
    if not isinstance(value, torch.Tensor) or value.dim() < 1 or value.shape[0] < 1:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"`{arg}` must be a tensor with a batch dimension (N, ...). Received: {got}"
        )
    return value
