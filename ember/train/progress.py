"""A progress bar for training: ETA, loss and metrics; plain lines when output is not a terminal."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from ember.train.arguments import check_seconds
from ember.train.callbacks import Callback

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["ProgressBar", "format_logs", "render_bar"]

_BAR_WIDTH = 30  # the widest bar, in characters
_BOX_CHARS = "━─"  # the bar's done and to-do characters


def format_logs(logs: dict) -> str:
    """'loss: 0.1234 - val_loss: 0.2345' for numeric values."""
    parts = []
    for k, v in logs.items():
        if isinstance(v, (int, float)) and not k.startswith(("step/", "norm/")):
            parts.append(f"{k}: {v:.4g}")
    return " - ".join(parts)


def render_bar(
    description: str,
    completed: int,
    total: int | None,
    elapsed: float,
    remaining: float | None,
    metrics: str,
    width: int,
    chars: str = _BOX_CHARS,
) -> str:
    """One line of at most `width` characters: description, bar, count, time, metrics.

    The bar is left out when `total` is unknown or the line has no room for it. `chars`: the
    bar's done and to-do characters (`"#-"` for a stream that cannot encode the default).

    Example:
        >>> render_bar("Epoch 1/5", 15, 45, 1.2, 2.4, "loss: 0.5", 80)
        'Epoch 1/5 ━━━━━━━━━━──────────────────── 15/45 0:00:01<0:00:02 loss: 0.5'
    """
    count = f"{completed}/{total}" if total else str(completed)
    eta = "" if remaining is None else f"<{_clock(remaining)}"
    right = f"{count} {_clock(elapsed)}{eta} {metrics}".rstrip()
    bar_width = min(_BAR_WIDTH, width - len(description) - len(right) - 2)
    if not total or bar_width < 10:
        return f"{description} {right}"[:width]
    filled = round(bar_width * min(completed, total) / total)
    done, todo = chars
    return f"{description} {done * filled}{todo * (bar_width - filled)} {right}"


class ProgressBar(Callback):
    """Show progress per epoch. Added by the Trainer unless `enable_progress_bar=False`.

    In a terminal the running epoch is one line redrawn in place, e.g.
    `Epoch 3/15 ━━━━━━━━━━━━━━━━──────── 23/45 0:00:01<0:00:01 loss: 0.1234`,
    which gives way to the epoch's line when it ends:
    `Epoch 3/15 - 2.1s - loss: 0.1234 - val_loss: 0.2345`. Anywhere else (a log file, a pipe,
    CI, `TERM=dumb`) only the epoch lines are written. Only the first process of a
    distributed run writes.

    Args:
        refresh_interval: seconds between redraws, done by a thread while an epoch trains: a
            training step pays nothing for the bar, a redraw (one short line) tens of
            microseconds. 0 redraws after every step, from the loop.
        stream: where to write; default stdout.

    Example:
        >>> ember.Trainer(callbacks=[ProgressBar(refresh_interval=0.5)])
    """

    def __init__(self, refresh_interval: float = 0.2, stream: Any = None) -> None:
        self.refresh_interval = check_seconds("refresh_interval", refresh_interval)
        self.stream = stream
        self._out: Any = None  # the stream while fit runs on the first process, else None
        self._live = False  # whether the bar is drawn (the stream is a terminal)
        self._drawn = 0  # characters of the bar now on screen (0: none)
        self._width: int | None = None  # the terminal's, read at the epoch's first redraw
        self._chars = _BOX_CHARS
        self._epoch_start = 0.0
        self._first_batch = 0
        self._training = False  # an epoch's training batches run: the thread redraws
        self._lock = threading.Lock()  # the redraw thread and the loop's hooks both write
        self._stop: threading.Event | None = None  # set to end the redraw thread
        self._thread: threading.Thread | None = None

    def uses_hook(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # a step pays for the bar only when it redraws each step
            return self.refresh_interval == 0
        return super().uses_hook(hook)

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        self._out = (self.stream or sys.stdout) if trainer.is_global_zero else None
        self._live = self._out is not None and _is_terminal(self._out)
        self._chars = _bar_chars(self._out)
        self._end_thread()  # one thread per bar, also when a fit ended without on_fit_end
        if self._live and self.refresh_interval > 0:
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._redraw, args=(trainer, self._stop), name="ember-progress", daemon=True
            )
            self._thread.start()

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        with self._lock:
            self._epoch_start = time.monotonic()
            self._first_batch = trainer.batch_in_epoch  # a resumed epoch starts part-way
            self._width = None  # read again: the window may have been resized
            self._training = True

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if self._live:  # refresh_interval=0: after every step
            elapsed = time.monotonic() - self._epoch_start
            self._draw(trainer, batch_idx + 1, elapsed, logs["loss"].item())

    def on_train_epoch_end(self, trainer: Trainer, module: Any) -> None:
        with self._lock:  # the bar stays as last drawn until the epoch's line replaces it
            self._training = False

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        if self._out is None:
            return
        seconds = time.monotonic() - self._epoch_start
        self._erase()
        self._out.write(f"{_title(trainer)} - {seconds:.1f}s - {format_logs(logs)}\n")
        self._out.flush()

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        self._end_thread()
        self._erase()

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None:
        self._end_thread()
        self._erase()  # the error's message starts on an empty line

    def _redraw(self, trainer: Trainer, stop: threading.Event) -> None:
        """The redraw thread of a fit: every `refresh_interval` while an epoch trains."""
        while not stop.wait(self.refresh_interval):
            completed, loss = trainer.batch_in_epoch, trainer.loop.step_losses.last
            if not self._training or completed <= self._first_batch or loss is None:
                continue  # between epochs, or no step of this epoch done yet
            loss = float(loss)  # a scalar tensor on an accelerator: read here, not in the loop
            with self._lock:
                if self._training:
                    self._draw(trainer, completed, time.monotonic() - self._epoch_start, loss)

    def _end_thread(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._stop = None

    def _draw(self, trainer: Trainer, completed: int, elapsed: float, loss: float) -> None:
        if self._width is None:
            self._width = _terminal_width(self._out)
        total, done = trainer.num_train_batches, completed - self._first_batch
        remaining = elapsed / done * (total - completed) if total and done > 0 else None
        line = render_bar(
            _title(trainer),
            completed,
            total,
            elapsed,
            remaining,
            f"loss: {loss:.4g}",
            self._width - 1,  # the last column would wrap in some terminals
            self._chars,
        )
        # Back to the line's start, then the new line, spaces over what is left of the old one.
        self._out.write(f"\r{line}{' ' * (self._drawn - len(line))}")
        self._out.flush()
        self._drawn = len(line)

    def _erase(self) -> None:
        """Erase the bar, if drawn: the cursor ends at the start of an empty line."""
        if self._drawn:
            self._out.write(f"\r{' ' * self._drawn}\r")
            self._out.flush()
            self._drawn = 0


def _title(trainer: Trainer) -> str:
    """'Epoch 3/15' (the bar's and the epoch line's start)."""
    return f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs or '?'}"


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") not in ("dumb", "unknown")


def _bar_chars(stream: Any) -> str:
    """Box-drawing characters, or ASCII for a stream whose encoding has none (e.g. LANG=C)."""
    try:
        _BOX_CHARS.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return "#-"
    return _BOX_CHARS


def _terminal_width(stream: Any) -> int:
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a real file
        columns = 0
    return columns or shutil.get_terminal_size().columns  # else $COLUMNS, else 80


def _clock(seconds: float) -> str:
    """H:MM:SS."""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
