import io
import re

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import layers
from ember.train.callbacks import CallbackError
from ember.train.progress import ProgressBar, format_logs


def _model():
    torch.manual_seed(0)
    model = ember.Sequential([layers.Input((4,)), layers.Dense(3)])
    model.compile("sgd", "cross_entropy", ["accuracy"], lr=0.1)
    return model


def _data():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _trainer(callbacks=(), **kwargs):
    kwargs = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_report": False,
        "seed": 0,
        **kwargs,
    }
    return ember.Trainer(max_epochs=2, callbacks=list(callbacks), **kwargs)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_when_the_stream_is_not_a_tty():
    stream = io.StringIO()
    history = _trainer([ProgressBar(stream=stream)]).fit(_model(), _data(), _data())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for epoch, line in enumerate(lines):
        assert line.startswith(f"Epoch {epoch + 1}/2 - ")
        assert re.search(r" - \d+\.\ds - ", line)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert f"{key}: {history.history[key][epoch]:.4g}" in line
    assert "\x1b[" not in stream.getvalue()  # no terminal control codes in logs


def test_plain_lines_leave_out_per_step_and_norm_values():
    assert format_logs({"loss": 0.123456, "step/loss": 1.0, "norm/w": 2.0, "name": "x"}) == (
        "loss: 0.1235"
    )
    assert format_logs({"loss": 1.0, "val_loss": 2.5}) == "loss: 1 - val_loss: 2.5"


def test_the_trainer_adds_one_progress_bar_first():
    trainer = _trainer()
    assert isinstance(trainer.callbacks[0], ProgressBar)
    mine = ProgressBar(stream=io.StringIO())
    trainer = _trainer([mine])
    assert [c for c in trainer.callbacks if isinstance(c, ProgressBar)] == [mine]


def test_progress_bar_off(capsys):
    trainer = _trainer(enable_progress_bar=False)
    assert not any(isinstance(c, ProgressBar) for c in trainer.callbacks)
    trainer.fit(_model(), _data())
    assert "Epoch" not in capsys.readouterr().out


def test_default_bar_writes_to_stdout(capsys):
    _trainer().fit(_model(), _data())
    assert capsys.readouterr().out.count("Epoch ") == 2


def test_model_fit_verbose_false_is_silent(capsys):
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    _model().fit(
        x, y, epochs=1, verbose=False, logger=False, enable_checkpointing=False, enable_report=False
    )
    assert capsys.readouterr().out == ""


def test_rich_bar_on_a_terminal(monkeypatch):
    for var in ("TERM", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    stream = _Tty()
    bar = ProgressBar(stream=stream, refresh_interval=0.0)
    _trainer([bar]).fit(_model(), _data())
    text = stream.getvalue()
    assert "Epoch 1/2" in text and "Epoch 2/2" in text
    assert "4/4" in text  # the batch counter reached the end of the epoch
    assert "loss:" in text
    # Each finished epoch stays as one line; only the running epoch has a live bar.
    assert re.search(r"Epoch 1/2 - \d+\.\ds - loss: ", text)
    assert re.search(r"Epoch 2/2 - \d+\.\ds - loss: ", text)
    assert bar._progress is None  # stopped at the end of fit


def test_rich_bar_stops_when_training_fails(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")

    class Fail(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            raise RuntimeError("stop here")

    bar = ProgressBar(stream=_Tty())
    with pytest.raises(CallbackError, match="Callback Fail failed in on_train_batch_end"):
        _trainer([bar, Fail()]).fit(_model(), _data())
    assert bar._progress is None


def test_refresh_interval_must_be_seconds_not_negative():
    with pytest.raises(ValueError, match="refresh_interval.*Received: refresh_interval=-1"):
        ProgressBar(refresh_interval=-1)
