"""A rich progress bar for training: ETA, loss and metrics; plain lines when output is not a TTY."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from ember.train.callbacks import Callback

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["ProgressBar", "format_logs"]


def format_logs(logs: dict) -> str:
    """'loss: 0.1234 - val_loss: 0.2345' for numeric values."""
    parts = []
    for k, v in logs.items():
        if isinstance(v, (int, float)) and not k.startswith(("step/", "norm/")):
            parts.append(f"{k}: {v:.4g}")
    return " - ".join(parts)


class ProgressBar(Callback):
    """Show progress per epoch. Added by the Trainer unless `enable_progress_bar=False`.

    Args:
        refresh_interval: seconds between bar redraws. Between them a step costs one clock read;
            a redraw costs about a millisecond of rich layout, so 2 per second keep the bar's
            cost near 0.1% of training time.
        stream: where to write; default stdout. A non-TTY stream gets one plain line per epoch.

    Example:
        >>> ember.Trainer(callbacks=[ProgressBar(refresh_interval=0.5)])
    """

    def __init__(self, refresh_interval: float = 0.5, stream: Any = None) -> None:
        if not isinstance(refresh_interval, (int, float)) or refresh_interval < 0:
            raise ValueError(
                "Received an invalid value for `refresh_interval`, expected seconds >= 0. "
                f"Received: refresh_interval={refresh_interval!r}"
            )
        self.refresh_interval = refresh_interval
        self.stream = stream
        self._progress = None
        self._task = None
        self._next = 0.0
        self._epoch_start = 0.0

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        from rich.console import Console  # lazy: rich is only needed when a bar is shown

        stream = self.stream or sys.stdout
        # Other ranks of a distributed run stay quiet: one bar, one set of lines.
        self._console = Console(file=stream, highlight=False, quiet=not trainer.is_global_zero)
        if (
            trainer.is_global_zero
            and self._console.is_terminal
            and not self._console.is_dumb_terminal
        ):
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=self._console,
                # Drawn from the training thread at `refresh_interval`: a background refresh
                # thread would contend with the training loop for the GIL.
                auto_refresh=False,
                transient=True,
            )

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        self._epoch_start = time.monotonic()
        self._next = self._epoch_start + self.refresh_interval
        if self._progress is not None:
            desc = f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs or '?'}"
            # The live bar starts at the first redraw: an epoch shorter than `refresh_interval`
            # costs no drawing at all, only its line at the end.
            self._task = self._progress.add_task(
                desc, total=trainer.num_train_batches, metrics="", completed=trainer.batch_in_epoch
            )

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.refresh_interval
        if not self._progress.live.is_started:
            self._progress.start()
        self._progress.update(
            self._task,
            completed=batch_idx + 1,
            metrics=f"loss: {logs['loss'].item():.4g}",
            refresh=True,
        )

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        seconds = time.monotonic() - self._epoch_start
        epochs = trainer.max_epochs or "?"
        line = f"Epoch {trainer.current_epoch + 1}/{epochs} - {seconds:.1f}s - {format_logs(logs)}"
        if self._progress is not None:  # the bar (transient) gives way to the epoch's line
            self._progress.stop()
            self._progress.remove_task(self._task)
            self._task = None
        # One line per epoch, in a terminal as in log files, however many metrics. Written as
        # is: the live bar is stopped, and rich's rendering of a plain line costs ~0.1 ms.
        if not self._console.quiet:
            self._console.file.write(line + "\n")
            self._console.file.flush()

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        self._stop()

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
