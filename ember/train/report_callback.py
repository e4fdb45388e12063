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

__all__ = ["ReportCallback", "confusion_matrix"]

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Write the training report into the run directory when `fit` ends, or stops with an error.

    It writes the loss of every optimizer step (which the Trainer's loop records in
    `trainer.loop.step_losses`) and the environment (versions, device, seed, batch size,
    learning rate, read when `fit` starts) into `report.json`. For a classifier
    (outputs `(N, C)` with C >= 2, integer targets) it runs the model over the validation data
    and writes `confusion.json`, which the report shows as a confusion matrix with per-class
    precision and recall. With `test_data` it evaluates the trained model on it and shows the
    test metrics at the top. A report that cannot be written is logged, never raised: it must not
    fail a run or hide the run's own error.

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
        self._environment: dict[str, Any] = {}

    def on_fit_start(self, trainer: Trainer, module: Any) -> None:
        if trainer.is_global_zero:
            self._environment = environment(trainer)

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
            losses = trainer.loop.step_losses.as_dict()
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
