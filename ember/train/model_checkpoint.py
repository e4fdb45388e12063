"""ModelCheckpoint: save the best k checkpoints by a monitored value, and the last one."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.train.arguments import check_seconds
from ember.train.callbacks import Callback, _resolve_mode, monitored_value

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["ModelCheckpoint"]

log = logging.getLogger(__name__)


class ModelCheckpoint(Callback):
    """Write checkpoints (directories, atomically) during training.

    Args:
        dirpath: where to write; default `<log_dir>/checkpoints`.
        filename: name pattern with `{epoch}`, `{step}` and any logged value, e.g.
            "{epoch}-{val_loss:.3f}".
        monitor: the logged value ranking checkpoints; None keeps the most recent ones.
        mode: "min", "max" or "auto".
        save_top_k: how many to keep (-1: all, 0: none besides `last`).
        save_last: also keep an always-current `last` checkpoint.
        every_n_epochs: save at the end of every n-th epoch (0 disables).
        every_n_train_steps: save every n optimizer steps, mid-epoch (None disables).
        min_interval: seconds. A save that would only refresh `last` is skipped when the previous
            save ended less than this long ago; a new best-k checkpoint and the final epoch of
            `fit` are always written. It bounds the cost of checkpointing when epochs are short
            (the Trainer's default callback uses 10 s); 0 saves at every chance.

    Example:
        >>> ModelCheckpoint(monitor="val_accuracy", save_top_k=2, every_n_train_steps=100)
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        filename: str = "epoch={epoch}-step={step}",
        monitor: str | None = None,
        mode: str = "auto",
        save_top_k: int = 1,
        save_last: bool = True,
        every_n_epochs: int = 1,
        every_n_train_steps: int | None = None,
        min_interval: float = 0.0,
    ) -> None:
        if save_top_k < -1:
            raise ValueError(f"`save_top_k` must be >= -1. Received: save_top_k={save_top_k}")
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"`every_n_train_steps` must be a positive integer or None. "
                f"Received: every_n_train_steps={every_n_train_steps}"
            )
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename, self.monitor = filename, monitor
        self.mode = _resolve_mode(mode, monitor or "step")
        self.save_top_k, self.save_last = save_top_k, save_last
        self.every_n_epochs, self.every_n_train_steps = every_n_epochs, every_n_train_steps
        self.min_interval = check_seconds("min_interval", min_interval)
        self.best_k: list[tuple[float, str]] = []  # (score, path), best first
        self.last_model_path: str | None = None
        self._last_save: float | None = None  # time.monotonic() when the previous save ended

    @property
    def best_model_path(self) -> str | None:
        """The best checkpoint so far (the latest one when nothing is monitored)."""
        return self.best_k[0][1] if self.best_k else self.last_model_path

    @property
    def best_model_score(self) -> float | None:
        return self.best_k[0][0] if self.best_k and self.monitor else None

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        if self.dirpath is None:
            self.dirpath = trainer.log_dir / "checkpoints"

    def uses_hook(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # called every step: only for mid-epoch saves
            return self.every_n_train_steps is not None
        return super().uses_hook(hook)

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and trainer.at_step_boundary:
            self._save(trainer, dict(trainer.logged_metrics))

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        n = self.every_n_epochs
        if n and (trainer.current_epoch + 1) % n == 0:
            self._save(trainer, logs, epoch_done=True, final=trainer.is_last_epoch)

    def _save(
        self, trainer: Trainer, logs: dict, epoch_done: bool = False, final: bool = False
    ) -> None:
        assert self.dirpath is not None
        score = self._score(logs, epoch_done) if self.save_top_k != 0 else None
        keep = score is not None and (
            self.save_top_k == -1
            or len(self.best_k) < self.save_top_k
            or self._better(score, self.best_k[-1][0])
        )
        if not keep:
            if self.save_last and (final or self._interval_passed()):
                last = trainer.save_checkpoint(self.dirpath / "last", epoch_done)
                self.last_model_path = str(last)
                self._last_save = time.monotonic()
            return
        path = str(trainer.save_checkpoint(self.dirpath / self._format(trainer, logs), epoch_done))
        if self.save_last:  # the same state: link its files instead of writing them twice
            self.last_model_path = str(trainer.copy_checkpoint(path, self.dirpath / "last"))
        self.best_k = [item for item in self.best_k if item[1] != path]
        self.best_k.append((score, path))
        self.best_k.sort(key=lambda item: item[0], reverse=self.mode == "max" or not self.monitor)
        while self.save_top_k != -1 and len(self.best_k) > self.save_top_k:
            _, worst = self.best_k.pop()
            trainer.remove_checkpoint(worst)
        self._last_save = time.monotonic()

    def _interval_passed(self) -> bool:
        return self._last_save is None or time.monotonic() - self._last_save >= self.min_interval

    def _score(self, logs: dict, epoch_done: bool) -> float | None:
        if self.monitor is None:
            return float(len(self.best_k) and self.best_k[0][0] + 1)  # most recent ranks first
        if self.monitor not in logs and not epoch_done:
            return None  # mid-epoch save before the value exists: `last` only
        return monitored_value(logs, self.monitor, "ModelCheckpoint")

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" and self.monitor else a > b

    def _format(self, trainer: Trainer, logs: dict) -> str:
        values = {k.replace("/", "_"): v for k, v in logs.items()}
        values.update(epoch=trainer.current_epoch, step=trainer.global_step)
        try:
            return self.filename.format(**values)
        except (KeyError, ValueError) as exc:
            raise ValueError(
                f"ModelCheckpoint filename {self.filename!r} could not be filled ({exc}). "
                f"Available keys: {', '.join(sorted(values))}"
            ) from exc

    def state_dict(self) -> dict:
        return {"best_k": [list(item) for item in self.best_k], "last": self.last_model_path}

    def load_state_dict(self, state: dict) -> None:
        self.best_k = [(float(s), str(p)) for s, p in state.get("best_k", [])]
        self.last_model_path = state.get("last")
