"""The `Layer` base class and the helpers a container needs to build and call layers.

Provided for containers (such as `ember.Sequential`):

* `materialize(module, example_input)` runs one forward pass under `torch.no_grad()` in eval
  mode so that every lazy parameter gets its concrete shape (call it before creating an optimizer).
* `check_call(layer_name, layer, x)` calls one layer and turns a shape error into a `LayerCallError`
  (a `ValueError`) that names the layer, the shape it received and, where known, what it expected.
* `auto_names(layers)` gives Keras-style names (`dense`, `dense_1`, `conv2d`, ...).
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

__all__ = [
    "Layer",
    "LayerCallError",
    "auto_names",
    "check_call",
    "format_shape",
    "materialize",
]

logger = logging.getLogger(__name__)


class LayerCallError(ValueError):
    """A layer could not process its input; the message names the layer and the shapes."""


class Layer(nn.Module):
    """Base class of ember layers: a `torch.nn.Module` whose input size is found on first call.

    A subclass stores its settings in `__init__` and either wraps torch's lazy modules or creates
    its weights in `build(input_shape)`, which `_build_once` calls on the first forward pass.
    `summary()` shows an ember layer as one row even when it wraps torch modules.

    Example:
        >>> class Scale(Layer):
        ...     def forward(self, x):
        ...         return 2 * x
        >>> Scale()(torch.ones(1)).item()
        2.0
    """

    _built_by_call = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _recording_init(init)

    def get_config(self) -> dict:
        """The constructor arguments, as JSON (what `Sequential.get_config` stores)."""
        config = dict(getattr(self, "_ember_config", {}))
        try:
            json.dumps(config)
        except TypeError as exc:
            raise TypeError(
                f"{type(self).__name__} has an argument that is not JSON ({exc}); pass names "
                "(e.g. activation='relu') to make the layer describable."
            ) from exc
        return config

    @property
    def built(self) -> bool:
        """True once every parameter and buffer of this layer has a concrete shape."""
        if self._built_by_call and not getattr(self, "_is_built", False):
            return False
        tensors = list(self.parameters()) + list(self.buffers())
        return not any(is_lazy(t) for t in tensors)

    def build(self, input_shape: torch.Size, device: torch.device, dtype: torch.dtype) -> None:
        """Create the weights for inputs of `input_shape` (only layers with `_built_by_call`)."""

    def _build_once(self, x: torch.Tensor) -> None:
        if self._built_by_call and not getattr(self, "_is_built", False):
            self.build(x.shape, x.device, x.dtype if x.is_floating_point() else torch.float32)
            self._is_built = True


def _recording_init(init: Any) -> Any:
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self: Layer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config = {k: v for k, v in list(bound.arguments.items())[1:]}
        # The most derived __init__ finishes last, so its arguments are the ones kept.
        object.__setattr__(self, "_ember_config", _jsonable(config))

    return __init__


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def materialize(module: nn.Module, example_input: Any) -> None:
    """Run one forward pass so that all lazy parameters get concrete shapes.

    The pass runs under `torch.no_grad()` with every submodule in eval mode (so a batch of one
    works with BatchNorm and Dropout does nothing); each module's training flag is restored after.

    Args:
        module: any `nn.Module`, typically a container of ember layers.
        example_input: a tensor, or a tuple/list of tensors passed as positional arguments,
            with a batch dimension first.

    Returns:
        None. `module.state_dict()` has concrete shapes afterwards.

    Example:
        >>> from ember.layers import Dense
        >>> model = nn.Sequential(Dense(4))
        >>> materialize(model, torch.zeros(1, 3))
        >>> tuple(model[0].linear.weight.shape)
        (4, 3)
    """
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            module(*args)
    finally:
        for m, training in modes.items():
            m.training = training
    logger.debug("materialized %s with %s", type(module).__name__, [format_shape(a) for a in args])


def check_call(layer_name: str, layer: nn.Module, x: Any) -> Any:
    """Call `layer(x)`, turning a shape/value error into a `LayerCallError` that names the layer.

    Errors already wrapped by an inner `check_call` pass through unchanged, and out-of-memory
    errors are never wrapped.

    Args:
        layer_name: the name or index shown in the message, e.g. `"dense_1"` or `"2"`.
        layer: the module to call.
        x: its input (a tensor, or anything the layer accepts).

    Returns:
        Whatever `layer(x)` returns.

    Example:
        >>> check_call("dense", nn.Linear(64, 10), torch.zeros(2, 32))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ember.layers.base.LayerCallError: Layer 'dense' (Linear) ... shape (2, 32)...
    """
    try:
        return layer(x)
    except LayerCallError:
        raise
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        expected = _expected_hint(layer)
        hint = f" It expects {expected}." if expected else ""
        raise LayerCallError(
            f"Layer {layer_name!r} ({type(layer).__name__}) could not process the input it "
            f"received: received input of shape {format_shape(x)}.{hint} Cause: {exc}"
        ) from exc


def auto_names(layers: Iterable[nn.Module]) -> list[str]:
    """Keras-style unique names from the class names: `conv2d`, `dense`, `dense_1`, ...

    Args:
        layers: the modules, in order.

    Returns:
        One name per module.

    Example:
        >>> from ember.layers import Dense
        >>> auto_names([Dense(2), nn.ReLU(), Dense(3)])
        ['dense', 're_lu', 'dense_1']
    """
    counts: dict[str, int] = {}
    names = []
    for layer in layers:
        base = re.sub(r"(?<=[a-z])(?=[A-Z])", "_", type(layer).__name__).lower()
        n = counts.get(base, 0)
        counts[base] = n + 1
        names.append(base if n == 0 else f"{base}_{n}")
    return names


def format_shape(x: Any) -> str:
    """Shape of a tensor (or nested tuple/list of tensors) as text, e.g. `(2, 3, 8, 8)`."""
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    if isinstance(x, (tuple, list)):
        return "[" + ", ".join(format_shape(v) for v in x) + "]"
    return type(x).__name__


def _expected_hint(layer: nn.Module) -> str:
    """What input a torch or ember layer expects, when it can be read off its built weights."""
    hint = getattr(layer, "expected_input", None)
    if callable(hint):
        return hint() or ""
    weight = getattr(layer, "weight", None)
    if isinstance(weight, torch.Tensor) and not is_lazy(weight) and weight.dim() >= 2:
        if isinstance(layer, nn.Linear):
            return f"inputs of shape (..., {weight.shape[1]})"
        if isinstance(layer, nn.modules.conv._ConvNd):
            return f"{layer.in_channels} input channels at dim 1 (channels first)"
    return ""


# ----- argument validation shared by the layers -----


def _invalid(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(
        f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}"
    )


def _check_positive_int(name: str, value: Any) -> int:
    """Return `value` if it is a positive int, else raise the Keras-style `ValueError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _invalid(name, "a positive integer", value)
    return value


def _check_int_tuple(name: str, value: Any, rank: int) -> tuple[int, ...]:
    """An int or a sequence of `rank` positive ints, returned as a tuple of `rank` ints."""
    values = (value,) * rank if isinstance(value, int) and not isinstance(value, bool) else value
    ok = isinstance(values, Sequence) and len(values) == rank
    if not ok or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in values):
        raise _invalid(name, f"a positive integer or a tuple of {rank} positive integers", value)
    return tuple(values)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """`value` lower-cased if it is one of `choices`, else a `ValueError` listing them."""
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    allowed = ", ".join(repr(c) for c in choices)
    raise _invalid(name, f"one of {allowed}", value)


def _check_float(name: str, value: Any, low: float, high: float, high_inclusive: bool) -> float:
    """A real number in `[low, high)` (or `[low, high]`), else a `ValueError`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and low <= value and (value <= high if high_inclusive else value < high)
    if not ok:
        bracket = "]" if high_inclusive else ")"
        raise _invalid(name, f"a number in [{low}, {high}{bracket}", value)
    return float(value)
