"""Turning the Trainer's arguments into its parts: argument checks, loggers, default callbacks,
the run's seed and the hyper-parameters it records.

The checks validate user input at the boundary and fail with a message naming the argument,
what was received and what is allowed.
"""

from __future__ import annotations

import itertools
import logging
import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ember.train.arguments import check_positive
from ember.train.callbacks import Callback
from ember.train.loggers import Logger, TensorBoardLogger
from ember.train.model_checkpoint import ModelCheckpoint

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

log = logging.getLogger(__name__)

__all__ = [
    "check_arguments",
    "check_batch_limits",
    "first_batches",
    "default_callbacks",
    "make_loggers",
    "nan_message",
    "seed_run",
    "set_deterministic",
    "trainer_hparams",
]


def check_arguments(
    accumulate_grad_batches: Any, log_every_n_steps: Any, gradient_clip_algorithm: Any
) -> None:
    """Check the Trainer's numeric and choice arguments that need no other context.

    Example:
        >>> check_arguments(1, 50, "max")
        Traceback (most recent call last):
        ValueError: Unknown gradient_clip_algorithm 'max'. Choose one of: norm, value
    """
    check_positive(accumulate_grad_batches=accumulate_grad_batches)
    check_positive(log_every_n_steps=log_every_n_steps)
    if gradient_clip_algorithm not in ("norm", "value"):
        raise ValueError(
            f"Unknown gradient_clip_algorithm {gradient_clip_algorithm!r}. Choose one of: norm, value"
        )


def make_loggers(logger: Any, root: str | Path, name: str) -> list[Logger]:
    """Resolve the Trainer's `logger` argument into a list of loggers.

    Args:
        logger: True (TensorBoard), False or None (none), a Logger or a list of Loggers.
        root: the root of run directories (`default_root_dir`).
        name: the run name.

    Returns:
        The loggers; the first one's directory is the run directory.

    Example:
        >>> [type(x).__name__ for x in make_loggers(True, "runs", "default")]
        ['TensorBoardLogger']
    """
    if logger is True:
        return [TensorBoardLogger(root, name)]
    if logger is False or logger is None:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for item in loggers:
        if not isinstance(item, Logger):
            raise TypeError(
                f"`logger` must be True, False, a Logger or a list of Loggers. Received: {item!r}"
            )
    return loggers


def default_callbacks(
    callbacks: Any, progress: bool, checkpointing: bool, report: bool
) -> list[Callback]:
    """The user's callbacks plus the defaults they lack, checkpoints last.

    Args:
        callbacks: the user's `Callback` objects (or None).
        progress: add a `ProgressBar` unless one is given.
        checkpointing: add a `ModelCheckpoint` (`last` only) unless one is given.
        report: add a `ReportCallback` unless one is given.

    Returns:
        The callbacks in calling order; `ModelCheckpoint`s come last so they capture the state
        every other callback updated.

    Example:
        >>> [type(c).__name__ for c in default_callbacks([], True, True, False)]
        ['ProgressBar', 'ModelCheckpoint']
    """
    from ember.train.progress import ProgressBar

    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"Every callback must be an ember Callback. Received: {cb!r}")
    if progress and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.insert(0, ProgressBar())
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        # `last` only, refreshed at most every 10 s and at the end: with short epochs a durable
        # save every epoch would cost more than the training (ModelCheckpoint() saves every epoch).
        callbacks.append(ModelCheckpoint(save_top_k=0, min_interval=10.0))
    if report:
        from ember.train.report_callback import ReportCallback

        if not any(isinstance(c, ReportCallback) for c in callbacks):
            callbacks.append(ReportCallback())
    # Checkpoints (and backups) last: they must capture the state every other callback updated.
    from ember.train.backup import BackupAndRestore

    saves = (ModelCheckpoint, BackupAndRestore)
    return [c for c in callbacks if not isinstance(c, saves)] + [
        c for c in callbacks if isinstance(c, saves)
    ]


