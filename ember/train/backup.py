"""BackupAndRestore: Keras's fault-tolerance callback on ember's exact-resume checkpoints."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ember.train.callbacks import Callback

if TYPE_CHECKING:
    from ember.train.trainer import Trainer

__all__ = ["BackupAndRestore"]

log = logging.getLogger(__name__)


class BackupAndRestore(Callback):
    """Back the whole training state up as it goes; a re-run of the same fit continues from it.

    After a crash or a kill, run the same `fit` again with the same `backup_dir`: it resumes
    where the newest backup was taken (model, optimizer, scheduler, RNG, data order, callbacks,
    loop position) and ends bit-identical to a run that was never interrupted. When the fit
    completes, the backup is deleted (unless `delete_checkpoint=False`), so the next run starts
    fresh. An explicit `fit(..., ckpt_path=...)` takes precedence over the backup.

    Args:
        backup_dir: where the backup lives (one checkpoint directory, replaced atomically).
        save_freq: "epoch" (after every epoch) or a number of optimizer steps.
        delete_checkpoint: delete the backup when `fit` completes.

    Example:
        >>> model.fit(x, y, epochs=20, callbacks=[BackupAndRestore("backup", save_freq=100)])
    """

    def __init__(
        self, backup_dir: str | Path, save_freq: int | str = "epoch", delete_checkpoint: bool = True
    ) -> None:
        if save_freq != "epoch" and (
            not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1
        ):
            raise ValueError(
                "Received an invalid value for `save_freq`, expected 'epoch' or a positive "
                f"integer (optimizer steps). Received: save_freq={save_freq!r}"
            )
        self.backup_dir = Path(backup_dir)
        self.save_freq, self.delete_checkpoint = save_freq, delete_checkpoint

    def latest(self) -> Path | None:
        """The newest complete backup, or None (the Trainer resumes from it when fit starts)."""
        from ember.train.checkpoint import find_last

        return find_last(self.backup_dir)

    def uses_hook(self, hook: str) -> bool:
        if hook == "on_train_batch_end":  # called every step: only for step-wise backups
            return self.save_freq != "epoch"
        return super().uses_hook(hook)

    def on_train_batch_end(self, trainer: Trainer, module: Any, logs: dict, batch_idx: int) -> None:
        if trainer.global_step % self.save_freq == 0 and trainer.at_step_boundary:
            trainer.save_checkpoint(self.backup_dir / "backup")

    def on_epoch_end(self, trainer: Trainer, module: Any, logs: dict) -> None:
        # The last epoch's backup would be deleted at once when fit ends: skip writing it.
        last_and_deleted = self.delete_checkpoint and trainer.is_last_epoch
        if self.save_freq == "epoch" and not last_and_deleted:
            trainer.save_checkpoint(self.backup_dir / "backup", epoch_done=True)

    def on_fit_end(self, trainer: Trainer, module: Any) -> None:
        if self.delete_checkpoint and trainer.is_global_zero:
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            log.info("BackupAndRestore: training complete; removed the backup %s", self.backup_dir)
