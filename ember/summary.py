"""`summary()`: a Keras-style plain-text table of layers, output shapes and parameter counts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from ember.layers.base import Layer, format_shape, materialize
from ember.layers.core import Input

__all__ = ["LayerSummary", "count_params", "describe_layers", "summary"]

logger = logging.getLogger(__name__)

_HEADERS = ("Layer (type)", "Output Shape", "Param #")


@dataclass(frozen=True)
class LayerSummary:
    """One row of `summary()`.

    Args:
        name: the module's path in the model (`"features.0"`); `""` for the root module.
        type: the module's class name.
        output_shape: e.g. `"(None, 16, 6, 6)"` with the batch dim as `None`, nested `[...]` for
            tuple outputs, `"?"` when unknown (no input given, or the module was never called).
        params: number of parameters of this row.
        trainable_params: how many of them require grad.
    """

    name: str
    type: str
    output_shape: str
    params: int
    trainable_params: int


def summary(
    module: nn.Module,
    example_input: Any = None,
    input_shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
) -> str:
    """A Keras-style plain-text summary: one row per leaf layer, then parameter totals.

    Leaf layers are modules without children, and ember layers (shown as one row even though they
    wrap torch modules). Output shapes come from forward hooks on two tiny forward passes (batch 1
    and batch 2, eval mode, no grad); a dim that follows the batch size is shown as `None`.
    Buffers (e.g. BatchNorm running stats) are not parameters; frozen parameters are non-trainable.
    Running the passes materialises any lazy parameters, as calling the model would.

    Args:
        module: any `nn.Module`.
        example_input: a batch (tensor or tuple of tensors); only its first sample is used.
        input_shape: the shape of one sample without the batch dim, e.g. `(1, 28, 28)`.
            If neither is given, the shape of an `ember.layers.Input` in the model is used.
        dtype: dtype of the zeros built from `input_shape` (default: the Input's dtype or float32;
            pass `torch.long` for models that start with an Embedding).

    Returns:
        The table as a string (log it or print it).

    Raises:
        ValueError: if the model still has lazy parameters and no input is available, or if the
            forward pass fails.

    Example:
        >>> from ember.layers import Dense
        >>> print(summary(nn.Sequential(Dense(4), Dense(2)), input_shape=(3,)))  # doctest: +SKIP
    """
    rows = describe_layers(module, example_input, input_shape, dtype)
    trainable, non_trainable = count_params(module)
    cells = [_HEADERS] + [
        (f"{r.name} ({r.type})" if r.name else r.type, r.output_shape, f"{r.params:,}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) + 3 for i in range(3)]
    width = sum(widths)

    def line(row: Sequence[str]) -> str:
        return "".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()

    out = [f'Model: "{type(module).__name__}"', "_" * width, line(_HEADERS), "=" * width]
    out += [line(row) for row in cells[1:]]
    out += [
        "=" * width,
        f"Total params: {trainable + non_trainable:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {non_trainable:,}",
        "_" * width,
    ]
    return "\n".join(out)


def describe_layers(
    module: nn.Module,
    example_input: Any = None,
    input_shape: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
) -> list[LayerSummary]:
    """The rows of `summary()` as data (same arguments and errors as `summary`).

    Returns:
        One `LayerSummary` per leaf layer, in definition order.

    Example:
        >>> from ember.layers import Dense
        >>> describe_layers(nn.Sequential(Dense(4)), input_shape=(3,))[0].output_shape
        '(None, 4)'
    """
    rows = _leaf_rows(module, "", set())
    batches = _example_batches(module, example_input, input_shape, dtype)
    if batches is None:
        lazy = [name or type(m).__name__ for name, m in module.named_modules() if _unbuilt(m)]
        if lazy:
            raise ValueError(
                f"Cannot summarise {type(module).__name__}: layers {lazy[:3]} have no weights "
                "yet (lazy input shapes). Pass input_shape=(...) (one sample, without the batch "
                "dimension) or example_input=, or call the model once first."
            )
        shapes = ["?"] * len(rows)
    else:
        outputs = [_record_outputs(module, [m for _, m, _ in rows], b) for b in batches]
        shapes = [_shape_text(a, b) for a, b in zip(*outputs)]
    return [
        LayerSummary(name, type(m).__name__, shape, *_row_params(m, recurse))
        for (name, m, recurse), shape in zip(rows, shapes)
    ]


def count_params(module: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) parameter counts; shared parameters are counted once.

    Args:
        module: any `nn.Module` whose parameters are materialised.

    Returns:
        `(trainable, non_trainable)`; buffers are not counted.

    Example:
        >>> count_params(nn.Linear(3, 2))
        (8, 0)
    """
    trainable = non_trainable = 0
    for name, p in module.named_parameters():
        if is_lazy(p):
            raise ValueError(
                f"Parameter {name!r} has no shape yet (its lazy layer was never called); call the "
                "model once or pass input_shape= to summary()."
            )
        if p.requires_grad:
            trainable += p.numel()
        else:
            non_trainable += p.numel()
    return trainable, non_trainable


