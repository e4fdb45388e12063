"""Device choice and mixed precision: which device, which autocast, whether a grad scaler."""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["resolve_device", "Precision", "ACCELERATORS", "PRECISIONS"]

ACCELERATORS = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")


def resolve_device(accelerator: str, local_rank: int = 0) -> torch.device:
    """Map an accelerator name to a `torch.device` (CUDA picks the device of `local_rank`).

    Example:
        >>> resolve_device("auto")
        device(type='cpu')
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"Unknown accelerator {accelerator!r}. Choose one of: {', '.join(ACCELERATORS)}"
        )
    if accelerator == "auto":
        if torch.cuda.is_available():
            accelerator = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            accelerator = "mps"
        else:
            accelerator = "cpu"
    if accelerator == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("accelerator='cuda' was requested but no CUDA device is available.")
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("accelerator='mps' was requested but MPS is not available.")
    return torch.device(accelerator)


class Precision:
    """Autocast and gradient scaling for one precision setting on one device.

    Args:
        precision: "32", "16-mixed" or "bf16-mixed" (16 and "bf16" are accepted as aliases).
        device: the training device.

    Example:
        >>> p = Precision("bf16-mixed", torch.device("cpu"))
        >>> with p.autocast(): ...
    """

    def __init__(self, precision: Any, device: torch.device) -> None:
        aliases = {"32": "32", 32: "32", "32-true": "32", "16": "16-mixed", 16: "16-mixed"}
        aliases.update({"bf16": "bf16-mixed", "16-mixed": "16-mixed", "bf16-mixed": "bf16-mixed"})
        if precision not in aliases:
            raise ValueError(
                f"Unknown precision {precision!r}. Choose one of: {', '.join(PRECISIONS)}"
            )
        self.name = aliases[precision]
        self.device = device
        self.dtype = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}[
            self.name
        ]
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        enabled = self.name == "16-mixed" and device.type in ("cuda", "cpu")
        self.scaler = torch.amp.GradScaler(device.type, enabled=enabled) if enabled else None
        if self.scaler is None:  # the plain calls, without a Python wrapper each step
            self.backward = torch.Tensor.backward
            self.step = operator.methodcaller("step")  # step(optimizer): optimizer.step()

    def autocast(self):
        """A context manager running the forward pass in the mixed dtype (a no-op for "32")."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def wrap_step(self, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """`step` running under `autocast()`; for "32", `step` itself (no context per batch)."""
        if self.dtype is None:
            return step

        def autocast_step(batch: Any) -> Any:
            with self.autocast():
                return step(batch)

        return autocast_step

    def backward(self, loss: torch.Tensor) -> None:
        """`loss.backward()`, the loss scaled first in float16 mixed precision."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale (before clipping)."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
