"""Recurrent layers over batch-first sequences `(N, T, C)`: LSTM and GRU."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ember.layers.base import Layer, _check_positive_int

__all__ = ["GRU", "LSTM"]


class _Recurrent(Layer):
    """Shared code: a torch RNN created on first call (or when a state dict is loaded)."""

    _built_by_call = True
    _rnn_class: type[nn.RNNBase] = nn.RNNBase

    def __init__(self, units: int, return_sequences: bool = False) -> None:
        super().__init__()
        self.units = _check_positive_int("units", units)
        self.return_sequences = bool(return_sequences)
        self.rnn: nn.RNNBase | None = None

    def build(self, input_shape: torch.Size, device: torch.device, dtype: torch.dtype) -> None:
        """Create the torch RNN for `input_shape[-1]` input features."""
        self.rnn = self._rnn_class(
            input_shape[-1], self.units, batch_first=True, device=device, dtype=dtype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        if x.dim() != 3:
            raise ValueError(
                f"{name} expects 3-D input (N, T, C) (batch first), but received input of shape "
                f"{tuple(x.shape)}."
            )
        self._build_once(x)
        if x.shape[-1] != self.rnn.input_size:
            raise ValueError(
                f"{name} was built for {self.rnn.input_size} input features (last dimension), but "
                f"received input of shape {tuple(x.shape)}."
            )
        out, _ = self.rnn(x)  # (N, T, units)
        return out if self.return_sequences else out[:, -1]

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Build from the saved weight shapes so an unbuilt layer can load a state dict.
        key = prefix + "rnn.weight_ih_l0"
        if self.rnn is None and key in state_dict:
            weight = state_dict[key]
            self.build(torch.Size([weight.shape[1]]), torch.device("cpu"), weight.dtype)
            self._is_built = True
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"units={self.units}, return_sequences={self.return_sequences}"


class LSTM(_Recurrent):
    """Long short-term memory layer over `(N, T, C)` sequences; `C` found on first call.

    Args:
        units: size of the hidden state (output features).
        return_sequences: return the output at every step `(N, T, units)` instead of the last
            step only `(N, units)`.

    Example:
        >>> LSTM(8, return_sequences=True)(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 5, 8])
    """

    _rnn_class = nn.LSTM


class GRU(_Recurrent):
    """Gated recurrent unit layer over `(N, T, C)` sequences; `C` found on first call.

    Args:
        units: size of the hidden state (output features).
        return_sequences: return every step `(N, T, units)` instead of the last `(N, units)`.

    Example:
        >>> GRU(8)(torch.zeros(2, 5, 3)).shape
        torch.Size([2, 8])
    """

    _rnn_class = nn.GRU
