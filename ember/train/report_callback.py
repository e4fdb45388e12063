"""`ReportCallback`: write `report.html` (and `confusion.json`, `report.json`) into the run directory."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ember.train.callbacks import Callback
from ember.train.steps import split_batch

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["ReportCallback", "StepLosses", "confusion_matrix"]

log = logging.getLogger(__name__)

_FLUSH_EVERY = 256  # step losses read from the device in batches: one sync per 256 steps


class ReportCallback(Callback):
    """Write the training report into the run directory when `fit` ends, or stops with an error.

    While training it records the loss of every optimizer step (`StepLosses`) and, when `fit`
    starts, the environment (versions, device, seed, batch size, learning rate); both go into
    `report.json`. For a classifier (outputs `(N, C)` with C >= 2, integer targets) it runs the
    model over the validation data and writes `confusion.json`, which the report shows as a
    confusion matrix with per-class precision and recall. With `test_data` it evaluates the
    trained model on it and shows the test metrics at the top. A report that cannot be written is
    logged, never raised: it must not fail a run or hide the run's own error.

    Args:
        filename: the report's file name inside the run directory.
        package_dir: a model package of this run whose export parity table to show.
        confusion: compute the confusion matrix on the validation data.
        test_data: data (as `fit` takes it) to evaluate the trained model on when `fit` ends.

    Example:
        >>> trainer = ember.Trainer(max_epochs=3, callbacks=[ReportCallback(test_data=test)])
    """

    def __init__(
        self,
        filename: str = "report.html",
        package_dir: str | os.PathLike | None = None,
        confusion: bool = True,
        test_data: Any = None,
    ) -> None:
        if not isinstance(filename, str) or not filename or "/" in filename:
            raise ValueError(
                f"Received an invalid value for `filename`, expected a file name such as "
                f"'report.html'. Received: filename={filename!r}"
            )
        self.filename = filename
        self.package_dir = package_dir
        self.confusion = confusion
        self.test_data = test_data
        self.path: Path | None = None
        self.step_losses = StepLosses()
        self._environment: dict[str, Any] = {}

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        self.step_losses = StepLosses()
        if trainer.is_global_zero:
            self._environment = environment(trainer)

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if trainer.at_step_boundary:
            self.step_losses.add(trainer.global_step, logs["loss"])

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        test = {}
        if self.test_data is not None:  # every process: evaluation averages over them
            test = trainer.validate(module, self.test_data)
        if not trainer.is_global_zero:
            return
        if self.confusion:
            try:
                _write_confusion(trainer, module)
            except Exception as exc:  # the rest of the report is still worth writing
                log.warning("No confusion matrix in the report: %s: %s", type(exc).__name__, exc)
        self._write(trainer, status=None, test=test)

    def on_exception(self, trainer: Trainer, module: Any, error: BaseException) -> None:
        if trainer.is_global_zero:
            status = f"Training stopped: {type(error).__name__}: {error}"
            self._write(trainer, status=status, test={})

    def _write(self, trainer: Trainer, status: str | None, test: dict) -> None:
        from ember.report.html import write_report

        try:
            losses = self.step_losses.as_dict()
            extra = {"steps": losses, "environment": self._environment, "test": test}
            (trainer.log_dir / "report.json").write_text(json.dumps(extra, default=str))
        except Exception as exc:
            log.warning("report.json not written: %s: %s", type(exc).__name__, exc)
        package = self.package_dir
        if package is not None and not (Path(package) / "ember.json").is_file():
            log.warning("Report without a parity table: %s is not a model package yet", package)
            package = None
        try:
            self.path = write_report(
                trainer.log_dir, trainer.log_dir / self.filename, package, status=status
            )
        except Exception as exc:
            log.warning("Could not write the training report: %s: %s", type(exc).__name__, exc)


class StepLosses:
    """The training loss per optimizer step, in at most `limit` points.

    Losses on an accelerator stay there and are read 256 at a time (one sync each). When `limit`
    points are held, neighbours are averaged in pairs and each later point averages twice as many
    steps (`every`): a long run keeps its whole curve at a bounded size.

    Args:
        limit: the most points kept (even, >= 2).

    Example:
        >>> losses = StepLosses(limit=4)
        >>> for step in range(1, 7):
        ...     losses.add(step, torch.tensor(float(step)))
        >>> losses.as_dict()
        {'step': [2, 4, 6], 'loss': [1.5, 3.5, 5.5], 'every': 2}
    """

    def __init__(self, limit: int = 4096) -> None:
        if not isinstance(limit, int) or limit < 2 or limit % 2:
            raise ValueError(f"`limit` must be an even integer >= 2. Received: limit={limit!r}")
        self.limit = limit
        self.every = 1
        self.step: list[int] = []
        self.loss: list[float] = []
        self._pending_steps: list[int] = []
        self._pending: list = []  # floats (CPU) or detached scalar tensors (accelerators)
        self._sum, self._count = 0.0, 0  # the bucket being filled (`every` steps a point)

    def add(self, step: int, loss: torch.Tensor) -> None:
        """Record the loss of optimizer step `step` (a scalar tensor)."""
        self._pending_steps.append(step)
        # On the CPU a read is free (~1 us); an accelerator's losses wait to be read together.
        self._pending.append(loss.item() if loss.is_cpu else loss.detach())
        if len(self._pending) >= _FLUSH_EVERY:
            self._flush()

    def as_dict(self) -> dict[str, Any]:
        """{"step": [...], "loss": [...], "every": steps per point}: what report.json holds."""
        self._flush()
        return {"step": list(self.step), "loss": list(self.loss), "every": self.every}

    def _flush(self) -> None:
        if not self._pending:
            return
        values = self._pending
        if isinstance(values[0], torch.Tensor):
            values = torch.stack(values).float().cpu().tolist()
        for step, value in zip(self._pending_steps, values):
            self._sum += value
            self._count += 1
            if self._count == self.every:
                self.step.append(step)
                self.loss.append(self._sum / self._count)
                self._sum, self._count = 0.0, 0
                if len(self.loss) >= self.limit:
                    self._halve()
        self._pending_steps, self._pending = [], []

    def _halve(self) -> None:
        self.step = self.step[1::2]
        self.loss = [(a + b) / 2 for a, b in zip(self.loss[::2], self.loss[1::2])]
        self.every *= 2


def environment(trainer: Trainer) -> dict[str, Any]:
    """What the report's header shows about where and how a run trained.

    Returns:
        ember, torch and Python versions, platform, device, seed, batch size (and the effective
        one: x accumulation x processes), the optimizer and its learning rate, precision.

    Example:
        >>> environment(trainer)["device"]  # doctest: +SKIP
        'cpu'
    """
    from ember import __version__  # lazy: ember/__init__ is loaded before any of its modules

    device = str(trainer.device)
    if trainer.device.type == "cuda":
        device += f" ({torch.cuda.get_device_name(trainer.device)})"
    env: dict[str, Any] = {
        "ember": __version__,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "device": device,
        "seed": trainer.seed,
        "precision": trainer.precision.name,
    }
    batch = getattr(trainer.train_loader, "batch_size", None)
    if isinstance(batch, int):
        env["batch_size"] = batch
        scale = trainer.accumulate_grad_batches * getattr(trainer.strategy, "world_size", 1)
        if scale != 1:
            env["effective_batch_size"] = batch * scale
    if trainer.optimizer is not None:
        env["optimizer"] = type(trainer.optimizer).__name__
        env["lr"] = trainer.optimizer.param_groups[0].get("lr")
    return env


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> list[list[int]]:
    """Counts of (true class, predicted class) pairs.

    Args:
        predictions: predicted class indices, shape `(N,)`.
        targets: true class indices, shape `(N,)`.
        num_classes: the number of classes C.

    Returns:
        A C x C list of lists: row = true class, column = predicted class.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
        [[1, 1], [0, 1]]
    """
    index = targets.long() * num_classes + predictions.long()
    counts = torch.bincount(index, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).tolist()


def _write_confusion(trainer: Trainer, module: Any) -> None:
    loader = getattr(trainer, "val_loader", None)
    if loader is None:
        return
    outputs, targets = _predict(module, loader, trainer.device)
    if outputs is None or outputs.dim() != 2 or outputs.shape[1] < 2 or targets is None:
        return  # not a classifier: no confusion matrix
    if targets.dim() != 1 or targets.is_floating_point():
        return
    num_classes = outputs.shape[1]
    if targets.min() < 0 or targets.max() >= num_classes:
        return
    matrix = confusion_matrix(outputs.argmax(dim=1), targets, num_classes)
    labels = getattr(module, "labels", None)
    labels = [str(x) for x in labels] if labels is not None else list(range(num_classes))
    data = {"labels": labels, "matrix": matrix}
    (trainer.log_dir / "confusion.json").write_text(json.dumps(data))


def _predict(module: Any, loader: Any, device: torch.device) -> tuple[Any, Any]:
    # The raw module (not a DDP wrapper): this runs on rank 0 only, without collectives.
    outputs, targets = [], []
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                x, y = split_batch(batch)
                if y is None or not isinstance(y, torch.Tensor):
                    return None, None
                x = tuple(t.to(device) for t in x) if isinstance(x, tuple) else x.to(device)
                out = module(*x) if isinstance(x, tuple) else module(x)
                if not isinstance(out, torch.Tensor):
                    return None, None
                outputs.append(out.detach().float().cpu())
                targets.append(y.cpu())
    finally:
        module.train(was_training)
    if not outputs:
        return None, None
    return torch.cat(outputs), torch.cat(targets)
