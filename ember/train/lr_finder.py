"""The learning-rate range test (Lightning's `lr_find`): train briefly with a rising learning rate,
record the loss, suggest the rate where it falls fastest. The model is left as it was."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ember.train.batches import batch_mover, materialize
from ember.train.steps import Steps, bind_train_step

__all__ = ["LRFinderResult", "lr_find"]

log = logging.getLogger(__name__)


@dataclass
class LRFinderResult:
    """The range test's curve: `lrs[i]` was used for the step whose (smoothed) loss is `losses[i]`.

    Example:
        >>> result = ember.train.lr_find(model, loader)
        >>> model.compile("adam", "cross_entropy", lr=result.suggestion())
        >>> result.plot()  # needs matplotlib
    """

    lrs: list[float]
    losses: list[float]

    def suggestion(self, skip_begin: int = 10, skip_end: int = 1) -> float | None:
        """The learning rate where the loss falls fastest (steepest negative slope in log lr).

        Returns None when the curve is too short to tell (fewer than 3 usable points).
        """
        lrs, losses = self.lrs[skip_begin : len(self.lrs) - skip_end], self.losses
        losses = losses[skip_begin : len(losses) - skip_end]
        if len(lrs) < 3:
            lrs, losses = self.lrs, self.losses  # a short run: use every point
        if len(lrs) < 3:
            return None
        slopes = [
            (losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]))
            for i in range(len(lrs) - 1)
        ]
        return lrs[min(range(len(slopes)), key=slopes.__getitem__)]

    def plot(self, ax: Any = None, suggest: bool = True) -> Any:
        """Draw loss against learning rate (log scale) with matplotlib; returns the axes."""
        from ember.train.history import _pyplot

        plt = _pyplot()
        ax = ax if ax is not None else plt.subplots()[1]
        ax.plot(self.lrs, self.losses)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        best = self.suggestion() if suggest else None
        if best is not None:
            ax.axvline(best, color="red", linestyle="--", label=f"suggestion {best:.2g}")
            ax.legend()
        return ax


def lr_find(
    model: nn.Module,
    train_data: Any,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_training: int = 100,
    early_stop_threshold: float | None = 4.0,
    beta: float = 0.98,
    device: torch.device | str | None = None,
) -> LRFinderResult:
    """Train for up to `num_training` steps with the learning rate rising exponentially from
    `min_lr` to `max_lr`, recording the smoothed loss; then put the model back as it was.

    Args:
        model: a compiled `ember.Model` or module (`ember.compile`).
        train_data: a DataLoader, Dataset or iterable of (inputs, targets) batches (cycled
            when shorter than `num_training`).
        min_lr, max_lr: the range tested.
        num_training: steps (learning rates) tried.
        early_stop_threshold: stop once the loss exceeds this multiple of the best loss (None:
            never).
        beta: smoothing of the recorded loss (exponential moving average, bias-corrected).
        device: where to run (default: the model's device).

    Returns:
        An `LRFinderResult` with the curve and `suggestion()`.

    Example:
        >>> result = ember.train.lr_find(model, train_loader)
        >>> print(result.suggestion())
    """
    _check_range(min_lr, max_lr, num_training)
    model_steps = Steps(model)
    if isinstance(train_data, torch.utils.data.Dataset) and not isinstance(
        train_data, torch.utils.data.IterableDataset
    ):
        train_data = torch.utils.data.DataLoader(train_data, batch_size=32, shuffle=True)
    device = torch.device(device) if device is not None else _device_of(model)
    materialize(model, train_data, device)
    model.to(device)
    saved = copy.deepcopy(model.state_dict())
    optimizer = model_steps.configure_optimizers()[0]
    step = model_steps.train_step or bind_train_step(model)
    move = batch_mover(device)
    ratio = (max_lr / min_lr) ** (1 / max(num_training - 1, 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    was_training = model.training
    model.train()
    with torch.random.fork_rng(devices=[]):  # the range test leaves the RNGs as they were
        for i, batch in enumerate(_cycle(train_data, num_training)):
            lr = min_lr * ratio**i
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = step(move(batch))["loss"]
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            avg = beta * avg + (1 - beta) * value
            smoothed = avg / (1 - beta ** (i + 1))
            if not math.isfinite(smoothed):
                break
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if early_stop_threshold is not None and smoothed > early_stop_threshold * best:
                break
    model.load_state_dict(saved)
    model.train(was_training)
    _reset_metrics(model_steps)
    result = LRFinderResult(lrs, losses)
    log.info("lr_find: %d learning rates tried; suggestion %s", len(lrs), result.suggestion())
    return result


def _check_range(min_lr: Any, max_lr: Any, num_training: Any) -> None:
    if not (isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float))) or not (
        0 < min_lr < max_lr
    ):
        raise ValueError(
            "Received an invalid learning-rate range, expected 0 < min_lr < max_lr. "
            f"Received: min_lr={min_lr!r}, max_lr={max_lr!r}"
        )
    if not isinstance(num_training, int) or num_training < 2:
        raise ValueError(
            "Received an invalid value for `num_training`, expected an integer >= 2. "
            f"Received: num_training={num_training!r}"
        )


def _cycle(data: Any, n: int):
    done = 0
    while done < n:
        empty = True
        for batch in data:
            empty = False
            yield batch
            done += 1
            if done == n:
                return
        if empty:
            raise ValueError("lr_find received empty training data.")


def _device_of(model: nn.Module) -> torch.device:
    from torch.nn.parameter import is_lazy

    params = [p for p in model.parameters() if not is_lazy(p)]
    return params[0].device if params else torch.device("cpu")


def _reset_metrics(model_steps: Steps) -> None:
    """Forget the metric updates the range test made (the next fit starts clean)."""
    cfg = model_steps.config
    if cfg is not None:
        for metrics in cfg.metric_objects.values():
            for metric in metrics.values():
                metric.reset()
