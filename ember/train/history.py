"""History: the per-epoch record `fit()` returns, also written as `history.json` in the run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

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

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epochs)}, keys={list(self.history)})"
