"""Keras's `class_weight` and `sample_weight`: per-sample weights on the training loss."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ember.train import steps

__all__ = ["WeightedDataset", "class_weight_tensor", "weighted_train_step"]


class WeightedDataset(Dataset):
    """Yields `(x, (y, w))`: the inputs stay first, so shapes and graphs see plain inputs."""

    def __init__(self, data: Dataset, weights: torch.Tensor) -> None:
        if len(weights) != len(data):
            raise ValueError(
                "`sample_weight` must have one weight per training sample. "
                f"Received: {len(weights)} weights for {len(data)} samples"
            )
        self.data, self.weights = data, weights

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        x, y = self.data[i]
        return x, (y, self.weights[i])


def class_weight_tensor(class_weight: dict) -> torch.Tensor:
    """`{class index: weight}` -> a lookup tensor (classes not named weigh 1).

    Example:
        >>> class_weight_tensor({0: 1.0, 2: 5.0})
        tensor([1., 1., 5.])
    """
    if not isinstance(class_weight, dict) or not class_weight:
        raise ValueError(
            "`class_weight` must be a dict {class index: weight}, e.g. {0: 1.0, 1: 5.0}. "
            f"Received: class_weight={class_weight!r}"
        )
    bad = [k for k in class_weight if not isinstance(k, int) or isinstance(k, bool) or k < 0]
    if bad:
        raise ValueError(
            f"`class_weight` keys must be class indices (integers >= 0). Received keys: {bad}"
        )
    table = torch.ones(max(class_weight) + 1)
    for k, w in class_weight.items():
        table[k] = float(w)
    return table


def weighted_train_step(
    module: nn.Module, class_weight: torch.Tensor | None, sample_weight: bool
) -> Callable[[Any], dict[str, torch.Tensor]]:
    """A train step that weighs each sample's loss (Keras: mean over the batch of loss * weight).

    Args:
        module: the compiled module.
        class_weight: a lookup `class_weight_tensor` (weights by target class), or None.
        sample_weight: batches are `(x, (y, w))` (from `WeightedDataset`).
    """
    cfg = steps.require_config(module)
    per_sample = functools.partial(_per_sample_loss, cfg.loss_fn, {"vmap": True})
    return functools.partial(_step, module, cfg, per_sample, class_weight, sample_weight)


def _per_sample_loss(loss_fn: Callable, state: dict, pred: torch.Tensor, y: torch.Tensor):
    """One loss per sample (B,): the compiled loss mapped over the batch dimension.

    `torch.vmap` does it in one call; a loss vmap cannot map (data-dependent Python control
    flow, `.item()`) is called once per sample instead, from then on.
    """
    one = lambda p, t: loss_fn(p.unsqueeze(0), t.unsqueeze(0))  # noqa: E731
    if state["vmap"]:
        try:
            return torch.vmap(one)(pred, y)
        except Exception:  # noqa: BLE001 - any failure of vmap: fall back to a loop
            state["vmap"] = False
    return torch.stack([one(p, t) for p, t in zip(pred, y)])


def _step(
    module: nn.Module, cfg: Any, per_sample_loss: Callable, table: Any, has_w: bool, batch: Any
) -> dict:
    x, y = steps.split_batch(batch)
    y, w = y if has_w else (y, None)
    pred = steps.call_module(module, x)  # (B, ...)
    per_sample = per_sample_loss(pred, y)  # (B,)
    weight = torch.ones_like(per_sample)
    if table is not None:
        classes = y.reshape(len(y), -1)[:, 0].long()
        if int(classes.max()) >= len(table):  # classes beyond the dict weigh 1
            table = torch.cat([table, torch.ones(int(classes.max()) + 1 - len(table))])
        weight = weight * table.to(pred.device)[classes].to(per_sample.dtype)
    if w is not None:
        weight = weight * w.to(per_sample.dtype).reshape(per_sample.shape)
    if cfg.metrics:
        steps.update_metrics(cfg, "train", pred, y)
    return {"loss": (per_sample * weight).mean()}
