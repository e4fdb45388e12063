"""Batches as the loops see them: moving one to the device, its size, its inputs, and building a
model's lazy parameters from the first one."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ember.train.steps import split_batch

__all__ = ["batch_mover", "batch_size", "example_input", "materialize"]


def batch_mover(device: torch.device):
    """A function moving a batch (tensors in lists, tuples, dicts) to `device`."""
    if device.type == "cpu":
        return lambda batch: batch  # data loaders already produce CPU tensors

    def move(batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(move(b) for b in batch)
        if isinstance(batch, dict):
            return {k: move(v) for k, v in batch.items()}
        return batch

    return move


def batch_size(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (1 if none)."""
    if type(batch) in (list, tuple) and batch and type(batch[0]) is torch.Tensor:
        return batch[0].shape[0] if batch[0].ndim else 1  # the usual (x, y): checked first
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, dict) and batch:
        return batch_size(next(iter(batch.values())))
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.ndim else 1


def example_input(loader: Any, device: torch.device) -> Any:
    """The inputs of the first batch (for graph logging)."""
    batch = (
        next(iter(loader))
        if not isinstance(loader, DataLoader)
        else loader.collate_fn([loader.dataset[0]])
    )
    x, _ = split_batch(batch_mover(device)(batch))
    return x


def materialize(module: torch.nn.Module, loader: Any, device: torch.device) -> None:
    """Build lazy parameters with one forward pass on the first sample, without touching the RNG."""
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(p) for p in module.parameters()):
        return
    module.to(device)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        was_training = module.training
        module.eval()
        x = example_input(loader, device)
        module(**x) if isinstance(x, dict) else module(*x) if isinstance(x, tuple) else module(x)
        module.train(was_training)
