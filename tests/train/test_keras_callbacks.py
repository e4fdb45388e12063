"""Keras's callbacks by their Keras names: ReduceLROnPlateau, LambdaCallback, TerminateOnNaN."""

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.callbacks import LambdaCallback, ReduceLROnPlateau, TerminateOnNaN
from ember.train.callbacks import Callback, CallbackError
from tests.plugins.models import tiny_sequential

N, BATCH = 32, 8  # 4 batches per epoch


def _data(n=N):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)


def _fit(model, callbacks=(), epochs=3, **kwargs):
    trainer = ember.Trainer(
        max_epochs=epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_report=False,
        seed=0,
        **kwargs,
    )
    return trainer, trainer.fit(model, _data())


class _Scores(Callback):
    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, trainer, module, logs):
        logs["score"] = self.values[trainer.current_epoch]


def test_reduce_lr_on_plateau_drops_the_rate_after_patience_epochs_and_keeps_min_lr():
    scores = [1.0, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    reduce = ReduceLROnPlateau(monitor="score", factor=0.5, patience=2, min_lr=0.03)
    trainer, history = _fit(tiny_sequential(lr=0.1), [_Scores(scores), reduce], epochs=7)
    # epochs 3 and 4 do not improve: the rate halves after epoch 4; epochs 5, 6 again: min_lr
    assert history.history["lr"][:4] == pytest.approx([0.1] * 4)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.03)
    assert history.history["lr"][4:6] == pytest.approx([0.05, 0.05])


def test_reduce_lr_on_plateau_state_survives_a_checkpoint():
    reduce = ReduceLROnPlateau(monitor="score", patience=3)
    reduce.best, reduce.wait, reduce.cooldown_counter = 0.25, 2, 1
    other = ReduceLROnPlateau(monitor="score", patience=3)
    other.load_state_dict(reduce.state_dict())
    assert (other.best, other.wait, other.cooldown_counter) == (0.25, 2, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"factor": 1.5}, "factor"), ({"patience": -1}, "patience"), ({"mode": "up"}, "auto, min")],
)
def test_reduce_lr_on_plateau_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReduceLROnPlateau(**kwargs)


def test_reduce_lr_on_plateau_names_a_missing_monitor():
    with pytest.raises(CallbackError, match="ReduceLROnPlateau monitors 'val_loss'"):
        _fit(tiny_sequential(), [ReduceLROnPlateau()], epochs=1)


def test_lambda_callback_calls_functions_with_keras_signatures():
    calls = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: calls.append(("train_begin",)),
        on_epoch_begin=lambda epoch, logs: calls.append(("epoch_begin", epoch)),
        on_batch_end=lambda batch, logs: calls.append(("batch", batch, type(logs["loss"]))),
        on_epoch_end=lambda epoch, logs: calls.append(("epoch_end", epoch, round(logs["loss"], 6))),
        on_train_end=lambda logs: calls.append(("train_end", "loss" in logs)),
    )
    _, history = _fit(tiny_sequential(), [cb], epochs=2)
    assert calls[0] == ("train_begin",)
    assert calls[1] == ("epoch_begin", 0)
    assert calls[2:6] == [("batch", i, float) for i in range(4)]
    assert calls[6] == ("epoch_end", 0, round(history.history["loss"][0], 6))
    assert calls[-1] == ("train_end", True)
    assert len(calls) == 1 + 2 * 6 + 1


def test_lambda_callback_uses_only_the_hooks_given():
    cb = LambdaCallback(on_epoch_end=lambda epoch, logs: None)
    assert cb.uses_hook("on_epoch_end") and not cb.uses_hook("on_train_batch_end")
    with pytest.raises(TypeError, match="on_epoch_end` must be a function"):
        LambdaCallback(on_epoch_end=3)


def _nan_model():
    model = tiny_sequential()
    model.compile("sgd", lambda pred, y: pred.sum() * float("nan"), lr=0.1)
    return model


def test_terminate_on_nan_stops_the_fit_without_an_error():
    seen = []
    watch = LambdaCallback(on_batch_end=lambda b, logs: seen.append(logs["loss"]))
    trainer, history = _fit(_nan_model(), [watch, TerminateOnNaN()], epochs=3)
    assert len(seen) == 1 and math.isnan(seen[0])  # stopped after the first NaN batch
    assert history.epochs == [] and trainer.should_stop
    assert trainer.terminate_on_nan  # the Trainer's own check is back after the fit


def test_without_terminate_on_nan_the_trainer_raises():
    with pytest.raises(FloatingPointError, match="The loss is nan"):
        _fit(_nan_model(), epochs=1)
