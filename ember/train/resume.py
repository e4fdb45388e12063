"""What a training checkpoint holds besides the files: the resume content.

`save` gathers the model, optimizer, scheduler, scaler, RNG, callback and loop state into the
checkpoint files (`ember.train.checkpoint` writes them atomically and verifies them), `restore`
puts it back, and `check_training_meta` refuses a meta.json that ember did not write. A new field
in a checkpoint goes here: written in `save`, read in `restore`, checked in `check_training_meta`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ember.train.checkpoint import find_last, load_checkpoint, save_checkpoint
from ember.train.checkpoint_files import FORMAT, CheckpointError
from ember.train.loop_state import zero_loss_sum
from ember.train.rng import get_rng_state, set_rng_state
from ember.train.steps import build_metrics

if TYPE_CHECKING:
    from ember.train.callbacks import CallbackRunner
    from ember.train.trainer import Trainer

__all__ = ["check_training_meta", "find_checkpoint", "restore", "save"]

log = logging.getLogger(__name__)


def save(
    trainer: Trainer,
    path: Path,
    epoch_done: bool,
    *,
    module: torch.nn.Module,
    callbacks: CallbackRunner,
) -> Path:
    """Write a resumable checkpoint of `trainer`'s fit of `module`; with `epoch_done` it resumes
    at the next epoch's start.

    Args:
        trainer: the Trainer (its optimizer, scheduler, precision, loop state, history, ...).
        path: the checkpoint directory (replaced atomically).
        epoch_done: the current epoch is finished.
        module: the module being trained; callbacks: the fit's callbacks (their state is saved).
    """
    strategy, loop = trainer.strategy, trainer.loop
    strategy.barrier()
    # Gathering sharded (FSDP) state is collective: every rank takes part, rank 0 writes.
    model_state = strategy.model_state_dict(module)
    optimizer_state = strategy.optimizer_state_dict(module, trainer.optimizer)
    if trainer.is_global_zero:
        metric_state = _metric_states(module) if not epoch_done else {}
        trainer_state = {
            "optimizer": optimizer_state,
            "scheduler": trainer.scheduler.state_dict() if trainer.scheduler is not None else None,
            "scaler": trainer.precision.scaler.state_dict() if trainer.precision.scaler else None,
            "rng": get_rng_state(),
            "callbacks": callbacks.state_dict(),
            "loss_sum": None if epoch_done else _loss_sum_state(loop.loss_sum),
            "metrics": metric_state,
        }
        meta = {
            "format": FORMAT,
            "epoch": loop.epoch + (1 if epoch_done else 0),
            "batch_in_epoch": 0 if epoch_done else loop.batch_in_epoch,
            "samples_in_epoch": 0 if epoch_done else loop.samples,
            "global_step": loop.global_step,
            "seed": trainer.seed,
            "should_stop": loop.should_stop,
            "hparams": {
                k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                for k, v in trainer.hparams.items()
            },
            "history": trainer.history.state_dict(),
            "logged_metrics": trainer.logged_metrics,
            "time": time.time(),
        }
        save_checkpoint(path, model_state=model_state, trainer_state=trainer_state, meta=meta)
    strategy.barrier()
    return path


def find_checkpoint(
    ckpt_path: str | Path, *, strategy: Any, run_dir: Any, loggers: list, checkpoint_dir: Any
) -> Any:
    """Load the checkpoint named by `ckpt_path` ("last" or a directory).

    Args:
        ckpt_path: "last" (the newest complete checkpoint of this run name) or a directory.
        strategy: the Trainer's strategy (rank 0 chooses, the others follow).
        run_dir: the Logger naming the run directories (`root_dir`, `version`); with "last",
            it and `loggers` move to the version being resumed.
        checkpoint_dir: the ModelCheckpoint's own directory, or None (the runs' checkpoints/).
    """
    if str(ckpt_path) != "last":
        return load_checkpoint(Path(ckpt_path))
    # Rank 0 chooses, so every rank resumes from the same checkpoint.
    found = _find_last_run(run_dir, loggers, checkpoint_dir) if strategy.is_global_zero else None
    found = strategy.broadcast(found)
    if found is None:
        log.warning(
            "ckpt_path='last': no complete checkpoint under %s; starting fresh.",
            run_dir.root_dir,
        )
        return None
    return load_checkpoint(found)


def _find_last_run(run_dir: Any, loggers: list, checkpoint_dir: Any) -> Path | None:
    if checkpoint_dir is not None:
        return find_last(checkpoint_dir)
    root = run_dir.root_dir
    best: tuple[int, Path, Any] | None = None
    for version_dir in sorted(root.glob("*")):
        found = (
            find_last(version_dir / "checkpoints")
            if (version_dir / "checkpoints").is_dir()
            else None
        )
        if found is not None:
            step = json.loads((found / "meta.json").read_text()).get("global_step", 0)
            if best is None or step >= best[0]:
                best = (step, found, version_dir)
    if best is None:
        return None
    # Keep writing logs and checkpoints into the run being resumed.
    for logger in {
        id(run_dir): run_dir,
        **{id(x): x for x in loggers},
    }.values():
        logger.version = (
            best[2].name if not best[2].name.startswith("version_") else int(best[2].name[8:])
        )
    return best[1]


def restore(
    trainer: Trainer, ckpt: Any, *, module: torch.nn.Module, callbacks: CallbackRunner
) -> None:
    """Load model, optimizer, scheduler, scaler, RNG, callbacks and loop position from `ckpt`
    (what `save` wrote) into `trainer`, `module` and `callbacks`.

    Raises:
        CheckpointError: the checkpoint's meta.json or trainer state is not what ember writes.
        ValueError: the checkpoint's weights do not fit `module`.
    """
    meta, state, loop = ckpt.meta, ckpt.trainer_state, trainer.loop
    check_training_meta(ckpt.path, meta, state)
    _load_model_state(trainer.strategy, module, ckpt.model_state, ckpt.path)
    trainer.strategy.load_optimizer_state_dict(module, trainer.optimizer, state["optimizer"])
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.precision.scaler is not None and state["scaler"] is not None:
        trainer.precision.scaler.load_state_dict(state["scaler"])
    callbacks.load_state_dict(state["callbacks"])
    loop.epoch, loop.batch_in_epoch = meta["epoch"], meta["batch_in_epoch"]
    loop.global_step, loop.should_stop = meta["global_step"], meta["should_stop"]
    loop.samples = meta["samples_in_epoch"]
    loop.loss_sum = _loss_sum_restored(state["loss_sum"], trainer.device)
    trainer.history.load_state_dict(meta["history"])
    trainer.logged_metrics = dict(meta["logged_metrics"])
    _load_metric_states(module, state["metrics"])
    set_rng_state(state["rng"])
    log.info(
        "Resumed from %s at epoch %d, batch %d, step %d.",
        ckpt.path,
        loop.epoch,
        loop.batch_in_epoch,
        loop.global_step,
    )


def _loss_sum_state(total: float | torch.Tensor) -> torch.Tensor:
    if isinstance(total, torch.Tensor):
        return total.detach().cpu()
    return torch.tensor(total, dtype=torch.float64)  # a float sum comes back exactly


def _loss_sum_restored(saved: torch.Tensor | None, device: torch.device) -> float | torch.Tensor:
    if saved is None:
        return zero_loss_sum(device)
    return float(saved) if device.type == "cpu" else saved.to(device)


def _load_model_state(
    strategy: Any, module: torch.nn.Module, model_state: dict, path: Path
) -> None:
    try:
        strategy.load_model_state_dict(module, model_state)
    except RuntimeError as exc:
        raise ValueError(f"The checkpoint {path} does not fit this model: {exc}") from exc


def _metric_states(module: Any) -> dict:
    cfg = getattr(module, "_ember_compile", None)
    if cfg is None or not cfg.metric_objects:
        return {}
    states = {}
    for stage, metrics in cfg.metric_objects.items():
        for name, metric in metrics.items():
            values = {k: getattr(metric, k) for k in metric._defaults}
            states[f"{stage}/{name}"] = {**values, "_update_count": metric._update_count}
    return {"num_classes": cfg.num_classes, "states": states}


def _load_metric_states(module: Any, saved: dict) -> None:
    cfg = getattr(module, "_ember_compile", None)
    if cfg is None or not saved:
        return
    cfg.num_classes = saved["num_classes"]
    device = next(iter(module.parameters()), torch.zeros(())).device
    for key, values in saved["states"].items():
        stage, name = key.split("/", 1)
        if stage not in cfg.metric_objects:
            cfg.metric_objects[stage] = build_metrics(cfg, device)
        metric = cfg.metric_objects[stage][name]
        for k, v in values.items():
            setattr(metric, k, v)


_META_COUNTS = ("epoch", "batch_in_epoch", "samples_in_epoch", "global_step")
_STATE_KEYS = ("optimizer", "scheduler", "scaler", "rng", "callbacks", "loss_sum", "metrics")


def check_training_meta(path: Path, meta: dict, state: Any) -> None:
    """Refuse a training checkpoint whose meta.json or trainer state is not what ember writes.

    Raises:
        CheckpointError: naming the first field that is missing or holds a wrong value.
    """

    def refuse(field: str, expected: str) -> None:
        got = repr(meta.get(field))[:80] if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(
            path, f"meta.json field {field!r} must be {expected}. Received: {got}"
        )

    if meta.get("format") != FORMAT:
        refuse("format", f"{FORMAT!r} (this is not a training checkpoint)")
    for field in _META_COUNTS:
        value = meta.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            refuse(field, "an integer >= 0")
    if not isinstance(meta.get("should_stop"), bool):
        refuse("should_stop", "true or false")
    history = meta.get("history")
    if not (
        isinstance(history, dict)
        and isinstance(history.get("history"), dict)
        and all(isinstance(v, list) for v in history["history"].values())
        and isinstance(history.get("epochs"), list)
        and isinstance(history.get("epoch_info"), list)
    ):
        refuse("history", "an object with 'history', 'epochs' and 'epoch_info'")
    logged = meta.get("logged_metrics")
    if not isinstance(logged, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in logged.values()
    ):
        refuse("logged_metrics", "an object of numbers")
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(path, f"the trainer state lacks {missing}; it is not ember's")
