"""Convolution layers, channels first (PyTorch's NCW / NCHW order): Conv1D and Conv2D."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from ember import activations
from ember.layers.base import Layer, _check_choice, _check_int_tuple, _check_positive_int

__all__ = ["Conv1D", "Conv2D"]

_PADDINGS = ("valid", "same")


def _same_padding(
    sizes: tuple[int, ...], kernel: tuple[int, ...], strides: tuple[int, ...]
) -> list[int]:
    """`F.pad` amounts giving Keras/TF "same" output size `ceil(size / stride)` per spatial dim.

    The extra pixel of an odd total goes after (right/bottom), as in TensorFlow.
    Returns the list in `F.pad` order: last dimension first, `(before, after)` for each.
    """
    pads: list[int] = []
    for size, k, s in reversed(list(zip(sizes, kernel, strides))):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return pads


class _Conv(Layer):
    """Shared code of Conv1D/Conv2D: a torch lazy conv plus optional TF-style "same" padding."""

    rank = 0
    layout = ""
    _lazy_conv: type[nn.Module] = nn.Module

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, ...],
        strides: int | tuple[int, ...] = 1,
        padding: str = "valid",
        activation: Any = None,
        use_bias: bool = True,
    ) -> None:
        super().__init__()
        self.filters = _check_positive_int("filters", filters)
        self.kernel_size = _check_int_tuple("kernel_size", kernel_size, self.rank)
        self.strides = _check_int_tuple("strides", strides, self.rank)
        self.padding = _check_choice("padding", padding, _PADDINGS)
        # With stride 1 and odd kernels torch's own padding="same" is exact (and export friendly).
        # Otherwise we pad in forward, TF style: the amount can depend on the input size.
        uneven = any(s > 1 for s in self.strides) or any(k % 2 == 0 for k in self.kernel_size)
        self._pad_in_forward = self.padding == "same" and uneven
        torch_padding = "same" if self.padding == "same" and not self._pad_in_forward else 0
        self.conv = self._lazy_conv(
            filters, self.kernel_size, stride=self.strides, padding=torch_padding, bias=use_bias
        )
        self.activation = activations.get(activation)

    def expected_input(self) -> str:
        w = self.conv.weight
        channels = "C" if is_lazy(w) else str(w.shape[1])
        return f"inputs of shape {self.layout.replace('C', channels, 1)} (channels first)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self._pad_in_forward:
            x = F.pad(x, _same_padding(tuple(x.shape[2:]), self.kernel_size, self.strides))
        return self.activation(self.conv(x))

    def _check_input(self, x: torch.Tensor) -> None:
        name = type(self).__name__
        if x.dim() != self.rank + 2:
            raise ValueError(
                f"{name} expects {self.rank + 2}-D input {self.layout} (channels first, PyTorch "
                f"order), but received input of shape {tuple(x.shape)}."
            )
        w = self.conv.weight
        if not is_lazy(w) and x.shape[1] != w.shape[1]:
            hint = ""
            if x.shape[-1] == w.shape[1]:
                hint = " The input looks channels-last; ember layers use channels first."
            raise ValueError(
                f"{name} was built for {w.shape[1]} input channels (dim 1 of {self.layout}), but "
                f"received input of shape {tuple(x.shape)}.{hint}"
            )

    def extra_repr(self) -> str:
        return (
            f"filters={self.filters}, kernel_size={self.kernel_size}, strides={self.strides}, "
            f"padding={self.padding!r}, use_bias={self.conv.bias is not None}"
        )


class Conv1D(_Conv):
    """1-D convolution over `(N, C, L)` input (channels first); input channels found on first call.

    Args:
        filters: number of output channels.
        kernel_size: int or 1-tuple.
        strides: int or 1-tuple.
        padding: "valid" (no padding) or "same" (output length `ceil(L / strides)`).
        activation: anything `ember.activations.get` accepts.
        use_bias: whether to add a bias.

    Shape:
        Input `(N, C_in, L)`, output `(N, filters, L_out)`.

    Example:
        >>> Conv1D(8, 3, padding="same")(torch.zeros(2, 4, 10)).shape
        torch.Size([2, 8, 10])
    """

    rank = 1
    layout = "(N, C, L)"
    _lazy_conv = nn.LazyConv1d


class Conv2D(_Conv):
    """2-D convolution over `(N, C, H, W)` input (NCHW, channels first); C found on first call.

    Args:
        filters: number of output channels.
        kernel_size: int or `(kh, kw)`.
        strides: int or `(sh, sw)`.
        padding: "valid" (no padding) or "same" (output `ceil(H / sh) x ceil(W / sw)`).
        activation: anything `ember.activations.get` accepts.
        use_bias: whether to add a bias.

    Shape:
        Input `(N, C_in, H, W)`, output `(N, filters, H_out, W_out)`.

    Example:
        >>> Conv2D(16, 3, activation="relu")(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 16, 6, 6])
    """

    rank = 2
    layout = "(N, C, H, W)"
    _lazy_conv = nn.LazyConv2d
