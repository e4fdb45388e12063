"""The Trainer's state between steps: data loaders that can resume mid-epoch, epoch accumulators,
checkpoint save and restore. Kept out of trainer.py so the loop there reads top to bottom."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from ember.train.sampler import ResumableSampler

if TYPE_CHECKING:
    from ember.train.program import Program
    from ember.train.trainer import Trainer

log = logging.getLogger(__name__)

FORMAT = "ember.checkpoint"


# -- data -----------------------------------------------------------------------------------------
def prepare_loader(trainer: Trainer, data: Any, *, shuffle: bool) -> Any:
    """Rebuild a DataLoader over a `ResumableSampler` (seeded, sharded, skippable).

    Loaders with a custom sampler, batch sampler or an iterable dataset are used as they are; a
    resumed epoch then skips batches by iterating over them.
    """
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = DataLoader(data, batch_size=32, shuffle=shuffle)
    if not isinstance(data, DataLoader):
        if not hasattr(data, "__iter__"):
            raise TypeError(
                f"Training data must be a DataLoader, a Dataset or an iterable of batches. "
                f"Received: {type(data).__name__}"
            )
        if isinstance(data, Iterator):  # a generator: peeking at it must not lose a batch
            from ember.data import BatchStream

            return BatchStream(data)
        return data
    if data.batch_size is None or not isinstance(data.sampler, (RandomSampler, SequentialSampler)):
        return data
    sampler = ResumableSampler(
        len(data.dataset),
        shuffle=isinstance(data.sampler, RandomSampler),
        seed=trainer.seed or 0,
        rank=trainer.strategy.rank,
        world_size=trainer.strategy.world_size,
        drop_last=trainer.strategy.world_size > 1,
    )
    generator = torch.Generator()  # worker seeds come from here, not from the global RNG
    kwargs = dict(
        batch_size=data.batch_size,
        sampler=sampler,
        num_workers=data.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=data.pin_memory,
        drop_last=data.drop_last,
        timeout=data.timeout,
        worker_init_fn=data.worker_init_fn,
        generator=generator,
        persistent_workers=data.persistent_workers,
    )
    if data.num_workers > 0:
        kwargs["prefetch_factor"] = data.prefetch_factor
    return DataLoader(data.dataset, **kwargs)


def begin_epoch(trainer: Trainer, loader: Any) -> None:
    """Select the epoch's order, skip what a resumed checkpoint already consumed, reset sums."""
    skip = trainer.batch_in_epoch
    if isinstance(loader, DataLoader) and isinstance(loader.sampler, ResumableSampler):
        loader.sampler.set_epoch(trainer.current_epoch)
        loader.sampler.set_start(skip * loader.batch_size)
        loader.generator.manual_seed((trainer.seed or 0) * 7919 + trainer.current_epoch)
        trainer.num_train_batches = skip + len(loader)
    else:
        trainer.num_train_batches = _safe_len(loader)
        if skip:
            log.warning(
                "Resuming mid-epoch over a custom loader: skipping %d batches by iterating.", skip
            )
            it = iter(loader)
            for _ in range(skip):
                next(it)
    if trainer.limit_train_batches is not None and trainer.num_train_batches is not None:
        trainer.num_train_batches = min(trainer.num_train_batches, trainer.limit_train_batches)
    if not skip:
        trainer._epoch_loss_sum = _zero_loss_sum(trainer.device)
        trainer._epoch_samples = 0
    trainer._epoch_start = time.monotonic()


def _zero_loss_sum(device: torch.device) -> float | torch.Tensor:
    """The epoch's running loss sum: a Python float on CPU (the loop reads each loss anyway), a
    device tensor elsewhere (no host sync per step)."""
    return 0.0 if device.type == "cpu" else torch.zeros((), device=device)


def _loss_sum_state(total: float | torch.Tensor) -> torch.Tensor:
    if isinstance(total, torch.Tensor):
        return total.detach().cpu()
    return torch.tensor(total, dtype=torch.float64)  # a float sum comes back exactly


def _loss_sum_restored(saved: torch.Tensor | None, device: torch.device) -> float | torch.Tensor:
    if saved is None:
        return _zero_loss_sum(device)
    return float(saved) if device.type == "cpu" else saved.to(device)


def _safe_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def batch_mover(device: torch.device):
    """A function moving a batch (tensors in lists, tuples, dicts) to `device`."""
    if device.type == "cpu":
        return lambda batch: batch  # data loaders already produce CPU tensors

    def move(batch: Any) -> Any:
        if isinstance(batch, torch.Tensor):
            return batch.to(device, non_blocking=True)
        if isinstance(batch, (list, tuple)):
            return type(batch)(move(b) for b in batch)
        if isinstance(batch, dict):
            return {k: move(v) for k, v in batch.items()}
        return batch

    return move


