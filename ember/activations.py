"""Activation lookup: one `get()` that turns a name, callable or module into an `nn.Module`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "Lambda", "get"]

# name -> factory; each call makes a fresh module so layers never share activation state.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": lambda: nn.Softmax(dim=-1),
    "log_softmax": lambda: nn.LogSoftmax(dim=-1),
    # Keras 3's default slope (torch's nn.LeakyReLU defaults to 0.01).
    "leaky_relu": lambda: nn.LeakyReLU(negative_slope=0.2),
    "elu": nn.ELU,
    "selu": nn.SELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
}


class Lambda(nn.Module):
    """Wrap a plain function (e.g. `torch.relu`) as a module.

    Args:
        fn: a function of one tensor returning a tensor.

    Example:
        >>> Lambda(torch.abs)(torch.tensor([-2.0])).item()
        2.0
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__qualname__', repr(self.fn))}"


def get(identifier: Any) -> nn.Module:
    """Resolve an activation identifier to an `nn.Module`.

    Args:
        identifier: `None` (identity); a name, case-insensitive: "relu", "gelu", "sigmoid",
            "tanh", "softmax", "log_softmax" (both over the last dim), "leaky_relu" (slope 0.2 as
            in Keras), "elu", "selu", "silu"/"swish", "linear" (identity); an `nn.Module` instance
            (returned as is); an `nn.Module` class (instantiated with no arguments); or any other
            callable (wrapped in `Lambda`).

    Returns:
        An `nn.Module` applying the activation.

    Raises:
        ValueError: for an unknown name or an identifier of another type.

    Example:
        >>> get("relu")
        ReLU()
        >>> get(None)
        Identity()
    """
    if identifier is None:
        return nn.Identity()
    if isinstance(identifier, str):
        factory = ACTIVATIONS.get(identifier.strip().lower())
        if factory is None:
            choices = ", ".join(sorted(ACTIVATIONS))
            raise ValueError(
                f"Unknown activation {identifier!r}. Choose one of: {choices} "
                "(or pass a callable or an nn.Module)."
            )
        return factory()
    if isinstance(identifier, nn.Module):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, nn.Module):
        return identifier()
    if callable(identifier):
        return Lambda(identifier)
    raise ValueError(
        "Could not interpret activation identifier: expected None, a name, a callable or an "
        f"nn.Module. Received: {identifier!r} of type {type(identifier).__name__}"
    )
