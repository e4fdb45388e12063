"""A progress bar for training: ETA, loss and metrics; plain lines when output is not a terminal."""

from __future__ import annotations

import os
import shutil
import sys
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
        refresh_interval: seconds between redraws. Between them a step costs one clock read;
            a redraw (one short line written) costs tens of microseconds.
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
        self._next = 0.0
        self._epoch_start = 0.0
        self._first_batch = 0

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        self._out = (self.stream or sys.stdout) if trainer.is_global_zero else None
        self._live = self._out is not None and _is_terminal(self._out)
        self._chars = _bar_chars(self._out)

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        self._epoch_start = time.monotonic()
        self._next = self._epoch_start + self.refresh_interval
        self._first_batch = trainer.batch_in_epoch  # a resumed epoch starts part-way
        self._width = None  # read again: the window may have been resized

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if not self._live:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.refresh_interval
        self._draw(trainer, batch_idx + 1, now - self._epoch_start, logs["loss"].item())

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        if self._out is None:
            return
        seconds = time.monotonic() - self._epoch_start
        self._erase()
        self._out.write(f"{_title(trainer)} - {seconds:.1f}s - {format_logs(logs)}\n")
        self._out.flush()

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        self._erase()

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None:
        self._erase()  # the error's message starts on an empty line

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
