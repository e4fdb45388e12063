"""Strategies: how the Trainer places the model and talks to other processes.

Only the single-process strategy lives here for now; DDP and FSDP build on the same interface.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Strategy", "SingleDevice", "get_strategy"]


class Strategy:
    """The interface the Trainer uses; one process, one device."""

    rank = 0
    local_rank = 0
    world_size = 1

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move (and, in subclasses, wrap) the module; returns the module to call for forward."""
        return module.to(self.device)

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over processes (identity with one)."""
        return value

    def teardown(self) -> None: ...


class SingleDevice(Strategy):
    """One process on one device (CPU, one GPU or MPS)."""


def get_strategy(strategy: str, device: torch.device) -> Strategy:
    """Resolve a strategy name; "auto" is the single-device strategy in one process."""
    if strategy in ("auto", "single_device"):
        return SingleDevice(device)
    raise ValueError(f"Unknown strategy {strategy!r}. Choose one of: auto, single_device")
