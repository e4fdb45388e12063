"""What `compile()` sets up and the default train / validation / predict steps built on it.

`ember.Model` calls these from its `train_step` & co.; the Trainer calls them directly for a plain
`torch.nn.Module` compiled with `ember.compile(module, ...)`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember import losses

__all__ = [
    "CompileConfig",
    "bind_train_step",
    "compile",
    "default_train_step",
    "default_validation_step",
    "split_batch",
]

log = logging.getLogger(__name__)

_INTERVALS = ("epoch", "step")


@dataclass
class CompileConfig:
    """What `compile()` received; optimizer, scheduler and metrics are built when training starts."""

    optimizer: Any = "adam"
    loss: Any = None
    metrics: list = field(default_factory=list)
    lr: float | None = None
    scheduler: Any = None
    scheduler_interval: str = "epoch"
    scheduler_monitor: str = "val_loss"
    loss_fn: Any = None
    metric_objects: dict = field(default_factory=dict)  # {"train": {...}, "val": {...}}
    num_classes: int | None = None  # from the output width, when metrics are first built


def compile(
    module: nn.Module,
    optimizer: Any = "adam",
    loss: Any = None,
    metrics: list | None = None,
    *,
    lr: float | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    scheduler_monitor: str = "val_loss",
) -> nn.Module:
    """Attach an optimizer, a loss and metrics to any `nn.Module` so the Trainer can train it.

    Args:
        module: the model (an `ember.Model` or any `torch.nn.Module`).
        optimizer: a name ("adam", "sgd", ...), an optimizer class, or a torch optimizer instance.
        loss: a name ("cross_entropy", "mse", ...) or a callable `loss(pred, target)`.
        metrics: names ("accuracy", "mae", ...) or torchmetrics objects.
        lr: learning rate for a named optimizer.
        scheduler: a callable `optimizer -> torch LR scheduler` (any, ReduceLROnPlateau included) or a
            scheduler instance.
        scheduler_interval: step the scheduler every "epoch" or every "step".
        scheduler_monitor: the logged value ReduceLROnPlateau reads.

    Returns:
        The same module.

    Example:
        >>> net = ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy", ["accuracy"])
    """
    if loss is None:
        raise ValueError(
            "compile() needs a loss, e.g. compile(model, optimizer='adam', loss='cross_entropy')."
        )
    if scheduler_interval not in _INTERVALS:
        raise ValueError(
            f"Unknown scheduler_interval {scheduler_interval!r}. Choose one of: {', '.join(_INTERVALS)}"
        )
    from ember import metrics as _metrics
    from ember import optimizers as _optimizers

    if isinstance(optimizer, str) and optimizer.lower() not in _optimizers._OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {optimizer!r}. Choose one of: {', '.join(_optimizers._OPTIMIZERS)}, "
            "or pass a torch.optim.Optimizer."
        )
    for m in metrics or []:  # fail fast on unknown names, before training starts
        if isinstance(m, str) and m.lower() not in _metrics._NAMES:
            raise ValueError(
                f"Unknown metric {m!r}. Choose one of: {', '.join(_metrics._NAMES)}, "
                "or pass a torchmetrics.Metric."
            )
    cfg = CompileConfig(
        optimizer=optimizer,
        loss=loss,
        metrics=list(metrics or []),
        lr=lr,
        scheduler=scheduler,
        scheduler_interval=scheduler_interval,
        scheduler_monitor=scheduler_monitor,
        loss_fn=losses.get(loss),
    )
    object.__setattr__(module, "_ember_compile", cfg)
    return module


def split_batch(batch: Any) -> tuple[Any, Any]:
    """Split a batch into (inputs, targets); targets is None for unlabelled batches."""
    if isinstance(batch, (list, tuple)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        return tuple(batch[:-1]), batch[-1]
    if isinstance(batch, dict):
        return batch.get("x", batch.get("input")), batch.get("y", batch.get("target"))
    return batch, None


def _forward(module: nn.Module, x: Any) -> torch.Tensor:
    if isinstance(x, dict):  # named inputs: model(image=..., meta=...)
        return module(**x)
    return module(*x) if isinstance(x, tuple) else module(x)


def _loss(cfg: CompileConfig, pred: torch.Tensor, y: Any) -> torch.Tensor:
    try:
        return cfg.loss_fn(pred, y)
    except (IndexError, RuntimeError) as exc:  # wrong labels: say which and how to fix them
        from ember.data.checks import explain_loss_error

        better = explain_loss_error(exc, pred, y)
        if better is None:
            raise
        raise better from exc


def _require_config(module: nn.Module) -> CompileConfig:
    cfg = getattr(module, "_ember_compile", None)
    if cfg is None:
        raise RuntimeError(
            f"{type(module).__name__} is not compiled: call model.compile(optimizer='adam', "
            "loss='cross_entropy') (or ember.compile(module, ...)) before fit/evaluate, or override "
            "train_step."
        )
    return cfg


def _update_metrics(cfg: CompileConfig, stage: str, pred: torch.Tensor, y: torch.Tensor) -> None:
    metrics = cfg.metric_objects.get(stage)
    if metrics is None:  # built on first use: the output width gives the number of classes
        if cfg.num_classes is None:
            cfg.num_classes = pred.shape[-1] if pred.ndim > 1 else 1
        metrics = build_metrics(cfg, pred.device)
        cfg.metric_objects[stage] = metrics
    for metric in metrics.values():
        metric.update(pred.detach(), y)


def build_metrics(cfg: CompileConfig, device: torch.device) -> dict:
    """Fresh metric objects for one stage (train or val)."""
    from ember import metrics as _metrics

    built = _metrics.collection(cfg.metrics, num_classes=cfg.num_classes)
    return {k: m.to(device) for k, m in built.items()}


def default_train_step(module: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Forward, loss and metric update on one batch; returns {"loss": loss} (graph attached)."""
    return _train_step(module, _require_config(module), batch)


def bind_train_step(module: nn.Module) -> Callable[[Any], dict[str, torch.Tensor]]:
    """`default_train_step` for `module`, its compile config looked up once, not per batch.

    The Trainer calls this when a fit starts and the result once per batch.

    Example:
        >>> step = bind_train_step(ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy"))
        >>> step((torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)))["loss"].shape
        torch.Size([])
    """
    return functools.partial(_train_step, module, _require_config(module))


def _train_step(module: nn.Module, cfg: CompileConfig, batch: Any) -> dict[str, torch.Tensor]:
    x, y = split_batch(batch)
    if y is None:
        raise ValueError("The training data has no targets: pass `y` or a Dataset yielding (x, y).")
    pred = _forward(module, x)
    loss = _loss(cfg, pred, y)
    if cfg.metrics:
        _update_metrics(cfg, "train", pred, y)
    return {"loss": loss}


def default_validation_step(module: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Like `default_train_step` in eval mode, metrics go to the validation set."""
    cfg = _require_config(module)
    x, y = split_batch(batch)
    pred = _forward(module, x)
    if y is None:
        return {}
    loss = _loss(cfg, pred, y)
    if cfg.metrics:
        _update_metrics(cfg, "val", pred, y)
    return {"loss": loss}


def default_predict_step(module: nn.Module, batch: Any) -> torch.Tensor:
    """The model's output for the batch's inputs (targets ignored)."""
    x, _ = split_batch(batch)
    return _forward(module, x)
