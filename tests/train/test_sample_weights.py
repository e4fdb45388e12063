"""Keras's class_weight and sample_weight in fit."""

import numpy as np
import pytest
import torch

import ember
from ember import layers


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    return x, rng.integers(0, 2, size=64)


def _model():
    torch.manual_seed(0)
    model = ember.Sequential([layers.Input((3,)), layers.Dense(2)])
    model.compile("sgd", "cross_entropy", ["accuracy"], lr=0.1)
    return model


def _fit(model, x, y, **kwargs):
    return model.fit(x, y, epochs=1, batch_size=64, shuffle=False, seed=0, verbose=False,
                     logger=False, enable_checkpointing=False, enable_report=False, **kwargs)  # fmt: skip


def _expected_loss(x, y, w):
    model = _model()
    with torch.no_grad():
        pred = model(torch.from_numpy(x))
    per = torch.nn.functional.cross_entropy(pred, torch.from_numpy(y), reduction="none")
    return float((per * torch.as_tensor(w, dtype=torch.float32)).mean())


def test_sample_weight_multiplies_each_sample_loss():
    x, y = _data()
    w = np.linspace(0.0, 2.0, len(y)).astype(np.float32)
    history = _fit(_model(), x, y, sample_weight=w)
    assert history.history["loss"][0] == pytest.approx(_expected_loss(x, y, w), rel=1e-5)
    unweighted = _fit(_model(), x, y)
    assert unweighted.history["loss"][0] != pytest.approx(history.history["loss"][0], rel=1e-3)


def test_class_weight_weighs_by_target_class_and_follows_a_validation_split():
    x, y = _data()
    history = _fit(_model(), x, y, class_weight={1: 4.0}, validation_split=0.25)
    w = np.where(y[:48] == 1, 4.0, 1.0)
    assert history.history["loss"][0] == pytest.approx(_expected_loss(x[:48], y[:48], w), rel=1e-5)
    assert "val_loss" in history.history and "accuracy" in history.history


def test_sample_weights_follow_a_validation_split_and_the_step_is_restored():
    x, y = _data()
    w = np.arange(64, dtype=np.float32)
    model = _model()
    history = _fit(model, x, y, sample_weight=w, validation_split=0.25)
    assert history.history["loss"][0] == pytest.approx(
        _expected_loss(x[:48], y[:48], w[:48]), rel=1e-5
    )
    assert "train_step" not in vars(model)  # the weighted step was for that fit only


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_weight": [1.0, 2.0]}, "must be a dict"),
        ({"class_weight": {"a": 1.0}}, "class indices"),
        ({"sample_weight": np.ones(3)}, "one weight per sample"),
    ],
)
def test_bad_weights_are_refused_with_the_fix(kwargs, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        _fit(_model(), x, y, **kwargs)


def test_a_loss_vmap_cannot_map_is_weighted_one_sample_at_a_time():
    def picky_mse(pred, target):  # .item() inside: torch.vmap refuses it
        scale = 1.0 if float(pred.detach().abs().sum().item()) >= 0 else 0.0
        return scale * torch.nn.functional.mse_loss(pred[:, 0], target.float())

    x, y = _data()
    model = _model()
    model.compile("sgd", picky_mse, lr=0.1)
    w = np.linspace(0.0, 2.0, len(y)).astype(np.float32)
    history = _fit(model, x, y, sample_weight=w)
    with torch.no_grad():
        pred = _model()(torch.from_numpy(x))[:, 0]
    per = (pred - torch.from_numpy(y).float()) ** 2
    assert history.history["loss"][0] == pytest.approx(
        float((per * torch.from_numpy(w)).mean()), rel=1e-5
    )
