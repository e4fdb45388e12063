"""Metric: the small accumulator every named ember metric is built on (torch only, no torchmetrics).

A metric keeps sums (tensors) or lists of tensors as its state, `update(preds, target)` adds a batch,
`compute()` reduces the state to a number and `reset()` starts again. Under torch.distributed,
`compute()` sums the states of every process first, so each rank reports the metric of the whole
data set (as torchmetrics does).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Metric", "accumulator_dtype"]


class Metric:
    """Base class: declare states with `add_state` in `__init__`, write `_update` and `_compute`.

    The interface the training loop uses (and torchmetrics shares): `update`, `compute`, `reset`,
    `to(device)`, `update_count`; checkpoints read `_defaults` and `_update_count`.

    Example:
        >>> class Mean(Metric):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.add_state("total", torch.zeros((), dtype=torch.float64))
        ...         self.add_state("count", torch.zeros((), dtype=torch.int64))
        ...     def _update(self, preds, target):
        ...         self.total += preds.sum(); self.count += preds.numel()
        ...     def _compute(self, total, count):
        ...         return total / count
    """

    def __init__(self) -> None:
        self._defaults: dict[str, torch.Tensor | list] = {}
        self._update_count = 0

    def add_state(self, name: str, default: torch.Tensor | list) -> None:
        """Declare a state: a tensor summed across processes, or a list of tensors gathered."""
        self._defaults[name] = default
        setattr(self, name, [] if isinstance(default, list) else default.clone())

    @property
    def update_count(self) -> int:
        """How many batches were added since the last reset."""
        return self._update_count

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of predictions and targets."""
        self._update_count += 1
        self._update(preds, target)

    def compute(self) -> torch.Tensor:
        """The metric over every batch added (and every process, when distributed).

        Reduced on the CPU (in float64, which not every accelerator has): states are small.
        """
        states = {
            k: [t.cpu() for t in v] if isinstance(v, list) else v.cpu()
            for k, v in self._synced_states().items()
        }
        return self._compute(**states)

    def reset(self) -> None:
        """Forget every batch added."""
        self._update_count = 0
        for name, default in self._defaults.items():
            setattr(self, name, [] if isinstance(default, list) else default.clone())

    def to(self, device: torch.device | str) -> Metric:
        """Move the states to `device` (in place); returns self."""
        for name, default in self._defaults.items():
            if isinstance(default, torch.Tensor):
                dtype = accumulator_dtype(device) if default.is_floating_point() else None
                self._defaults[name] = default.to(device, dtype)
                setattr(self, name, getattr(self, name).to(device, dtype))
            else:
                setattr(self, name, [t.to(device) for t in getattr(self, name)])
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def extra_repr(self) -> str:
        return ""

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def _compute(self, **states: Any) -> torch.Tensor:
        raise NotImplementedError

    def _synced_states(self) -> dict[str, Any]:
        states = {name: getattr(self, name) for name in self._defaults}
        if not _distributed():
            return states
        import torch.distributed as dist

        out = {}
        for name, value in states.items():
            if isinstance(value, list):  # ragged per rank: gather as objects, on the CPU
                parts: list = [None] * dist.get_world_size()
                dist.all_gather_object(parts, [t.cpu() for t in value])
                device = self._device()
                out[name] = [t.to(device) for part in parts for t in part]
            else:  # a copy: the local state stays this rank's own
                value = value.clone()
                dist.all_reduce(value, op=dist.ReduceOp.SUM)
                out[name] = value
        return out

    def _device(self) -> torch.device:
        tensors = [d for d in self._defaults.values() if isinstance(d, torch.Tensor)]
        return tensors[0].device if tensors else torch.device("cpu")


def accumulator_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for sums, float32 where the device has no float64 (Apple's MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
