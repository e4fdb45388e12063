"""Tests for ember/summary.py."""

import re

import pytest
import torch
from torch import nn

from ember.layers import (
    LSTM,
    BatchNorm,
    Conv2D,
    Dense,
    Embedding,
    Flatten,
    Input,
    MaxPool2D,
    materialize,
)
from ember.summary import count_params, describe_layers, summary


def _cnn(with_input: bool = False) -> nn.Sequential:
    layers = [Conv2D(4, 3, activation="relu"), BatchNorm(), MaxPool2D(), Flatten(), Dense(10)]
    return nn.Sequential(*([Input((1, 8, 8))] if with_input else []), *layers)


def _totals(text: str) -> tuple[int, int, int]:
    found = [
        re.search(rf"^{label} params: ([\d,]+)$", text, re.M)
        for label in ("Total", "Trainable", "Non-trainable")
    ]
    return tuple(int(m.group(1).replace(",", "")) for m in found)


def test_summary_totals_match_parameter_count_for_small_cnn():
    model = _cnn()
    text = summary(model, input_shape=(1, 8, 8))
    n = sum(p.numel() for p in model.parameters())
    assert n == 4 * 9 + 4 + 2 * 4 + 4 * 3 * 3 * 10 + 10  # conv + bn (no buffers) + dense
    assert _totals(text) == (n, n, 0)
    rows = describe_layers(model, input_shape=(1, 8, 8))
    assert [r.type for r in rows] == ["Conv2D", "BatchNorm", "MaxPool2D", "Flatten", "Dense"]
    assert [r.output_shape for r in rows] == [
        "(None, 4, 6, 6)",
        "(None, 4, 6, 6)",
        "(None, 4, 3, 3)",
        "(None, 36)",
        "(None, 10)",
    ]
    assert sum(r.params for r in rows) == n
    assert "0 (Conv2D)" in text and "(None, 4, 6, 6)" in text and text.startswith('Model: "')


def test_frozen_layer_counts_as_non_trainable():
    model = _cnn()
    materialize(model, torch.zeros(1, 1, 8, 8))
    model[0].requires_grad_(False)
    frozen = sum(p.numel() for p in model[0].parameters())
    total = sum(p.numel() for p in model.parameters())
    assert _totals(summary(model, input_shape=(1, 8, 8))) == (total, total - frozen, frozen)
    assert count_params(model) == (total - frozen, frozen)


def test_shared_parameters_counted_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert count_params(model) == (12, 0)


def test_summary_without_input_on_lazy_model_raises():
    with pytest.raises(ValueError, match=r"Pass input_shape=.*or call the model once"):
        summary(_cnn())
    with pytest.raises(ValueError, match=r"layers \['0'\]"):
        summary(nn.Sequential(LSTM(4)))


def test_summary_uses_input_layer_shape():
    text = summary(_cnn(with_input=True))
    assert "0 (Input)" in text and "(None, 1, 8, 8)" in text and "(None, 10)" in text


def test_summary_of_built_model_without_input_shows_unknown_shapes():
    model = nn.Sequential(nn.Linear(3, 4))
    rows = describe_layers(model)
    assert [(r.name, r.output_shape, r.params) for r in rows] == [("0", "?", 16)]


def test_tuple_outputs_and_nested_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))
            self.lstm = nn.LSTM(3, 4, batch_first=True)
            self.head = nn.Sequential(nn.Linear(4, 2), nn.ReLU())

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.head(out[:, -1]) * self.scale

    model = Net()
    rows = describe_layers(model, example_input=torch.zeros(5, 6, 3))
    assert [(r.name, r.output_shape) for r in rows] == [
        ("", "(None, 2)"),
        ("lstm", "[(None, 6, 4), [(1, None, 4), (1, None, 4)]]"),
        ("head.0", "(None, 2)"),
        ("head.1", "(None, 2)"),
    ]
    n = sum(p.numel() for p in model.parameters())
    assert (
        sum(r.params for r in rows) == n and _totals(summary(model, torch.zeros(1, 6, 3)))[0] == n
    )


def test_embedding_model_with_long_input():
    model = nn.Sequential(Embedding(20, 6), LSTM(5, return_sequences=True), Dense(2))
    rows = describe_layers(model, input_shape=(7,), dtype=torch.long)
    assert [r.output_shape for r in rows] == ["(None, 7, 6)", "(None, 7, 5)", "(None, 7, 2)"]
    assert [r.params for r in rows] == [120, 4 * (5 * 6 + 5 * 5 + 2 * 5), 12]


def test_summary_keeps_training_mode_and_batchnorm_stats():
    model = _cnn()
    model.train()
    summary(model, input_shape=(1, 8, 8))
    assert model.training and model[1].training
    assert int(model[1].norm.num_batches_tracked) == 0


def test_summary_input_errors():
    with pytest.raises(ValueError, match=r"not both"):
        summary(_cnn(), example_input=torch.zeros(1, 1, 8, 8), input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match=r"`input_shape`.*Received: \(1, -8\)"):
        summary(_cnn(), input_shape=(1, -8))
    with pytest.raises(
        ValueError, match=r"could not run Sequential on input of shape \[\(1, 8\)\]"
    ):
        summary(_cnn(), input_shape=(8,))
