"""Core layers: Input, Dense, Activation, Flatten, Reshape, Dropout, Embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from ember import activations
from ember.layers.base import (
    Layer,
    _check_float,
    _check_positive_int,
    _invalid,
)

__all__ = ["Activation", "Dense", "Dropout", "Embedding", "Flatten", "Input", "Reshape"]


class Input(Layer):
    """Marks the per-sample input shape of a model; identity in forward (after a shape check).

    Args:
        shape: the shape of one sample, without the batch dimension, channels first for images
            (`(C, H, W)`, PyTorch's NCHW order). `None` marks a dimension of any size.
        dtype: the input dtype (e.g. `torch.long` for token ids); `None` means float32.

    Shape:
        Input and output: `(N, *shape)`.

    Example:
        >>> Input((1, 8, 8)).example().shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(self, shape: Sequence[int | None], dtype: torch.dtype | None = None) -> None:
        super().__init__()
        shape_ok = isinstance(shape, Sequence) and not isinstance(shape, str)
        if not shape_ok or any(
            d is not None and (isinstance(d, bool) or not isinstance(d, int) or d <= 0)
            for d in shape
        ):
            raise _invalid("shape", "a tuple of positive integers or None", shape)
        self.shape = tuple(shape)
        self.dtype = dtype

    def example(self, batch_size: int = 1) -> torch.Tensor:
        """Zeros of shape `(batch_size, *shape)` (a `None` dim becomes 1), e.g. to materialize."""
        dims = [1 if d is None else d for d in self.shape]
        return torch.zeros(batch_size, *dims, dtype=self.dtype or torch.float32)

    def expected_input(self) -> str:
        return "(None, " + ", ".join(str(d) for d in self.shape) + ")"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sample = tuple(x.shape[1:])
        if len(sample) != len(self.shape) or any(
            d is not None and d != s for d, s in zip(self.shape, sample)
        ):
            raise ValueError(
                f"Input expected inputs of shape {self.expected_input()} (batch first), "
                f"but received input of shape {tuple(x.shape)}."
            )
        return x

    def extra_repr(self) -> str:
        dtype = "" if self.dtype is None else f", dtype={self.dtype}"
        return f"shape={self.shape}{dtype}"


class Dense(Layer):
    """Fully connected layer `activation(x @ W.T + b)` whose input size is found on first call.

    Args:
        units: number of output features.
        activation: anything `ember.activations.get` accepts (`None` = linear).
        use_bias: whether to add a bias.

    Shape:
        Input `(N, *, in_features)`, output `(N, *, units)`.

    Example:
        >>> Dense(4, activation="relu")(torch.zeros(2, 3)).shape
        torch.Size([2, 4])
    """

    def __init__(self, units: int, activation: Any = None, use_bias: bool = True) -> None:
        super().__init__()
        self.units = _check_positive_int("units", units)
        self.linear = nn.LazyLinear(units, bias=use_bias)
        self.activation = activations.get(activation)

    def expected_input(self) -> str:
        w = self.linear.weight
        return "" if is_lazy(w) else f"inputs of shape (..., {w.shape[1]})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.linear.weight
        if not is_lazy(w) and (x.dim() == 0 or x.shape[-1] != w.shape[1]):
            raise ValueError(
                f"Dense was built for inputs with {w.shape[1]} features (last dimension), but "
                f"received input of shape {tuple(x.shape)}."
            )
        return self.activation(self.linear(x))

    def extra_repr(self) -> str:
        return f"units={self.units}, use_bias={self.linear.bias is not None}"


class Activation(Layer):
    """Apply an activation by name (or callable/module), see `ember.activations.get`.

    Args:
        activation: e.g. `"relu"`, `"softmax"` or `torch.tanh`.

    Example:
        >>> Activation("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
    """

    def __init__(self, activation: Any) -> None:
        super().__init__()
        self.name = activation if isinstance(activation, str) else type(activation).__name__
        self.fn = activations.get(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"activation={self.name!r}"


class Flatten(Layer):
    """Flatten every dimension but the batch: `(N, d1, d2, ...)` -> `(N, d1 * d2 * ...)`.

    Example:
        >>> Flatten()(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 60])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def extra_repr(self) -> str:
        return "start_dim=1"


class Reshape(Layer):
    """Reshape each sample to `target_shape`; the batch dimension is kept.

    Args:
        target_shape: per-sample shape; at most one entry may be -1 (inferred).

    Shape:
        Input `(N, *)`, output `(N, *target_shape)`.

    Example:
        >>> Reshape((3, -1))(torch.zeros(2, 12)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, target_shape: Sequence[int]) -> None:
        super().__init__()
        ok = isinstance(target_shape, Sequence) and len(target_shape) > 0
        ok = ok and all(isinstance(d, int) and not isinstance(d, bool) for d in target_shape)
        ok = (
            ok and all(d > 0 or d == -1 for d in target_shape) and list(target_shape).count(-1) <= 1
        )
        if not ok:
            raise _invalid(
                "target_shape", "a tuple of positive integers with at most one -1", target_shape
            )
        self.target_shape = tuple(target_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_sample = math.prod(x.shape[1:])
        known = math.prod(d for d in self.target_shape if d != -1)
        fits = per_sample % known == 0 if -1 in self.target_shape else per_sample == known
        if not fits:
            raise ValueError(
                f"Reshape cannot reshape input of shape {tuple(x.shape)} ({per_sample} values per "
                f"sample) to target_shape {self.target_shape}."
            )
        return x.reshape(x.shape[0], *self.target_shape)

    def extra_repr(self) -> str:
        return f"target_shape={self.target_shape}"


class Dropout(Layer):
    """Zero inputs with probability `rate` in training (scaling the rest by `1 / (1 - rate)`).

    Args:
        rate: drop probability in [0, 1).

    Example:
        >>> Dropout(0.5).eval()(torch.ones(3))
        tensor([1., 1., 1.])
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = _check_float("rate", rate, 0.0, 1.0, high_inclusive=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.rate, self.training)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class Embedding(Layer):
    """Map integer ids in `[0, input_dim)` to vectors of size `output_dim`.

    Args:
        input_dim: vocabulary size.
        output_dim: embedding size.

    Shape:
        Input `(N, *)` integer ids, output `(N, *, output_dim)`.

    Example:
        >>> Embedding(10, 4)(torch.tensor([[1, 2, 3]])).shape
        torch.Size([1, 3, 4])
    """

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.input_dim = _check_positive_int("input_dim", input_dim)
        self.output_dim = _check_positive_int("output_dim", output_dim)
        self.embedding = nn.Embedding(input_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point() or x.is_complex():
            raise ValueError(
                f"Embedding expects integer ids in [0, {self.input_dim}), but received a tensor "
                f"of dtype {x.dtype} and shape {tuple(x.shape)}. Use x.long()."
            )
        return self.embedding(x)

    def expected_input(self) -> str:
        return f"integer ids in [0, {self.input_dim})"

    def extra_repr(self) -> str:
        return f"input_dim={self.input_dim}, output_dim={self.output_dim}"
