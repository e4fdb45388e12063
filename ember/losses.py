"""Resolve loss names ("cross_entropy", "mse", ...) to callables `loss(pred, target) -> Tensor`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["get"]


def _binary_cross_entropy(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Logits in, like Keras's from_logits=True: numerically stable.
    return F.binary_cross_entropy_with_logits(pred, target.to(pred.dtype).reshape(pred.shape))


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target.to(pred.dtype).reshape(pred.shape))


def _mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(pred, target.to(pred.dtype).reshape(pred.shape))


def _huber(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(pred, target.to(pred.dtype).reshape(pred.shape))


_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": F.cross_entropy,
    "sparse_categorical_crossentropy": F.cross_entropy,
    "nll": F.nll_loss,
    "binary_cross_entropy": _binary_cross_entropy,
    "mse": _mse,
    "mean_squared_error": _mse,
    "mae": _mae,
    "mean_absolute_error": _mae,
    "huber": _huber,
}

CLASSIFICATION_LOSSES = {"cross_entropy", "sparse_categorical_crossentropy", "nll"}


def get(identifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return a loss function `fn(pred, target) -> scalar Tensor`.

    Args:
        identifier: a name (cross_entropy, binary_cross_entropy, mse, mae, huber, nll, ...), an
            `nn.Module` loss or any callable.

    Example:
        >>> loss_fn = get("cross_entropy")
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _LOSSES:
        return _LOSSES[identifier.lower()]
    raise ValueError(
        f"Unknown loss {identifier!r}. Choose one of: {', '.join(_LOSSES)}, or pass a callable."
    )
