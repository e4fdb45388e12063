"""The evaluation and prediction loops the Trainer runs outside training.

:func:`evaluate` averages the loss and computes the compiled metrics over a loader (used after
every epoch and by `Trainer.validate`); :func:`predict` concatenates `predict_step` outputs
(`Trainer.predict`). Both run without gradients under the Trainer's precision and restore the
module's train/eval mode.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.train.batches import batch_mover, batch_size
from ember.train.precision import Precision
from ember.train.steps import Steps

__all__ = ["evaluate", "predict"]


def evaluate(
    steps: Steps,
    loader: Any,
    stage: str,
    *,
    device: torch.device,
    precision: Precision,
    strategy: Any,
) -> dict[str, float]:
    """Run `validation_step` over `loader`; the loss is averaged over samples and processes.

    Args:
        steps: the module's steps (its `forward_module` already placed by the strategy).
        loader: batches of (inputs, targets).
        stage: which compiled metrics to compute and reset ("val").
        device: where batches go.
        precision: the autocast context to run under.
        strategy: averages the loss over processes (`reduce_mean`).

    Returns:
        {"loss": mean loss (when a step returned one), metric name: value, ...}.

    Example:
        >>> evaluate(steps, val_loader, "val", device=trainer.device,
        ...          precision=trainer.precision, strategy=trainer.strategy)
        {'loss': 0.41, 'accuracy': 0.88}
    """
    module = steps.module
    was_training = module.training
    module.eval()
    to_device = batch_mover(device)
    total, count = torch.zeros((), device=device), 0
    with torch.no_grad(), precision.autocast():
        for batch in loader:
            batch = to_device(batch)
            logs = steps.validation_step(batch)
            if "loss" in logs:
                n = batch_size(batch)
                total += logs["loss"].detach().float() * n
                count += n
    module.train(was_training)
    out = {"loss": float(strategy.reduce_mean(total / max(count, 1)))} if count else {}
    out.update(steps.compute_metrics(stage, strategy))
    return out


def predict(
    steps: Steps, loader: Any, *, device: torch.device, precision: Precision
) -> torch.Tensor:
    """Run `predict_step` over `loader` and concatenate the outputs (as float, on the CPU).

    Args:
        steps: the module's steps (its `forward_module` already placed by the strategy).
        loader: batches of inputs (or (inputs, targets)).
        device: where batches go.
        precision: the autocast context to run under.

    Returns:
        The outputs along dim 0; an empty tensor for an empty loader.

    Example:
        >>> predict(steps, loader, device=trainer.device, precision=trainer.precision).shape
        torch.Size([64, 10])
    """
    module = steps.module
    to_device = batch_mover(device)
    outputs = []
    was_training = module.training
    module.eval()
    with torch.no_grad(), precision.autocast():
        for batch in loader:
            outputs.append(steps.predict_step(to_device(batch)).float().cpu())
    module.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)