# ----- helpers -----


def _leaf_rows(module: nn.Module, prefix: str, seen: set[int]) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, count params recursively) for each row, depth first."""
    if id(module) in seen:
        return []
    seen.add(id(module))
    children = list(module.named_children())
    if isinstance(module, Layer) or not children:
        return [(prefix, module, True)]
    rows = []
    if any(True for _ in module.parameters(recurse=False)):
        rows.append((prefix, module, False))  # a container's own parameters get a row too
    for name, child in children:
        rows += _leaf_rows(child, f"{prefix}.{name}" if prefix else name, seen)
    return rows


def _unbuilt(module: nn.Module) -> bool:
    if isinstance(module, Layer):
        return not module.built
    return any(is_lazy(p) for p in module.parameters(recurse=False))


def _row_params(module: nn.Module, recurse: bool) -> tuple[int, int]:
    params = [p for p in module.parameters(recurse=recurse) if not is_lazy(p)]
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _example_batches(
    module: nn.Module, example_input: Any, input_shape: Any, dtype: torch.dtype | None
) -> tuple[tuple, tuple] | None:
    """Inputs with batch 1 and batch 2 (repeats of one sample), or None when none is available."""
    if example_input is not None and input_shape is not None:
        raise ValueError("Pass either example_input= or input_shape= to summary(), not both.")
    if example_input is not None:
        args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
        one = tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in args)
        two = tuple(torch.cat([a, a]) if isinstance(a, torch.Tensor) else a for a in one)
        return one, two
    if input_shape is None:
        first_input = next((m for m in module.modules() if isinstance(m, Input)), None)
        if first_input is None:
            return None
        input_shape = [1 if d is None else d for d in first_input.shape]
        dtype = dtype or first_input.dtype
    ok = isinstance(input_shape, Sequence) and not isinstance(input_shape, str)
    if not ok or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in input_shape):
        raise ValueError(
            "Received an invalid value for `input_shape`, expected the shape of one sample (a "
            f"tuple of positive integers, without the batch dimension). Received: {input_shape!r}"
        )
    tensor = next(iter(module.parameters()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    one = torch.zeros(1, *input_shape, dtype=dtype or torch.float32, device=device)
    return (one,), (torch.cat([one, one]),)


def _record_outputs(module: nn.Module, leaves: list[nn.Module], args: tuple) -> list[Any]:
    """Run `module(*args)` and return the first output of each leaf (None if it was not called)."""
    outputs: dict[int, Any] = {}

    def hook(m: nn.Module, _inputs: Any, output: Any) -> None:
        outputs.setdefault(id(m), output)

    handles = [leaf.register_forward_hook(hook) for leaf in leaves]
    try:
        materialize(module, args)
    except Exception as exc:
        raise ValueError(
            f"summary() could not run {type(module).__name__} on input of shape "
            f"{format_shape(list(args))}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return [outputs.get(id(leaf)) for leaf in leaves]


def _shape_text(one: Any, two: Any) -> str:
    """Shape of `one` with every dim that differs in `two` (the batch-2 run) shown as None."""
    if isinstance(one, torch.Tensor):
        dims = tuple(one.shape)
        if isinstance(two, torch.Tensor) and two.dim() == one.dim():
            dims = tuple(a if a == b else None for a, b in zip(one.shape, two.shape))
        return str(dims)
    if isinstance(one, (tuple, list)):
        others = two if isinstance(two, (tuple, list)) and len(two) == len(one) else one
        return "[" + ", ".join(_shape_text(a, b) for a, b in zip(one, others)) + "]"
    if isinstance(one, dict):
        others = two if isinstance(two, dict) else one
        return (
            "{" + ", ".join(f"{k}: {_shape_text(v, others.get(k))}" for k, v in one.items()) + "}"
        )
    return "?" if one is None else type(one).__name__
