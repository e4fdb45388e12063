import io
import re
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import layers
from ember.train.callbacks import CallbackError
from ember.train.progress import ProgressBar, format_logs, render_bar


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


class _TtyBytes(io.BytesIO):
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


def _screen(text):
    """What a terminal shows: each line's text after its last carriage return."""
    return [line.split("\r")[-1] for line in text.split("\n")]


def test_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "100")  # the stream has no terminal size: $COLUMNS is read
    stream = _Tty()
    _trainer([ProgressBar(stream=stream, refresh_interval=0.0)]).fit(_model(), _data())
    text = stream.getvalue()
    # Redrawn in place after every step (refresh_interval=0): bar, count, time, ETA, loss.
    bars = re.findall(r"\rEpoch 1/2 (━*)(─*) (\d)/4 \d:\d\d:\d\d<\d:\d\d:\d\d loss: \d", text)
    assert [int(count) for *_, count in bars] == [1, 2, 3, 4]
    assert [len(done) for done, *_ in bars] == [8, 15, 22, 30]  # filled in proportion
    # Each finished epoch replaces its bar with one line; nothing is left of the bars.
    screen = _screen(text)
    assert len(screen) == 3 and screen[2] == ""
    for epoch, line in enumerate(screen[:2]):
        assert re.fullmatch(
            rf"Epoch {epoch + 1}/2 - \d+\.\ds - loss: [\d.]+ - accuracy: [\d.]+ - lr: 0.1", line
        )
    *_, last_bar, erased, _ = text.split("\n")[0].split("\r")
    assert last_bar.startswith("Epoch 1/2 ━") and erased == " " * len(last_bar)


def test_a_thread_redraws_the_bar_and_a_step_pays_nothing(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "100")
    stream = _Tty()
    bar = ProgressBar(stream=stream, refresh_interval=0.01)
    assert not bar.uses_hook("on_train_batch_end")  # the loop never calls the bar per step

    class WaitForBar(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            deadline = time.monotonic() + 10
            # The loop waits after step 2 of 4 of each epoch until the thread has drawn it.
            while batch_idx == 1 and "2/4" not in stream.getvalue().split("\n")[-1]:
                assert time.monotonic() < deadline, "the bar was not redrawn"
                time.sleep(0.002)

    _trainer([bar, WaitForBar()]).fit(_model(), _data())
    text = stream.getvalue()
    for epoch in (1, 2):
        assert re.search(
            rf"\rEpoch {epoch}/2 ━{{15}}─{{15}} 2/4 \d:\d\d:\d\d<\d:\d\d:\d\d loss: ", text
        )
    screen = _screen(text)
    assert len(screen) == 3 and screen[2] == ""  # each bar replaced by its epoch's line
    assert "ember-progress" not in [t.name for t in threading.enumerate()]  # ended with fit


def test_bar_is_erased_when_training_fails(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")

    class Fail(ember.Callback):
        def on_train_batch_end(self, trainer, module, logs, batch_idx):
            raise RuntimeError("stop here")

    stream = _Tty()
    bar = ProgressBar(stream=stream, refresh_interval=0.0)
    with pytest.raises(CallbackError, match="Callback Fail failed in on_train_batch_end"):
        _trainer([bar, Fail()]).fit(_model(), _data())
    assert "\rEpoch 1/2 " in stream.getvalue()  # the bar was drawn
    assert _screen(stream.getvalue()) == [""]  # and erased: the error starts on an empty line


def test_an_ascii_terminal_gets_an_ascii_bar(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("COLUMNS", "100")
    stream = io.TextIOWrapper(_TtyBytes(), encoding="ascii", write_through=True)
    _trainer([ProgressBar(stream=stream, refresh_interval=0.0)]).fit(_model(), _data())
    text = stream.buffer.getvalue().decode("ascii")  # every character encoded
    assert re.search(r"\rEpoch 1/2 #{30} 4/4 ", text)
    assert re.search(r"\rEpoch 1/2 #{8}-{22} 1/4 ", text)


def test_a_dumb_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    stream = _Tty()
    _trainer([ProgressBar(stream=stream, refresh_interval=0.0)]).fit(_model(), _data())
    assert "\r" not in stream.getvalue()
    assert len(stream.getvalue().splitlines()) == 2


def test_render_bar_fits_the_width():
    line = render_bar("Epoch 1/5", 15, 45, 1.2, 2.4, "loss: 0.5", 80)
    assert line == "Epoch 1/5 " + "━" * 10 + "─" * 20 + " 15/45 0:00:01<0:00:02 loss: 0.5"
    assert render_bar("Epoch 1/5", 45, 45, 3723.0, 0.0, "", 80).endswith(" 45/45 1:02:03<0:00:00")
    assert render_bar("Epoch 1/5", 15, 45, 1.2, 2.4, "", 80, chars="#-").startswith(
        "Epoch 1/5 " + "#" * 10 + "-" * 20 + " 15/45"
    )
    # No room for a bar of 10: left out; the line is cut at the width.
    assert render_bar("Epoch 1/5", 15, 45, 1.2, 2.4, "loss: 0.5", 40) == (
        "Epoch 1/5 15/45 0:00:01<0:00:02 loss: 0."
    )
    # A loader without a length: a count, no bar, no ETA.
    assert render_bar("Epoch 1/?", 15, None, 1.2, None, "loss: 0.5", 80) == (
        "Epoch 1/? 15 0:00:01 loss: 0.5"
    )


def test_refresh_interval_must_be_seconds_not_negative():
    with pytest.raises(ValueError, match="refresh_interval.*Received: refresh_interval=-1"):
        ProgressBar(refresh_interval=-1)
