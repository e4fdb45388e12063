"""Pooling over `(N, C, H, W)` input (channels first): MaxPool2D, AvgPool2D, GlobalAvgPool2D."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ember.layers.base import Layer, _check_choice, _check_int_tuple
from ember.layers.conv import _PADDINGS, _same_padding

__all__ = ["AvgPool2D", "GlobalAvgPool2D", "MaxPool2D"]


def _check_4d(name: str, x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(
            f"{name} expects 4-D input (N, C, H, W) (channels first), but received input of "
            f"shape {tuple(x.shape)}."
        )


class _Pool2D(Layer):
    def __init__(
        self,
        pool_size: int | tuple[int, int] = 2,
        strides: int | tuple[int, int] | None = None,
        padding: str = "valid",
    ) -> None:
        super().__init__()
        self.pool_size = _check_int_tuple("pool_size", pool_size, 2)
        self.strides = (
            self.pool_size if strides is None else _check_int_tuple("strides", strides, 2)
        )
        self.padding = _check_choice("padding", padding, _PADDINGS)

    def _pads(self, x: torch.Tensor) -> list[int]:
        return _same_padding(tuple(x.shape[2:]), self.pool_size, self.strides)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, strides={self.strides}, padding={self.padding!r}"


class MaxPool2D(_Pool2D):
    """Max over `pool_size` windows of `(N, C, H, W)` input (channels first).

    Args:
        pool_size: int or `(ph, pw)`.
        strides: int, `(sh, sw)` or `None` (= `pool_size`).
        padding: "valid" or "same" (output `ceil(H / sh) x ceil(W / sw)`; padding never wins).

    Shape:
        Input `(N, C, H, W)`, output `(N, C, H_out, W_out)`.

    Example:
        >>> MaxPool2D()(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 3, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("MaxPool2D", x)
        if self.padding == "same":
            x = F.pad(x, self._pads(x), value=float("-inf"))
        return F.max_pool2d(x, self.pool_size, self.strides)


class AvgPool2D(_Pool2D):
    """Mean over `pool_size` windows of `(N, C, H, W)` input (channels first).

    Args:
        pool_size: int or `(ph, pw)`.
        strides: int, `(sh, sw)` or `None` (= `pool_size`).
        padding: "valid" or "same"; with "same", padded cells are left out of the mean (as Keras).

    Shape:
        Input `(N, C, H, W)`, output `(N, C, H_out, W_out)`.

    Example:
        >>> AvgPool2D(2, padding="same")(torch.ones(1, 1, 5, 5)).shape
        torch.Size([1, 1, 3, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("AvgPool2D", x)
        if self.padding == "valid":
            return F.avg_pool2d(x, self.pool_size, self.strides)
        pads = self._pads(x)
        total = F.avg_pool2d(F.pad(x, pads), self.pool_size, self.strides)
        # fraction of each window that is real input, so the mean ignores the padding
        ones = torch.ones_like(x[:1, :1])
        coverage = F.avg_pool2d(F.pad(ones, pads), self.pool_size, self.strides)
        return total / coverage


class GlobalAvgPool2D(Layer):
    """Mean over the spatial dims of `(N, C, H, W)` input: `(N, C)` (or `(N, C, 1, 1)`).

    Args:
        keepdims: keep the spatial dims with size 1.

    Example:
        >>> GlobalAvgPool2D()(torch.zeros(2, 16, 5, 5)).shape
        torch.Size([2, 16])
    """

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = keepdims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_4d("GlobalAvgPool2D", x)
        return x.mean(dim=(2, 3), keepdim=self.keepdims)

    def extra_repr(self) -> str:
        return f"keepdims={self.keepdims}"