def batch_size(batch: Any) -> int:
    """The number of samples in a batch: the first dimension of its first tensor (1 if none)."""
    if type(batch) in (list, tuple) and batch and type(batch[0]) is torch.Tensor:
        return batch[0].shape[0] if batch[0].ndim else 1  # the usual (x, y): checked first
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, dict) and batch:
        return batch_size(next(iter(batch.values())))
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.ndim else 1


def example_input(loader: Any, device: torch.device) -> Any:
    """The inputs of the first batch (for graph logging)."""
    from ember.train.steps import split_batch

    batch = (
        next(iter(loader))
        if not isinstance(loader, DataLoader)
        else loader.collate_fn([loader.dataset[0]])
    )
    x, _ = split_batch(batch_mover(device)(batch))
    return x


def materialize(module: torch.nn.Module, loader: Any, device: torch.device) -> None:
    """Build lazy parameters with one forward pass on the first sample, without touching the RNG."""
    from torch.nn.parameter import is_lazy

    if not any(is_lazy(p) for p in module.parameters()):
        return
    module.to(device)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        was_training = module.training
        module.eval()
        x = example_input(loader, device)
        module(**x) if isinstance(x, dict) else module(*x) if isinstance(x, tuple) else module(x)
        module.train(was_training)


# -- epoch logs -----------------------------------------------------------------------------------
def epoch_train_logs(trainer: Trainer, program: Program) -> dict[str, float]:
    mean = trainer._epoch_loss_sum / max(trainer._epoch_samples, 1)
    if trainer.strategy.world_size > 1:  # a float sum (CPU) becomes a tensor to reduce
        mean = trainer.strategy.reduce_mean(torch.as_tensor(mean, device=trainer.device))
    logs = {"loss": float(mean)}
    logs.update(program.compute_metrics("train", trainer.strategy))
    return logs


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP-sharded DTensor (collective), else `t`."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def norm_tags(module: torch.nn.Module) -> list[tuple[str, str, torch.nn.Parameter]]:
    """Per parameter: the tags of its weight and gradient norms, and the parameter.

    Built once per fit (after sharding, which replaces the parameters), read after every epoch.
    """
    return [(f"norm/weight/{n}", f"norm/grad/{n}", p) for n, p in module.named_parameters()]


def epoch_info(trainer: Trainer, tags: list[tuple[str, str, torch.nn.Parameter]]) -> dict[str, Any]:
    """The epoch's time, throughput and the norms of every weight and gradient (`norm_tags`)."""
    seconds = time.monotonic() - trainer._epoch_start
    names, tensors = [], []
    for weight_tag, grad_tag, p in tags:
        names.append(weight_tag)
        tensors.append(p)
        if p.grad is not None:
            names.append(grad_tag)
            tensors.append(p.grad)
    values = []
    with torch.no_grad():
        if trainer.strategy.shards_parameters:
            tensors = [_full(t) for t in tensors]
        if tensors:  # one fused kernel and one read for every norm, in fp32
            values = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32)).tolist()
    return {
        "epoch_time": seconds,
        "samples_per_sec": trainer._epoch_samples / seconds if seconds > 0 else 0.0,
        "norms": dict(zip(names, values)),
    }


# -- checkpoints ----------------------------------------------------------------------------------
def save(trainer: Trainer, path: Path, epoch_done: bool) -> Path:
    """Write a resumable checkpoint; with `epoch_done` it resumes at the next epoch's start."""
    from ember.train.checkpoint import save_checkpoint
    from ember.train.rng import get_rng_state

    module, strategy = trainer._program.module, trainer.strategy
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
            "callbacks": trainer._runner.state_dict(),
            "loss_sum": None if epoch_done else _loss_sum_state(trainer._epoch_loss_sum),
            "metrics": metric_state,
        }
        meta = {
            "format": FORMAT,
            "epoch": trainer.current_epoch + (1 if epoch_done else 0),
            "batch_in_epoch": 0 if epoch_done else trainer.batch_in_epoch,
            "samples_in_epoch": 0 if epoch_done else trainer._epoch_samples,
            "global_step": trainer.global_step,
            "seed": trainer.seed,
            "should_stop": trainer.should_stop,
            "hparams": {
                k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v)
                for k, v in trainer.hparams.items()
            },
            "history": trainer.history.state_dict(),
            "logged_metrics": trainer.logged_metrics,
            "time": time.time(),
        }
        save_checkpoint(path, model_state=model_state, trainer_state=trainer_state, meta=meta)
    trainer.strategy.barrier()
    return path


def find_checkpoint(trainer: Trainer, ckpt_path: str | Path) -> Any:
    """Load the checkpoint named by `ckpt_path` ("last" or a directory)."""
    from ember.train.checkpoint import find_last, load_checkpoint

    if str(ckpt_path) != "last":
        return load_checkpoint(Path(ckpt_path))
    # Rank 0 chooses, so every rank resumes from the same checkpoint.
    found = _find_last_run(trainer, find_last) if trainer.is_global_zero else None
    found = trainer.strategy.broadcast(found)
    if found is None:
        log.warning(
            "ckpt_path='last': no complete checkpoint under %s; starting fresh.",
            trainer._run_dir.root_dir,
        )
        return None
    return load_checkpoint(found)


