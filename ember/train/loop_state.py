"""`LoopState`: where the fit loop is (epoch, batch, step), what the current epoch has summed so
far, and the loaders it reads; `prepare_loader` builds loaders that can resume mid-epoch.

The Trainer owns one `LoopState` and exposes its position as `trainer.current_epoch`,
`trainer.global_step`, ...; `ember.train.resume` saves and restores it with a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler

from ember.train.sampler import ResumableSampler
from ember.train.step_losses import StepLosses

__all__ = ["LoopState", "epoch_info", "norm_tags", "prepare_loader"]

log = logging.getLogger(__name__)


class LoopState:
    """The fit loop's position and the running sums of the current epoch.

    Attributes:
        epoch: the current epoch (0-based); `global_step`: optimizer steps taken.
        batch_in_epoch: batches of the current epoch done (a resumed epoch starts here).
        num_batches: batches in the current epoch (None: unknown length).
        should_stop: stop after the current epoch (or batch, for `max_steps` and callbacks).
        at_step_boundary: the batch just done ended an optimizer step (gradient accumulation).
        loss_sum, samples: the epoch's sample-weighted loss sum and sample count so far; the
            sum is a Python float on CPU (the loop reads each loss anyway) and a device tensor
            elsewhere (no host sync per step).
        epoch_start: `time.monotonic()` when the epoch started.
        step_losses: the loss of every optimizer step of this fit (`StepLosses`).
        train_loader, val_loader: the loaders of the running fit.

    Example:
        >>> state = LoopState()
        >>> batches = state.begin_epoch([(x, y)] * 3, seed=0, limit=None, device=torch.device("cpu"))
        >>> state.num_batches
        3
    """

    __slots__ = (
        "epoch",
        "global_step",
        "batch_in_epoch",
        "num_batches",
        "should_stop",
        "at_step_boundary",
        "loss_sum",
        "samples",
        "epoch_start",
        "train_loader",
        "val_loader",
        "step_losses",
    )

    def __init__(self) -> None:
        self.train_loader: Any = None
        self.val_loader: Any = None
        self.reset()

    def reset(self) -> None:
        """Back to the start of a fit: epoch 0, step 0, nothing summed (loaders kept)."""
        self.epoch = self.global_step = self.batch_in_epoch = 0
        self.num_batches: int | None = None
        self.should_stop = False
        self.at_step_boundary = True
        self.loss_sum: float | torch.Tensor = 0.0
        self.samples = 0
        self.epoch_start = 0.0
        self.step_losses = StepLosses()  # the loss of every optimizer step (for the report)

    def begin_epoch(
        self, loader: Any, *, seed: int | None, limit: int | None, device: torch.device
    ) -> Iterable:
        """Select the epoch's order, skip what a resumed checkpoint already consumed, reset sums.

        Returns what the epoch iterates: the loader, or for a resumed epoch over a loader without
        a `ResumableSampler`, an iterator over it past the batches already done.
        """
        skip = self.batch_in_epoch
        batches: Iterable = loader
        if isinstance(loader, DataLoader) and isinstance(loader.sampler, ResumableSampler):
            loader.sampler.set_epoch(self.epoch)
            loader.sampler.set_start(skip * loader.batch_size)
            loader.generator.manual_seed((seed or 0) * 7919 + self.epoch)
            self.num_batches = skip + len(loader)
        else:
            self.num_batches = _safe_len(loader)
            if skip:
                log.warning(
                    "Resuming mid-epoch over a custom loader: skipping %d batches by iterating.",
                    skip,
                )
                batches = iter(loader)
                for _ in range(skip):
                    next(batches)
        if limit is not None and self.num_batches is not None:
            self.num_batches = min(self.num_batches, limit)
        if not skip:
            self.loss_sum = zero_loss_sum(device)
            self.samples = 0
        self.epoch_start = time.monotonic()
        return batches

    def end_epoch(self) -> None:
        """Move to the start of the next epoch."""
        self.epoch += 1
        self.batch_in_epoch = 0

    def mean_loss(self, strategy: Any, device: torch.device) -> float:
        """The epoch's mean training loss so far, averaged over every rank."""
        mean = self.loss_sum / max(self.samples, 1)
        if strategy.world_size > 1:  # a float sum (CPU) becomes a tensor to reduce
            mean = strategy.reduce_mean(torch.as_tensor(mean, device=device))
        return float(mean)

    def epoch_seconds(self) -> float:
        """Seconds since the epoch started."""
        return time.monotonic() - self.epoch_start


def zero_loss_sum(device: torch.device) -> float | torch.Tensor:
    """An empty epoch loss sum: a float on CPU, a device tensor elsewhere (see `LoopState`)."""
    return 0.0 if device.type == "cpu" else torch.zeros((), device=device)


def _safe_len(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def prepare_loader(
    data: Any, *, shuffle: bool, seed: int | None, rank: int = 0, world_size: int = 1
) -> Any:
    """Rebuild a DataLoader over a `ResumableSampler` (seeded, sharded, skippable).

    Loaders with a custom sampler, batch sampler or an iterable dataset are used as they are; a
    resumed epoch then skips batches by iterating over them.

    Args:
        data: a DataLoader, a Dataset or any iterable of batches (a generator too).
        shuffle: shuffle a Dataset given without a loader.
        seed: the run's seed (orders every epoch); rank, world_size: this process's shard.
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
        seed=seed or 0,
        rank=rank,
        world_size=world_size,
        drop_last=world_size > 1,
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


def norm_tags(module: torch.nn.Module) -> list[tuple[str, str, torch.nn.Parameter]]:
    """Per parameter: the tags of its weight and gradient norms, and the parameter.

    Built once per fit (after sharding, which replaces the parameters), read after every epoch.
    """
    return [(f"norm/weight/{n}", f"norm/grad/{n}", p) for n, p in module.named_parameters()]


def epoch_info(
    state: LoopState, tags: list[tuple[str, str, torch.nn.Parameter]], *, sharded: bool
) -> dict[str, Any]:
    """The epoch's time, throughput and the norms of every weight and gradient (`norm_tags`);
    `sharded`: the parameters are FSDP shards (their norms gather them, on every rank)."""
    seconds = state.epoch_seconds()
    names, tensors = [], []
    for weight_tag, grad_tag, p in tags:
        names.append(weight_tag)
        tensors.append(p.detach())  # no graph recorded: the norms need no grad-mode switch
        if p.grad is not None:
            names.append(grad_tag)
            tensors.append(p.grad)
    values = []
    if sharded:
        tensors = [_full(t) for t in tensors]
    if tensors:  # one fused kernel and one read for every norm, in fp32
        values = torch.stack(torch._foreach_norm(tensors, 2, dtype=torch.float32)).tolist()
    return {
        "epoch_time": seconds,
        "samples_per_sec": state.samples / seconds if seconds > 0 else 0.0,
        "norms": dict(zip(names, values)),
    }


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP-sharded DTensor (collective), else `t`."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
