"""Tests for ember/layers/ and ember/activations.py."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parameter import is_lazy

from ember import activations
from ember.layers import (
    GRU,
    LSTM,
    Activation,
    AvgPool2D,
    BatchNorm,
    Conv1D,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Input,
    LayerCallError,
    LayerNorm,
    MaxPool2D,
    Reshape,
    auto_names,
    check_call,
    materialize,
)


def _cnn() -> nn.Sequential:
    return nn.Sequential(
        Input((1, 8, 8)),
        Conv2D(4, 3, activation="relu"),
        BatchNorm(),
        MaxPool2D(),
        Conv2D(6, 3, strides=2, padding="same"),
        Flatten(),
        Dense(5),
        LayerNorm(),
        Dropout(0.2),
    )


@pytest.mark.parametrize(
    "layer, x, expected",
    [
        (Input((3, 4)), torch.zeros(2, 3, 4), (2, 3, 4)),
        (Dense(4, activation="relu"), torch.zeros(2, 3), (2, 4)),
        (Dense(4), torch.zeros(2, 5, 3), (2, 5, 4)),
        (Conv1D(8, 3), torch.zeros(2, 4, 10), (2, 8, 8)),
        (Conv1D(8, 3, padding="same"), torch.zeros(2, 4, 10), (2, 8, 10)),
        (Conv1D(8, 3, strides=2, padding="same"), torch.zeros(2, 4, 11), (2, 8, 6)),
        (Conv2D(16, 3), torch.zeros(2, 1, 8, 8), (2, 16, 6, 6)),
        (Conv2D(16, 3, padding="same"), torch.zeros(2, 1, 8, 8), (2, 16, 8, 8)),
        (Conv2D(16, 4, padding="same"), torch.zeros(2, 1, 8, 8), (2, 16, 8, 8)),
        (Conv2D(16, 3, strides=2), torch.zeros(2, 1, 7, 7), (2, 16, 3, 3)),
        (Conv2D(16, 3, strides=2, padding="same"), torch.zeros(2, 1, 7, 7), (2, 16, 4, 4)),
        (
            Conv2D(16, (1, 3), strides=(1, 2), padding="same"),
            torch.zeros(1, 2, 5, 9),
            (1, 16, 5, 5),
        ),
        (MaxPool2D(), torch.zeros(2, 3, 7, 7), (2, 3, 3, 3)),
        (MaxPool2D(padding="same"), torch.zeros(2, 3, 7, 7), (2, 3, 4, 4)),
        (AvgPool2D(3, strides=1), torch.zeros(2, 3, 7, 7), (2, 3, 5, 5)),
        (AvgPool2D(2, padding="same"), torch.zeros(2, 3, 5, 5), (2, 3, 3, 3)),
        (GlobalAvgPool2D(), torch.zeros(2, 3, 5, 5), (2, 3)),
        (GlobalAvgPool2D(keepdims=True), torch.zeros(2, 3, 5, 5), (2, 3, 1, 1)),
        (Flatten(), torch.zeros(2, 3, 4, 5), (2, 60)),
        (Reshape((3, -1)), torch.zeros(2, 12), (2, 3, 4)),
        (Reshape((2, 2, 3)), torch.zeros(2, 3, 4), (2, 2, 2, 3)),
        (Dropout(0.5), torch.zeros(2, 3), (2, 3)),
        (BatchNorm(), torch.zeros(4, 3), (4, 3)),
        (BatchNorm(), torch.zeros(4, 3, 6), (4, 3, 6)),
        (BatchNorm(), torch.zeros(4, 3, 6, 6), (4, 3, 6, 6)),
        (LayerNorm(), torch.zeros(2, 5, 8), (2, 5, 8)),
        (Embedding(10, 4), torch.zeros(2, 7, dtype=torch.long), (2, 7, 4)),
        (LSTM(8), torch.zeros(2, 5, 3), (2, 8)),
        (LSTM(8, return_sequences=True), torch.zeros(2, 5, 3), (2, 5, 8)),
        (GRU(6), torch.zeros(2, 5, 3), (2, 6)),
        (GRU(6, return_sequences=True), torch.zeros(2, 5, 3), (2, 5, 6)),
        (Activation("softmax"), torch.zeros(2, 3), (2, 3)),
    ],
)
def test_layer_builds_lazily_with_output_shape(layer, x, expected):
    assert tuple(layer(x).shape) == expected
    assert layer.built
    assert layer.extra_repr()
    assert not any(is_lazy(t) for t in layer.state_dict().values())


def test_dense_weight_shape_found_on_first_call():
    layer = Dense(4)
    assert is_lazy(layer.linear.weight) and not layer.built
    layer(torch.zeros(2, 3))
    assert tuple(layer.state_dict()["linear.weight"].shape) == (4, 3)


def test_lstm_unbuilt_until_called():
    layer = LSTM(4)
    assert not layer.built and layer.state_dict() == {}
    layer(torch.zeros(1, 2, 3))
    assert tuple(layer.state_dict()["rnn.weight_ih_l0"].shape) == (16, 3)


def test_lstm_last_step_equals_sequence_tail():
    torch.manual_seed(0)
    seq, last = LSTM(4, return_sequences=True), LSTM(4)
    x = torch.randn(2, 5, 3)
    seq(x)
    last(x)
    last.load_state_dict(seq.state_dict())
    assert torch.allclose(seq(x)[:, -1], last(x))


def test_conv_same_stride_two_pads_like_tensorflow():
    # TF "same" with an odd total puts the extra pixel after: 8 -> ceil(8/2)=4, total pad 1 (0, 1)
    torch.manual_seed(0)
    layer = Conv2D(2, 3, strides=2, padding="same", use_bias=False)
    x = torch.randn(1, 1, 8, 8)
    out = layer(x)
    assert torch.allclose(out, F.conv2d(F.pad(x, [0, 1, 0, 1]), layer.conv.weight, stride=2))
    even = Conv2D(2, 4, padding="same", use_bias=False)  # total pad 3: 1 before, 2 after
    out = even(x)
    assert torch.allclose(out, F.conv2d(F.pad(x, [1, 2, 1, 2]), even.conv.weight))


def test_pool_same_ignores_padding():
    x = torch.ones(1, 1, 5, 5)
    assert torch.equal(AvgPool2D(2, padding="same")(x), torch.ones(1, 1, 3, 3))
    neg = -torch.ones(1, 1, 5, 5)
    assert torch.equal(MaxPool2D(2, padding="same")(neg), -torch.ones(1, 1, 3, 3))


def test_batchnorm_keras_momentum_and_kind():
    layer = BatchNorm(momentum=0.9)
    layer(torch.full((4, 2, 3, 3), 5.0))
    assert layer.kind == "2d"
    assert torch.allclose(layer.norm.running_mean, torch.full((2,), 0.5))
    with pytest.raises(ValueError, match=r"BatchNorm expects 2d input.*\(4, 2\)"):
        layer(torch.zeros(4, 2))


def test_layernorm_normalises_last_dim():
    out = LayerNorm(epsilon=1e-6)(torch.randn(3, 4, 16) * 5 + 2)
    assert torch.allclose(out.mean(-1), torch.zeros(3, 4), atol=1e-5)
    assert torch.allclose(out.std(-1, unbiased=False), torch.ones(3, 4), atol=1e-3)


@pytest.mark.parametrize("load_into_unbuilt", [False, True])
def test_state_dict_round_trip(load_into_unbuilt):
    torch.manual_seed(0)
    example = torch.zeros(1, 1, 8, 8)
    a, b = _cnn(), _cnn()
    materialize(a, example)
    if not load_into_unbuilt:
        materialize(b, example)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(a(x), b(x))


def test_recurrent_state_dict_loads_into_unbuilt_layer():
    torch.manual_seed(0)
    a = nn.Sequential(Embedding(20, 6), LSTM(5, return_sequences=True), GRU(4))
    b = nn.Sequential(Embedding(20, 6), LSTM(5, return_sequences=True), GRU(4))
    ids = torch.randint(0, 20, (2, 7))
    a(ids)
    b.load_state_dict(a.state_dict())
    assert torch.allclose(a(ids), b(ids))


def test_materialize_uses_eval_mode_and_restores_it():
    model = _cnn()
    model.train()
    model[2].eval()
    materialize(model, torch.zeros(1, 1, 8, 8))  # batch of 1 would fail BatchNorm in train mode
    assert model.training and not model[2].training and model[1].training
    assert int(model[2].norm.num_batches_tracked) == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: Dense(units=-3),
            r"Received an invalid value for `units`, expected a positive integer\. "
            r"Received: units=-3$",
        ),
        (lambda: Dense(units=2.5), r"units=2\.5"),
        (lambda: Conv2D(0, 3), r"`filters`.*filters=0"),
        (lambda: Conv2D(4, (3, 3, 3)), r"`kernel_size`.*2 positive integers.*\(3, 3, 3\)"),
        (lambda: Conv1D(4, 3, strides=0), r"`strides`.*strides=0"),
        (lambda: Conv2D(4, 3, padding="full"), r"one of 'valid', 'same'.*padding='full'"),
        (lambda: MaxPool2D(padding="causal"), r"padding='causal'"),
        (lambda: Dropout(1.5), r"`rate`.*\[0\.0, 1\.0\).*rate=1\.5"),
        (lambda: BatchNorm(momentum=2), r"`momentum`.*momentum=2"),
        (lambda: BatchNorm(center=False), r"center=False, scale=True"),
        (lambda: LayerNorm(epsilon=-1), r"epsilon=-1"),
        (lambda: Embedding(0, 4), r"`input_dim`.*input_dim=0"),
        (lambda: LSTM(0), r"`units`.*units=0"),
        (lambda: Reshape((-1, -1)), r"at most one -1.*\(-1, -1\)"),
        (lambda: Input((0, 3)), r"`shape`.*\(0, 3\)"),
        (lambda: Dense(3, activation="relux"), r"Unknown activation 'relux'"),
    ],
)
def test_invalid_constructor_args(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_dense_shape_mismatch_names_layer_and_shapes():
    layer = Dense(10)
    layer(torch.zeros(2, 64))
    with pytest.raises(ValueError, match=r"built for inputs with 64 features.*\(2, 32\)"):
        layer(torch.zeros(2, 32))
    with pytest.raises(LayerCallError, match=r"Layer 'dense_1' \(Dense\).*64 features.*\(2, 32\)"):
        check_call("dense_1", layer, torch.zeros(2, 32))


def test_check_call_wraps_torch_errors_with_expected_shape():
    with pytest.raises(LayerCallError, match=r"'2' \(Linear\).*\(2, 32\).*\(\.\.\., 64\)"):
        check_call("2", nn.Linear(64, 10), torch.zeros(2, 32))
    out = check_call("ok", nn.Linear(64, 10), torch.zeros(2, 64))
    assert out.shape == (2, 10)


def test_check_call_does_not_rewrap_inner_errors():
    inner = nn.Sequential(nn.Linear(4, 3))
    outer = nn.Module()
    outer.forward = lambda x: check_call("inner", inner, x)
    with pytest.raises(LayerCallError, match=r"^Layer 'inner'"):
        check_call("outer", outer, torch.zeros(1, 5))


def test_layer_input_errors():
    conv = Conv2D(4, 3)
    conv(torch.zeros(1, 3, 8, 8))
    with pytest.raises(
        ValueError, match=r"built for 3 input channels.*\(1, 8, 8, 3\).*channels-last"
    ):
        conv(torch.zeros(1, 8, 8, 3))
    with pytest.raises(ValueError, match=r"Conv2D expects 4-D input \(N, C, H, W\).*\(8, 8\)"):
        conv(torch.zeros(8, 8))
    with pytest.raises(ValueError, match=r"Input expected inputs of shape \(None, 1, 8, 8\).*"):
        Input((1, 8, 8))(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"Reshape cannot reshape.*\(2, 12\).*\(5, -1\)"):
        Reshape((5, -1))(torch.zeros(2, 12))
    with pytest.raises(ValueError, match=r"Embedding expects integer ids.*float32"):
        Embedding(5, 2)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"LSTM expects 3-D input \(N, T, C\).*\(2, 3\)"):
        LSTM(4)(torch.zeros(2, 3))


def test_input_allows_none_dims_and_example():
    layer = Input((None, 4), dtype=torch.long)
    assert layer(torch.zeros(2, 9, 4)).shape == (2, 9, 4)
    assert layer.example(3).shape == (3, 1, 4) and layer.example().dtype == torch.long


def test_auto_names_are_keras_like():
    layers = [Conv2D(2, 3), Dense(2), MaxPool2D(), Dense(3), GlobalAvgPool2D(), nn.ReLU()]
    expected = ["conv2d", "dense", "max_pool2d", "dense_1", "global_avg_pool2d", "re_lu"]
    assert auto_names(layers) == expected


@pytest.mark.parametrize(
    "name, cls",
    [
        ("relu", nn.ReLU),
        ("GELU", nn.GELU),
        ("sigmoid", nn.Sigmoid),
        ("tanh", nn.Tanh),
        ("softmax", nn.Softmax),
        ("log_softmax", nn.LogSoftmax),
        ("leaky_relu", nn.LeakyReLU),
        ("elu", nn.ELU),
        ("selu", nn.SELU),
        ("silu", nn.SiLU),
        ("swish", nn.SiLU),
        ("linear", nn.Identity),
        (None, nn.Identity),
    ],
)
def test_activation_lookup(name, cls):
    assert type(activations.get(name)) is cls


def test_activation_values_and_other_identifiers():
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    assert torch.allclose(activations.get("leaky_relu")(x), torch.tensor([[-0.2, 0.0, 2.0]]))
    assert torch.allclose(activations.get("softmax")(x).sum(-1), torch.ones(1))
    module = nn.Tanh()
    assert activations.get(module) is module
    assert type(activations.get(nn.ReLU)) is nn.ReLU
    assert torch.equal(activations.get(torch.abs)(x), x.abs())
    assert torch.equal(Dense(3, activation=torch.abs).activation(x), x.abs())


def test_activation_errors_list_choices_and_echo_input():
    with pytest.raises(
        ValueError, match=r"Unknown activation 'relux'\. Choose one of: .*gelu.*relu"
    ):
        activations.get("relux")
    with pytest.raises(ValueError, match=r"Received: 3 of type int"):
        activations.get(3)
