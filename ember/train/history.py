"""History: the per-epoch record `fit()` returns, also written as `history.json` in the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["History"]


class History:
    """Per-epoch metrics, as Keras's `History`: `history.history["val_loss"][epoch]`.

    Attributes:
        history: {metric name: [value per epoch]} (loss, metrics, val_*, lr).
        epochs: the epoch indices recorded.
        epoch_info: per epoch, timing (`epoch_time`, `samples_per_sec`) and per-layer weight and
            gradient norms (`norms`).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epochs: list[int] = []
        self.epoch_info: list[dict] = []
        self._encoded: dict[str, list[str]] = {}  # JSON of values already written, by list

    def append(self, epoch: int, logs: dict[str, float], info: dict | None = None) -> None:
        n = len(self.epochs)
        for key, value in logs.items():
            # A key first seen late is padded so every list stays aligned with `epochs`.
            self.history.setdefault(key, [None] * n).append(float(value))
        for values in self.history.values():
            if len(values) == n:
                values.append(None)
        self.epochs.append(epoch)
        self.epoch_info.append(info or {})

    def state_dict(self) -> dict:
        return {"history": self.history, "epochs": self.epochs, "epoch_info": self.epoch_info}

    def load_state_dict(self, state: dict) -> None:
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.epochs = list(state["epochs"])
        self.epoch_info = list(state["epoch_info"])
        self._encoded = {}

    def to_json(self) -> str:
        """The history as JSON (what `history.json` holds).

        Values only ever get appended, so each is encoded once and cached: writing the file after
        every epoch costs the new epoch's values plus a string join, not the whole run again.
        """
        lists = {f"history/{k}": v for k, v in self.history.items()}
        lists["epochs"], lists["epoch_info"] = self.epochs, self.epoch_info
        enc = {key: self._encode(key, values) for key, values in lists.items()}
        history = ", ".join(f"{json.dumps(k)}: {enc[f'history/{k}']}" for k in self.history)
        return (
            f'{{"history": {{{history}}}, "epochs": {enc["epochs"]}, '
            f'"epoch_info": {enc["epoch_info"]}}}'
        )

    def _encode(self, key: str, values: list) -> str:
        done = self._encoded.setdefault(key, [])
        if len(done) > len(values):  # the list was replaced or cut: encode it again
            done.clear()
        done.extend(json.dumps(v) for v in values[len(done) :])
        return f"[{', '.join(done)}]"

    def write(self, path: Path) -> None:
        """Write `history.json` atomically (a crash never leaves a half-written file)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        os.replace(tmp, path)

    def plot(self, metrics: list[str] | None = None, ax: Any = None) -> Any:
        """Draw each metric against the epoch with matplotlib, its validation curve beside it.

        Args:
            metrics: names to draw (default: every training metric, e.g. "loss", "accuracy";
                "val_<name>" is drawn with "<name>" when present).
            ax: one matplotlib Axes to draw everything on; default one subplot per metric.

        Returns:
            The list of Axes drawn on. Call `matplotlib.pyplot.show()` or save the figure.

        Example:
            >>> history = model.fit(x, y, epochs=10, validation_split=0.2)
            >>> history.plot()[0].figure.savefig("curves.png")
        """
        plt = _pyplot()
        names = metrics or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        unknown = [n for n in names if n not in self.history]
        if unknown:
            raise ValueError(
                f"History.plot() received unknown metrics {unknown}. "
                f"Recorded: {', '.join(self.history)}"
            )
        if ax is not None:
            axes = [ax] * len(names)
        else:
            fig, grid = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
            axes = list(grid[0])
        epochs = [e + 1 for e in self.epochs]
        for name, axis in zip(names, axes):
            axis.plot(epochs, self.history[name], label=name)
            if f"val_{name}" in self.history:
                axis.plot(epochs, self.history[f"val_{name}"], label=f"val_{name}")
            axis.set_xlabel("epoch")
            axis.set_title(name)
            axis.legend()
        return axes

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epochs)}, keys={list(self.history)})"


def _pyplot() -> Any:
    """matplotlib.pyplot, imported when a plot is asked for (it is optional and slow to import)."""
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("Plotting needs matplotlib: pip install matplotlib") from None
    return plt