def _find_last_run(trainer: Trainer, find_last: Any) -> Path | None:
    cb = trainer.checkpoint_callback
    if cb is not None and cb.dirpath is not None:
        return find_last(cb.dirpath)
    root = trainer._run_dir.root_dir
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
        id(trainer._run_dir): trainer._run_dir,
        **{id(x): x for x in trainer.loggers},
    }.values():
        logger.version = (
            best[2].name if not best[2].name.startswith("version_") else int(best[2].name[8:])
        )
    return best[1]


def restore(trainer: Trainer, program: Program, ckpt: Any) -> None:
    """Load model, optimizer, scheduler, scaler, RNG, callbacks and loop position from `ckpt`."""
    from ember.train.rng import set_rng_state

    meta, state = ckpt.meta, ckpt.trainer_state
    check_training_meta(ckpt.path, meta, state)
    _load_model_state(trainer.strategy, program.module, ckpt.model_state, ckpt.path)
    trainer.strategy.load_optimizer_state_dict(
        program.module, trainer.optimizer, state["optimizer"]
    )
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    if trainer.precision.scaler is not None and state["scaler"] is not None:
        trainer.precision.scaler.load_state_dict(state["scaler"])
    trainer._runner.load_state_dict(state["callbacks"])
    trainer.current_epoch, trainer.batch_in_epoch = meta["epoch"], meta["batch_in_epoch"]
    trainer.global_step, trainer.should_stop = meta["global_step"], meta["should_stop"]
    trainer.history.load_state_dict(meta["history"])
    trainer.logged_metrics = dict(meta["logged_metrics"])
    trainer._epoch_samples = meta["samples_in_epoch"]
    trainer._epoch_loss_sum = _loss_sum_restored(state["loss_sum"], trainer.device)
    _load_metric_states(program.module, state["metrics"])
    set_rng_state(state["rng"])
    log.info(
        "Resumed from %s at epoch %d, batch %d, step %d.",
        ckpt.path,
        trainer.current_epoch,
        trainer.batch_in_epoch,
        trainer.global_step,
    )


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
    from ember.train.steps import build_metrics

    cfg.num_classes = saved["num_classes"]
    device = next(iter(module.parameters()), torch.zeros(())).device
    for key, values in saved["states"].items():
        stage, name = key.split("/", 1)
        if stage not in cfg.metric_objects:
            cfg.metric_objects[stage] = build_metrics(cfg, device)
        metric = cfg.metric_objects[stage][name]
        for k, v in values.items():
            setattr(metric, k, v)


def share_run_dir(trainer: Trainer) -> None:
    """Give every rank rank 0's run directory (version numbers), so all write to the same run."""
    if trainer.is_global_zero:
        from ember.train.loggers import share_version

        share_version(trainer.loggers)  # a TensorBoard and a CSV logger: one version directory
    if trainer.strategy.world_size == 1:
        return
    runs = {id(trainer._run_dir): trainer._run_dir, **{id(x): x for x in trainer.loggers}}
    if trainer.is_global_zero:
        for run in runs.values():
            _ = run.log_dir  # resolves (and creates) the version
    versions = trainer.strategy.broadcast([r.version for r in runs.values()])
    for run, version in zip(runs.values(), versions):
        run.version = version


def write_run_record(trainer: Trainer, program: Program, loader: Any) -> None:
    """`run.json`: what the report shows besides the history (hparams, model summary)."""
    record = {
        "hparams": trainer.hparams,
        "model": type(program.module).__name__,
        "started": time.time(),
    }
    try:
        if trainer.strategy.shards_parameters:
            raise RuntimeError("a sharded model runs forward on every rank together")
        from ember.summary import summary

        record["summary"] = summary(
            program.module, example_input=example_input(loader, trainer.device)
        )
    except Exception as exc:  # a summary is a nicety; never fail a run for it
        log.debug("No model summary for the run record: %s", exc)
    (trainer.log_dir / "run.json").write_text(json.dumps(record, default=str, indent=1))


_META_COUNTS = ("epoch", "batch_in_epoch", "samples_in_epoch", "global_step")
_STATE_KEYS = ("optimizer", "scheduler", "scaler", "rng", "callbacks", "loss_sum", "metrics")


def check_training_meta(path: Path, meta: dict, state: Any) -> None:
    """Refuse a training checkpoint whose meta.json or trainer state is not what ember writes.

    Raises:
        CheckpointError: naming the first field that is missing or holds a wrong value.
    """
    from ember.train.checkpoint_files import CheckpointError

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