def nan_message(loss: torch.Tensor, epoch: int, batch_idx: int) -> str:
    """The error raised when the loss stops being finite, with the ways out.

    Example:
        >>> nan_message(torch.tensor(float("nan")), 0, 3)[:34]
        'The loss is nan at epoch 1, batch 3'
    """
    return (
        f"The loss is {float(loss.detach())} at epoch {epoch + 1}, batch {batch_idx}: training stopped. "
        "Lower the learning rate, clip gradients (gradient_clip_val=1.0) or check the data for NaN; "
        "pass Trainer(terminate_on_nan=False) to continue anyway."
    )


def seed_run(trainer: Trainer, ckpt: Any) -> None:
    """Seed every RNG for a fit: the checkpoint's seed when resuming, else the Trainer's or a new one.

    Args:
        trainer: its `seed` is set to the seed used (recorded in the run's hyper-parameters).
        ckpt: the checkpoint being resumed, or None.

    Example:
        >>> seed_run(trainer, None); trainer.seed is not None
        True
    """
    if ckpt is not None:
        trainer.seed = ckpt.meta["seed"]
    if trainer.seed is None:
        trainer.seed = random.SystemRandom().randrange(2**31)
    from ember.train.rng import seed_everything

    seed_everything(trainer.seed)
    set_deterministic(trainer.deterministic)


def set_deterministic(mode: bool) -> None:
    """`torch.use_deterministic_algorithms(mode)`, skipped when torch is already in that mode.

    torch's function imports `torch._inductor.config` (sympy and more: ~1.5 s on a small CPU) to
    set inductor's flag too. When the flag already holds `mode` and inductor's config is not
    loaded (its default is False), there is nothing to change and nothing to import.

    Example:
        >>> set_deterministic(False); torch.are_deterministic_algorithms_enabled()
        False
    """
    unchanged = (
        torch.are_deterministic_algorithms_enabled() == mode
        and not torch.is_deterministic_algorithms_warn_only_enabled()
    )
    if unchanged and (mode or "torch._inductor.config" not in sys.modules):
        return
    torch.use_deterministic_algorithms(mode, warn_only=False)


def trainer_hparams(trainer: Trainer) -> dict[str, Any]:
    """The Trainer settings recorded with the model's hyper-parameters.

    Example:
        >>> sorted(trainer_hparams(trainer))[:2]
        ['accumulate_grad_batches', 'gradient_clip_val']
    """
    return {
        "max_epochs": trainer.max_epochs,
        "max_steps": trainer.max_steps,
        "precision": trainer.precision.name,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "gradient_clip_val": trainer.gradient_clip_val,
        "seed": trainer.seed,
    }


def check_batch_limits(
    limit_train: Any, limit_val: Any, fast_dev_run: Any, overfit_batches: Any
) -> int:
    """Check the batch-limit arguments; returns fast_dev_run's batch count (0: off).

    Example:
        >>> check_batch_limits(None, 2, True, 0)
        1
    """
    for name, value in (("limit_train_batches", limit_train), ("limit_val_batches", limit_val)):
        if value is not None:
            check_positive(**{name: value})
    if isinstance(fast_dev_run, bool) or fast_dev_run == 0:
        dev_run = int(fast_dev_run)
    else:
        check_positive(fast_dev_run=fast_dev_run)
        dev_run = fast_dev_run
    if (
        not isinstance(overfit_batches, int)
        or isinstance(overfit_batches, bool)
        or overfit_batches < 0
    ):
        raise ValueError(
            "Received an invalid value for `overfit_batches`, expected an integer >= 0 (0: off). "
            f"Received: overfit_batches={overfit_batches!r}"
        )
    return dev_run


def first_batches(data: Any, n: int) -> list:
    """The first `n` batches of `data` in order (a shuffling DataLoader is read unshuffled).

    Example:
        >>> len(first_batches(train_loader, 2))
        2
    """
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader) and data.batch_size is not None:
        data = DataLoader(data.dataset, batch_size=data.batch_size, collate_fn=data.collate_fn)
    elif isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=32)
    batches = list(itertools.islice(iter(data), n))
    if len(batches) < n:
        log.warning("overfit_batches=%d, but the training data has only %d.", n, len(batches))
    return batches
