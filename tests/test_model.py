import numpy as np
import pytest
import torch
from torch import nn

import ember
from ember import layers


def _mlp():
    return ember.Sequential(
        [layers.Input((4,)), layers.Dense(16, activation="relu"), layers.Dense(3)]
    )


def test_sequential_fit_evaluate_predict(blobs):
    x, y = blobs
    model = _mlp()
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.05)
    history = model.fit(x, y, epochs=5, batch_size=16, validation_split=0.25, verbose=False, seed=0)
    assert len(history.history["loss"]) == 5
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    result = model.evaluate(x, y)
    assert result["accuracy"] > 0.9
    pred = model.predict(x)
    assert isinstance(pred, np.ndarray) and pred.shape == (120, 3)
    assert (pred.argmax(1) == y).mean() == pytest.approx(result["accuracy"], abs=1e-6)


def test_fit_accepts_tensors_datasets_and_loaders(blobs):
    x, y = blobs
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    ds = torch.utils.data.TensorDataset(xt, yt)
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    for data, kwargs in [((xt, yt), {}), ((ds,), {}), ((loader,), {"validation_data": loader})]:
        model = _mlp()
        model.compile("sgd", "cross_entropy", lr=0.1)
        history = model.fit(*data, epochs=1, verbose=False, logger=False, **kwargs)
        assert len(history.epochs) == 1


def test_validation_data_tuple(blobs):
    x, y = blobs
    model = _mlp()
    model.compile("adam", "cross_entropy", ["accuracy"])
    history = model.fit(x[:90], y[:90], validation_data=(x[90:], y[90:]), epochs=1, verbose=False)
    assert "val_accuracy" in history.history


def test_model_subclass_and_custom_train_step(blobs):
    x, y = blobs

    class Net(ember.Model):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 3)
            self.steps = 0

        def forward(self, inp):
            return self.body(inp)

        def train_step(self, batch):
            self.steps += 1
            inp, target = batch
            return {"loss": nn.functional.cross_entropy(self(inp), target)}

    net = Net()
    net.compile("adam", "cross_entropy")
    net.fit(x, y, epochs=2, batch_size=40, verbose=False, logger=False)
    assert net.steps == 6


def test_plain_module_with_trainer(blobs):
    x, y = blobs
    net = ember.compile(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), "adam", "cross_entropy"
    )
    loader = ember.data.make_loader(x, y, batch_size=30, shuffle=True)
    history = ember.Trainer(max_epochs=2, enable_progress_bar=False).fit(net, loader)
    assert len(history.history["loss"]) == 2


def test_summary_prints_totals(capsys):
    model = _mlp()
    text = model.summary()
    assert "Total params: 131" in text  # 4*16+16 + 16*3+3
    assert "Total params" in capsys.readouterr().out


def test_y_of_wrong_length_is_refused():
    model = _mlp()
    model.compile("adam", "cross_entropy")
    with pytest.raises(ValueError, match=r"len\(x\)=10, len\(y\)=9"):
        model.fit(np.zeros((10, 4), np.float32), np.zeros(9, np.int64), verbose=False)


def test_shape_mismatch_names_the_layer():
    model = _mlp()
    model.compile("adam", "cross_entropy")
    with pytest.raises(ValueError, match=r"Input.*\(None, 4\).*received input of shape \(32, 7\)"):
        model.fit(np.zeros((40, 7), np.float32), np.zeros(40, np.int64), verbose=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"optimizer": "adamm", "loss": "mse"}, "Unknown optimizer 'adamm'. Choose one of: adam"),
        ({"loss": "crossentropy"}, "Unknown loss 'crossentropy'. Choose one of: cross_entropy"),
        ({"loss": "mse", "metrics": ["acc"]}, "Unknown metric 'acc'. Choose one of: accuracy"),
        ({}, "compile\\(\\) needs a loss"),
    ],
)
def test_compile_rejects_unknown_names(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _mlp().compile(**kwargs)


def test_fit_without_compile_says_how():
    with pytest.raises(RuntimeError, match="model.compile"):
        _mlp().fit(np.zeros((8, 4), np.float32), np.zeros(8, np.int64), verbose=False)


def test_nan_loss_stops_with_message():
    model = _mlp()
    model.compile("sgd", "mse")
    x = np.full((8, 4), np.nan, np.float32)
    with pytest.raises(
        FloatingPointError, match=r"loss is nan at epoch 1, batch 0.*terminate_on_nan"
    ):
        model.fit(x, np.zeros((8, 3), np.float32), verbose=False)


def test_nan_loss_can_be_tolerated():
    model = _mlp()
    model.compile("sgd", "mse")
    x = np.full((8, 4), np.nan, np.float32)
    history = model.fit(x, np.zeros((8, 3), np.float32), verbose=False, terminate_on_nan=False)
    assert np.isnan(history.history["loss"][0])


def test_sequential_config_round_trip():
    model = ember.Sequential(
        [
            layers.Input((1, 8, 8)),
            layers.Conv2D(4, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )
    clone = ember.Sequential.from_config(model.get_config())
    clone.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(model(x), clone(x))


def test_predict_returns_raw_outputs_and_probabilities_on_request(blobs):
    x, y = blobs
    model = ember.Sequential([layers.Input((4,)), layers.Dense(3)])
    model.compile("adam", "cross_entropy")
    raw = model.predict(x[:8])
    assert not np.allclose(raw.sum(axis=1), 1)
    expected = torch.from_numpy(raw).softmax(-1).numpy()
    assert np.allclose(model.predict(x[:8], activation="softmax"), expected, atol=1e-6)
    assert np.allclose(model.predict_proba(x[:8]), expected, atol=1e-6)
    assert np.allclose(
        model.predict(x[:8], activation="sigmoid"), 1 / (1 + np.exp(-raw)), atol=1e-6
    )
    with pytest.raises(ValueError, match="Unknown activation 'relu' for predict. Choose one of"):
        model.predict(x[:8], activation="relu")


def test_predict_proba_of_one_logit_is_its_sigmoid():
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    model = ember.Sequential([layers.Input((2,)), layers.Dense(1)])
    raw = model.predict(x)
    assert np.allclose(model.predict_proba(x), 1 / (1 + np.exp(-raw)), atol=1e-6)
