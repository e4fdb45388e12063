"""Keras-style layers over `torch.nn` with lazy input shapes (channels first, PyTorch's NCHW order).

Every layer is a plain `torch.nn.Module` that finds its input size on the first call. Run one
forward pass (or `materialize(model, example_input)`) before creating an optimizer or reading
`state_dict()` shapes.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from ember.layers import Conv2D, Dense, Flatten, Input, materialize
    >>> model = nn.Sequential(
    ...     Input((1, 8, 8)), Conv2D(16, 3, activation="relu"), Flatten(), Dense(10)
    ... )
    >>> materialize(model, torch.zeros(1, 1, 8, 8))
    >>> model(torch.zeros(4, 1, 8, 8)).shape
    torch.Size([4, 10])
"""

from ember.layers.base import (
    Layer,
    LayerCallError,
    auto_names,
    check_call,
    format_shape,
    materialize,
)
from ember.layers.conv import Conv1D, Conv2D
from ember.layers.core import Activation, Dense, Dropout, Embedding, Flatten, Input, Reshape
from ember.layers.normalization import BatchNorm, LayerNorm
from ember.layers.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from ember.layers.preprocessing import Rescaling, TableEncoder
from ember.layers.recurrent import GRU, LSTM

__all__ = [
    "GRU",
    "LSTM",
    "Activation",
    "AvgPool2D",
    "BatchNorm",
    "Conv1D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalAvgPool2D",
    "Input",
    "Layer",
    "LayerCallError",
    "LayerNorm",
    "MaxPool2D",
    "Rescaling",
    "Reshape",
    "TableEncoder",
    "auto_names",
    "check_call",
    "format_shape",
    "materialize",
]
