"""Keras's everyday callbacks by their Keras names: ReduceLROnPlateau, LambdaCallback, TerminateOnNaN.

(`BackupAndRestore` lives in `backup.py`, beside the checkpoint machinery it uses.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ember.train.callbacks import Callback, _resolve_mode, monitored_value

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["LambdaCallback", "ReduceLROnPlateau", "TerminateOnNaN"]

log = logging.getLogger(__name__)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by `factor` when a monitored value stops improving (Keras's).

    Args:
        monitor: the epoch log to watch ("val_loss", "loss", "val_accuracy", ...).
        factor: the multiplier, in (0, 1).
        patience: epochs without improvement before the rate drops.
        mode: "min", "max" or "auto" (max for accuracy-like names).
        min_delta: the smallest change that counts as an improvement.
        cooldown: epochs to wait after a drop before counting again.
        min_lr: the rate never goes below this.

    Example:
        >>> model.fit(x, y, validation_split=0.2, callbacks=[ReduceLROnPlateau(patience=2)])
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if not 0.0 < factor < 1.0:
            raise ValueError(
                f"Received an invalid value for `factor`, expected a number in (0, 1). "
                f"Received: factor={factor!r}"
            )
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"Received an invalid value for `{name}`, expected an integer >= 0. "
                    f"Received: {name}={value!r}"
                )
        self.monitor, self.mode = monitor, _resolve_mode(mode, monitor)
        self.factor, self.patience, self.min_delta = factor, patience, abs(min_delta)
        self.cooldown, self.min_lr = cooldown, min_lr
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait = self.cooldown_counter = 0

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        value = monitored_value(logs, self.monitor, "ReduceLROnPlateau")
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        better = (
            value < self.best - self.min_delta
            if self.mode == "min"
            else value > self.best + self.min_delta
        )
        if better:
            self.best, self.wait = value, 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait < self.patience:
            return
        for group in trainer.optimizer.param_groups:
            old = group["lr"]
            group["lr"] = max(old * self.factor, self.min_lr)
        log.info(
            "ReduceLROnPlateau: %s did not improve for %d epochs; learning rate %.3g -> %.3g.",
            self.monitor,
            self.wait,
            old,
            trainer.optimizer.param_groups[0]["lr"],
        )
        self.wait, self.cooldown_counter = 0, self.cooldown

    def state_dict(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.wait = float(state["best"]), int(state["wait"])
        self.cooldown_counter = int(state["cooldown_counter"])


_LAMBDA_HOOKS = {  # Keras argument -> the ember hook it runs in
    "on_train_begin": "on_fit_start",
    "on_epoch_begin": "on_train_epoch_start",
    "on_batch_end": "on_train_batch_end",
    "on_epoch_end": "on_epoch_end",
    "on_train_end": "on_fit_end",
}


class LambdaCallback(Callback):
    """A callback from plain functions, with Keras's arguments and signatures.

    Args:
        on_train_begin: `f(logs)` when fit starts.
        on_epoch_begin: `f(epoch, logs)` before each epoch.
        on_batch_end: `f(batch, logs)` after each batch (`logs["loss"]` is a float).
        on_epoch_end: `f(epoch, logs)` after each epoch (training and validation values).
        on_train_end: `f(logs)` when fit ends (the last epoch's values).

    Example:
        >>> show = LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))
        >>> model.fit(x, y, epochs=3, callbacks=[show])
    """

    def __init__(
        self,
        on_train_begin: Callable | None = None,
        on_epoch_begin: Callable | None = None,
        on_batch_end: Callable | None = None,
        on_epoch_end: Callable | None = None,
        on_train_end: Callable | None = None,
    ) -> None:
        given = dict(
            on_train_begin=on_train_begin,
            on_epoch_begin=on_epoch_begin,
            on_batch_end=on_batch_end,
            on_epoch_end=on_epoch_end,
            on_train_end=on_train_end,
        )
        for name, fn in given.items():
            if fn is not None and not callable(fn):
                raise TypeError(
                    f"LambdaCallback's `{name}` must be a function. Received: {name}={fn!r}"
                )
        self._fns = {_LAMBDA_HOOKS[k]: fn for k, fn in given.items() if fn is not None}

    def uses_hook(self, hook: str) -> bool:
        return hook in self._fns

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        self._fns["on_fit_start"](dict(trainer.logged_metrics))

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        self._fns["on_train_epoch_start"](trainer.current_epoch, {})

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        self._fns["on_train_batch_end"](batch_idx, {"loss": float(logs["loss"].detach())})

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        self._fns["on_epoch_end"](trainer.current_epoch, logs)

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        self._fns["on_fit_end"](dict(trainer.logged_metrics))


class TerminateOnNaN(Callback):
    """Stop training, without an error, when the loss becomes NaN or infinite (Keras's).

    The Trainer's own check (`terminate_on_nan=True`, the default) raises instead; with this
    callback the fit returns its History up to the last finite epoch, and the run's checkpoints
    and logs stay as they were. The weights are those after the failing step, as in Keras.

    Example:
        >>> history = model.fit(x, y, epochs=50, callbacks=[TerminateOnNaN()])
    """

    def __init__(self) -> None:
        self._trainer_check: bool | None = None

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        # This callback takes the check over for this fit: stop, don't raise.
        self._trainer_check, trainer.terminate_on_nan = trainer.terminate_on_nan, False

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        if self._trainer_check is not None:
            trainer.terminate_on_nan, self._trainer_check = self._trainer_check, None

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None:
        self.on_fit_end(trainer, module)

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        value = float(logs["loss"].detach())
        if not math.isfinite(value):
            log.warning(
                "TerminateOnNaN: the loss is %s at epoch %d, batch %d: training stopped.",
                value,
                trainer.current_epoch + 1,
                batch_idx,
            )
            trainer.should_stop = True
