"""Resolve optimizer names ("adam", "sgd", ...) to torch optimizers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["get"]

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
    "adagrad": torch.optim.Adagrad,
    "adamax": torch.optim.Adamax,
    "nadam": torch.optim.NAdam,
}
_DEFAULT_LR = {"sgd": 0.01}


def get(identifier: Any, params: Iterable[torch.nn.Parameter], lr: float | None = None):
    """Return a torch optimizer for `params`.

    Args:
        identifier: a name (one of adam, adamw, sgd, rmsprop, adagrad, adamax, nadam), an optimizer
            instance (returned as is) or an optimizer class.
        params: the parameters to optimize (used for names and classes).
        lr: learning rate; the optimizer's default (0.001, or 0.01 for sgd) when None.

    Example:
        >>> opt = get("adam", model.parameters(), lr=1e-3)
    """
    if isinstance(identifier, torch.optim.Optimizer):
        return identifier
    kwargs = {} if lr is None else {"lr": lr}
    if isinstance(identifier, type) and issubclass(identifier, torch.optim.Optimizer):
        return identifier(params, **kwargs)
    if isinstance(identifier, str) and identifier.lower() in _OPTIMIZERS:
        name = identifier.lower()
        kwargs.setdefault("lr", _DEFAULT_LR.get(name, 1e-3))
        return _OPTIMIZERS[name](params, **kwargs)
    raise ValueError(
        f"Unknown optimizer {identifier!r}. Choose one of: {', '.join(_OPTIMIZERS)}, "
        "or pass a torch.optim.Optimizer."
    )
