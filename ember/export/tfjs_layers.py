"""ember's Keras-style layers as TF.js Layers configs, with PyTorch's weight layouts converted.

Each converter turns one ember layer into TF.js layers (a ``class_name``, a Keras-style ``config``
and the weights in TF.js order) and back (TF.js weights into the torch module). Layouts:

- ``Dense``: torch ``(out, in)`` -> TF ``(in, out)``.
- ``Conv2D``: torch ``(out, in, kh, kw)`` -> TF ``(kh, kw, in, out)``; inputs stay NCHW
  (``data_format: channels_first``), so ``Flatten`` keeps PyTorch's order.
- ``Conv1D``: torch ``(out, in, k)`` -> TF ``(k, in, out)``, run channels-last between two
  ``Permute`` layers (TF.js's channels-first conv1d returns channels-last).
- ``LSTM``: the gate order is the same (input, forget, cell, output); TF keeps one bias, the sum
  of torch's ``b_ih + b_hh``, so importing puts it all in ``b_ih``.
- ``GRU``: TF.js has no ``reset_after`` GRU (torch's formula), so the bundle registers
  ``EmberGRU`` (``ember_tfjs.js``), a trainable layer that computes exactly what torch does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ember.export.errors import ExportError

__all__ = ["TfjsLayer", "from_tfjs", "to_tfjs"]

TfjsLayer = tuple[str, dict, list[np.ndarray]]

_ACTIVATIONS = {
    nn.Identity: "linear",
    nn.ReLU: "relu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.SiLU: "swish",
}


def to_tfjs(layer: nn.Module, name: str, input_shape: tuple[int, ...] = ()) -> list[TfjsLayer]:
    """TF.js layers computing ``layer`` (an ember layer), with its weights converted.

    Args:
        layer: the ember layer, built.
        name: its name in the model (the TF.js layer holding its weights gets the same name).
        input_shape: the layer's input shape without the batch dimension.

    Raises:
        ExportError: the layer (or its activation) has no TF.js equivalent, naming it.
    """
    kind = type(layer).__name__
    convert = _CONVERTERS.get(kind)
    if convert is None:
        raise ExportError(
            f"Layer {name!r} ({kind}) has no TF.js equivalent. The tfjs target takes models made "
            f"of: {', '.join(sorted(_CONVERTERS))}."
        )
    return convert[0](layer, name, tuple(input_shape))


def from_tfjs(layer: nn.Module, name: str, weights: list[np.ndarray]) -> None:
    """Load TF.js weights (in the order :func:`to_tfjs` wrote them) into ``layer``, in place."""
    _CONVERTERS[type(layer).__name__][1](layer, name, weights)


# -- converters: (to_tfjs, from_tfjs) per ember layer class --------------------------------------


def _np(t: torch.Tensor | None) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _activation(module: nn.Module, name: str) -> tuple[str, list[TfjsLayer]]:
    """The activation as a config string, or as an extra layer (LeakyReLU, Softmax)."""
    if isinstance(module, nn.Softmax) and module.dim in (-1, None):
        return "softmax", []
    if isinstance(module, nn.LeakyReLU):
        return "linear", [
            ("LeakyReLU", {"name": f"{name}_act", "alpha": module.negative_slope}, [])
        ]
    if isinstance(module, nn.GELU):
        return ("gelu_new" if module.approximate == "tanh" else "gelu"), []
    for cls, tf_name in _ACTIVATIONS.items():
        if type(module) is cls:
            return tf_name, []
    raise ExportError(
        f"Layer {name!r} uses the activation {module!r}, which has no TF.js equivalent. "
        f"Choose one of: {', '.join(sorted(set(_ACTIVATIONS.values())))}, softmax, leaky_relu."
    )


def _set(param: torch.Tensor | None, value: np.ndarray) -> None:
    if param is None:
        return
    value = torch.from_numpy(np.ascontiguousarray(value)).to(param.dtype)
    if tuple(value.shape) != tuple(param.shape):
        raise ExportError(f"weight shape {tuple(value.shape)} does not fit {tuple(param.shape)}")
    with torch.no_grad():
        param.copy_(value)


def _dense_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    act, extra = _activation(layer.activation, name)
    linear = layer.linear
    weights = [_np(linear.weight).T] + ([_np(linear.bias)] if linear.bias is not None else [])
    config = {"name": name, "units": layer.units, "activation": act, "use_bias": len(weights) == 2}
    return [("Dense", config, weights), *extra]


def _dense_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    _set(layer.linear.weight, w[0].T)
    if len(w) > 1:
        _set(layer.linear.bias, w[1])


def _conv_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    act, extra = _activation(layer.activation, name)
    conv = layer.conv
    rank = len(layer.kernel_size)
    order = (2, 3, 1, 0) if rank == 2 else (2, 1, 0)
    weights = [_np(conv.weight).transpose(order)]
    if conv.bias is not None:
        weights.append(_np(conv.bias))
    config = {
        "name": name,
        "filters": layer.filters,
        "kernel_size": list(layer.kernel_size),
        "strides": list(layer.strides),
        "padding": layer.padding,
        "activation": act,
        "use_bias": conv.bias is not None,
    }
    if rank == 2:
        return [("Conv2D", {**config, "data_format": "channels_first"}, weights), *extra]
    # (N, C, L) -> (N, L, C) -> conv1d -> (N, C, L)
    permute = ("Permute", {"name": f"{name}_to_nlc", "dims": [2, 1]}, [])
    back = ("Permute", {"name": f"{name}_to_ncl", "dims": [2, 1]}, [])
    return [permute, ("Conv1D", config, weights), *extra, back]


def _conv_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    order = (3, 2, 0, 1) if w[0].ndim == 4 else (2, 1, 0)
    _set(layer.conv.weight, w[0].transpose(order))
    if len(w) > 1:
        _set(layer.conv.bias, w[1])


def _pool_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    cls = {"MaxPool2D": "MaxPooling2D", "AvgPool2D": "AveragePooling2D"}[type(layer).__name__]
    config = {
        "name": name,
        "pool_size": list(layer.pool_size),
        "strides": list(layer.strides),
        "padding": layer.padding,
        "data_format": "channels_first",
    }
    return [(cls, config, [])]


def _global_pool_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    if layer.keepdims:
        raise ExportError(f"Layer {name!r} (GlobalAvgPool2D with keepdims=True) has no TF.js form")
    return [("GlobalAveragePooling2D", {"name": name, "data_format": "channels_first"}, [])]


def _batchnorm_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    norm = layer.norm
    affine = norm.weight is not None
    weights = [_np(norm.weight), _np(norm.bias)] if affine else []
    weights += [_np(norm.running_mean), _np(norm.running_var)]
    config = {
        "name": name,
        "axis": -1,
        "momentum": layer.momentum,
        "epsilon": layer.epsilon,
        "center": affine,
        "scale": affine,
    }
    if len(shape) <= 1:
        return [("BatchNormalization", config, weights)]
    # TF.js's batch norm on axis 1 of a 3-D/4-D input is wrong: normalise channels-last instead.
    rank = len(shape)
    to_last = list(range(2, rank + 1)) + [1]
    back = [rank] + list(range(1, rank))
    return [
        ("Permute", {"name": f"{name}_to_last", "dims": to_last}, []),
        ("BatchNormalization", config, weights),
        ("Permute", {"name": f"{name}_to_first", "dims": back}, []),
    ]


def _batchnorm_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    norm = layer.norm
    if norm.weight is not None:
        _set(norm.weight, w[0])
        _set(norm.bias, w[1])
        w = w[2:]
    _set(norm.running_mean, w[0])
    _set(norm.running_var, w[1])


def _layernorm_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    weights = [_np(p) for p in (layer.weight, layer.bias) if p is not None]
    config = {
        "name": name,
        "axis": -1,
        "epsilon": layer.epsilon,
        "center": layer.bias is not None,
        "scale": layer.weight is not None,
    }
    return [("LayerNormalization", config, weights)]


def _layernorm_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    for param, value in zip(params, w):
        _set(param, value)


def _embedding_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    config = {"name": name, "input_dim": layer.input_dim, "output_dim": layer.output_dim}
    return [("Embedding", config, [_np(layer.embedding.weight)])]


def _embedding_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    _set(layer.embedding.weight, w[0])


def _lstm_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    rnn = layer.rnn
    weights = [
        _np(rnn.weight_ih_l0).T,
        _np(rnn.weight_hh_l0).T,
        _np(rnn.bias_ih_l0) + _np(rnn.bias_hh_l0),
    ]
    config = {
        "name": name,
        "units": layer.units,
        "return_sequences": layer.return_sequences,
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
    }
    return [("LSTM", config, weights)]


def _lstm_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    rnn = layer.rnn
    _set(rnn.weight_ih_l0, w[0].T)
    _set(rnn.weight_hh_l0, w[1].T)
    _set(rnn.bias_ih_l0, w[2])
    _set(rnn.bias_hh_l0, np.zeros_like(w[2]))


def _gru_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    rnn = layer.rnn
    weights = [
        _np(rnn.weight_ih_l0).T,
        _np(rnn.weight_hh_l0).T,
        _np(rnn.bias_ih_l0),
        _np(rnn.bias_hh_l0),
    ]
    config = {"name": name, "units": layer.units, "return_sequences": layer.return_sequences}
    return [("EmberGRU", config, weights)]


def _gru_from(layer: Any, name: str, w: list[np.ndarray]) -> None:
    rnn = layer.rnn
    _set(rnn.weight_ih_l0, w[0].T)
    _set(rnn.weight_hh_l0, w[1].T)
    _set(rnn.bias_ih_l0, w[2])
    _set(rnn.bias_hh_l0, w[3])


def _simple(cls: str, **fields: str):
    def convert(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
        config = {"name": name, **{k: _json(getattr(layer, v)) for k, v in fields.items()}}
        return [(cls, config, [])]

    return convert


def _activation_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    act, extra = _activation(layer.fn, name)
    return extra or [("Activation", {"name": name, "activation": act}, [])]


def _input_to(layer: Any, name: str, shape: tuple = ()) -> list[TfjsLayer]:
    return []  # the first layer carries batch_input_shape instead


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _none(layer: Any, name: str, w: list[np.ndarray]) -> None:
    return None


_CONVERTERS = {
    "Input": (_input_to, _none),
    "Dense": (_dense_to, _dense_from),
    "Conv1D": (_conv_to, _conv_from),
    "Conv2D": (_conv_to, _conv_from),
    "MaxPool2D": (_pool_to, _none),
    "AvgPool2D": (_pool_to, _none),
    "GlobalAvgPool2D": (_global_pool_to, _none),
    "Flatten": (_simple("Flatten"), _none),
    "Reshape": (_simple("Reshape", target_shape="target_shape"), _none),
    "Dropout": (_simple("Dropout", rate="rate"), _none),
    "BatchNorm": (_batchnorm_to, _batchnorm_from),
    "LayerNorm": (_layernorm_to, _layernorm_from),
    "Embedding": (_embedding_to, _embedding_from),
    "LSTM": (_lstm_to, _lstm_from),
    "GRU": (_gru_to, _gru_from),
    "Activation": (_activation_to, _none),
}
