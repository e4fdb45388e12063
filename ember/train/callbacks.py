"""The Callback base class, the runner that calls hooks, EarlyStopping and LearningRateMonitor."""

from __future__ import annotations

import copy
import logging
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["Callback", "CallbackError", "EarlyStopping", "LearningRateMonitor"]

log = logging.getLogger(__name__)

HOOKS = (
    "on_fit_start",
    "on_train_epoch_start",
    "on_train_batch_end",
    "on_train_epoch_end",
    "on_validation_end",
    "on_epoch_end",
    "on_fit_end",
    "on_exception",
)


class CallbackError(RuntimeError):
    """A callback raised: names the callback and the hook; the original error is the cause."""


class Callback:
    """Base class: every hook is a no-op; override the ones you need.

    Hooks receive the Trainer (its `current_epoch`, `global_step`, `logged_metrics`, `should_stop`,
    `log_dir`, `save_checkpoint()`) and the module being trained.

    Example:
        >>> class Print(Callback):
        ...     def on_epoch_end(self, trainer, module, logs):
        ...         print(trainer.current_epoch, logs["loss"])
    """

    def on_fit_start(self, trainer: Trainer, module: Any) -> None: ...

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None: ...

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        """After each optimizer step (`logs["loss"]` is a tensor: call `.item()` only when needed)."""

    def on_train_epoch_end(self, trainer: Trainer, module: Any) -> None: ...

    def on_validation_end(self, trainer: Trainer, module: Any, logs: dict) -> None: ...

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        """After training and validation of an epoch; `logs` holds every epoch metric."""

    def on_fit_end(self, trainer: Trainer, module: Any) -> None: ...

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None: ...

    def uses_hook(self, hook: str) -> bool:
        """Whether the Trainer calls `hook` on this callback: by default, when the class overrides it.

        Override to skip a hook a setting makes a no-op (the per-batch hook runs every step).
        """
        return getattr(type(self), hook) is not getattr(Callback, hook)

    def state_dict(self) -> dict:
        """State saved in checkpoints (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class CallbackRunner:
    """Calls one hook on every callback that overrides it; a failing callback raises CallbackError."""

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)
        # Only callbacks that use a hook are called: the per-batch hook stays cheap.
        self._by_hook = {
            hook: [(cb, getattr(cb, hook)) for cb in self.callbacks if cb.uses_hook(hook)]
            for hook in HOOKS
        }

    def has(self, hook: str) -> bool:
        return bool(self._by_hook[hook])

    def call(self, hook: str, *args: Any) -> None:
        for cb, method in self._by_hook[hook]:
            try:
                method(*args)
            except CallbackError:
                raise
            except Exception as exc:
                raise CallbackError(
                    f"Callback {type(cb).__name__} failed in {hook}: {type(exc).__name__}: {exc}"
                ) from exc

    def state_dict(self) -> dict:
        return {_key(cb, i): cb.state_dict() for i, cb in enumerate(self.callbacks)}

    def load_state_dict(self, state: dict) -> None:
        for i, cb in enumerate(self.callbacks):
            if _key(cb, i) in state:
                cb.load_state_dict(state[_key(cb, i)])


def _key(cb: Callback, index: int) -> str:
    return f"{index}:{type(cb).__name__}"


def _resolve_mode(mode: str, monitor: str) -> str:
    if mode == "auto":
        return (
            "max"
            if any(k in monitor for k in ("acc", "f1", "auroc", "precision", "recall", "r2"))
            else "min"
        )
    if mode not in ("min", "max"):
        raise ValueError(f"Unknown mode {mode!r}. Choose one of: auto, min, max")
    return mode


def monitored_value(logs: dict, monitor: str, owner: str) -> float:
    """Read `monitor` from epoch logs, with an error listing what is available."""
    if monitor not in logs:
        raise KeyError(
            f"{owner} monitors {monitor!r}, which was not logged. Available: {', '.join(sorted(logs))}. "
            "Pass validation data for val_* values, or choose another `monitor`."
        )
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop training when a monitored value stops improving.

    Args:
        monitor: the epoch log to watch (e.g. "val_loss", "val_accuracy").
        mode: "min", "max", or "auto" (max for accuracy-like names).
        patience: epochs without improvement before stopping.
        min_delta: the smallest change that counts as an improvement.
        restore_best_weights: load the best epoch's weights when training ends.

    Example:
        >>> model.fit(x, y, validation_split=0.2, callbacks=[EarlyStopping(patience=2)])
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "auto",
        patience: int = 3,
        min_delta: float = 0.0,
        restore_best_weights: bool = False,
    ) -> None:
        if patience < 0:
            raise ValueError(f"`patience` must be >= 0. Received: patience={patience}")
        self.monitor, self.mode = monitor, _resolve_mode(mode, monitor)
        self.patience, self.min_delta = patience, abs(min_delta)
        self.restore_best_weights = restore_best_weights
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_epoch, self.stopped_epoch = 0, -1, -1
        self.best_weights: dict | None = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        value = monitored_value(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, trainer.current_epoch, 0
            if self.restore_best_weights:
                self.best_weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.current_epoch
            trainer.should_stop = True
            log.info(
                "EarlyStopping: %s did not improve for %d epochs (best %.6g at epoch %d).",
                self.monitor,
                self.wait,
                self.best,
                self.best_epoch + 1,
            )

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            module.load_state_dict(self.best_weights)

    def state_dict(self) -> dict:
        state = {k: getattr(self, k) for k in ("best", "wait", "best_epoch", "stopped_epoch")}
        state["best_weights"] = self.best_weights
        return state

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, copy.copy(v))


class LearningRateMonitor(Callback):
    """Log the learning rate of every parameter group ("lr", "lr/group1", ...).

    Args:
        logging_interval: "epoch" or "step".

    Example:
        >>> ember.Trainer(callbacks=[LearningRateMonitor("step")])
    """

    def __init__(self, logging_interval: str = "epoch") -> None:
        if logging_interval not in ("epoch", "step"):
            raise ValueError(
                f"Unknown logging_interval {logging_interval!r}. Choose one of: epoch, step"
            )
        self.logging_interval = logging_interval

    def _values(self, trainer: Trainer) -> dict[str, float]:
        groups = trainer.optimizer.param_groups
        return {("lr" if i == 0 else f"lr/group{i}"): g["lr"] for i, g in enumerate(groups)}

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if self.logging_interval == "step":
            trainer.log_metrics({f"step/{k}": v for k, v in self._values(trainer).items()})

    def on_train_epoch_start(self, trainer: Trainer, module: Any) -> None:
        if self.logging_interval == "epoch":
            trainer.log_metrics(self._values(trainer), step=trainer.current_epoch)
