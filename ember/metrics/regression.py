"""Regression metrics: mean absolute error, mean squared error (or its root) and R².

Outputs and targets are compared element by element; a (N, 1) output matches (N,) targets.
"""

from __future__ import annotations

import torch

from ember.metrics.base import Metric, accumulator_dtype

__all__ = ["MeanAbsoluteError", "MeanSquaredError", "R2Score"]


class MeanAbsoluteError(Metric):
    """Mean of |output - target| over every element.

    Example:
        >>> mae = MeanAbsoluteError()
        >>> mae.update(torch.tensor([1.0, 2.0]), torch.tensor([1.5, 2.0]))
        >>> float(mae.compute())
        0.25
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = _match(preds, target)
        self.total += (preds - target).abs().sum()
        self.count += target.numel()

    def _compute(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return total / count.clamp_min(1)


class MeanSquaredError(Metric):
    """Mean of (output - target)² over every element; `squared=False` gives its root (RMSE).

    Example:
        >>> rmse = MeanSquaredError(squared=False)
    """

    def __init__(self, *, squared: bool = True) -> None:
        super().__init__()
        self.squared = squared
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = _match(preds, target)
        self.total += (preds - target).square().sum()
        self.count += target.numel()

    def _compute(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        mse = total / count.clamp_min(1)
        return mse if self.squared else mse.sqrt()

    def extra_repr(self) -> str:
        return f"squared={self.squared}"


class R2Score(Metric):
    """Coefficient of determination 1 - SS_res / SS_tot; several outputs: their uniform average.

    Example:
        >>> r2 = R2Score()
    """

    def __init__(self) -> None:
        super().__init__()
        for name in ("sum_y", "sum_y2", "sum_err2"):
            self.add_state(name, torch.zeros(0, dtype=torch.float64))  # sized on first update
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = _match(preds, target)
        preds, target = preds.reshape(target.shape[0], -1), target.reshape(target.shape[0], -1)
        for name, value in (
            ("sum_y", target.sum(0)),
            ("sum_y2", target.square().sum(0)),
            ("sum_err2", (preds - target).square().sum(0)),
        ):
            current = getattr(self, name)
            setattr(self, name, value if current.numel() == 0 else current + value)
        self.count += target.shape[0]

    def _compute(self, sum_y, sum_y2, sum_err2, count) -> torch.Tensor:
        ss_tot = sum_y2 - sum_y.square() / count.clamp_min(1)
        return (1 - sum_err2 / ss_tot).mean()


def _match(preds: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 (float32 on MPS) of the target's shape ((N, 1) outputs for (N,) targets)."""
    dtype = accumulator_dtype(target.device)
    target, preds = target.to(dtype), preds.to(dtype)
    if preds.shape != target.shape and preds.numel() == target.numel():
        preds = preds.reshape(target.shape)
    return preds, target
