"""The strategies: how the Trainer places the model and talks to other processes.

`Strategy` is the interface the Trainer uses and `SingleDevice` its one-process form.
`DDPStrategy` and `FSDPStrategy` run one process per device in a `torch.distributed` process
group (gloo on CPU, NCCL on CUDA). `ember.train.distributed.get_strategy` picks and starts one
from the Trainer's arguments; the classes are re-exported there.
"""

from __future__ import annotations

import atexit
import datetime
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ember.train.launch import ClusterEnv, free_port
from ember.train.precision import resolve_device

__all__ = ["DDPStrategy", "FSDPStrategy", "SingleDevice", "Strategy"]

log = logging.getLogger(__name__)


class Strategy:
    """The interface the Trainer uses; one process, one device.

    Subclasses override placement (`setup_module`, `wrap_step`), collectives (`barrier`,
    `reduce_mean`, `broadcast`) and checkpoint state (`model_state_dict`, ...).
    """

    rank = 0
    local_rank = 0
    world_size = 1
    shards_parameters = False  # True when no process holds the whole model (FSDP)

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device if device is not None else torch.device("cpu")

    def setup_environment(self, accelerator: str, env: ClusterEnv | None) -> None:
        """Pick this process's device (and, in subclasses, join the process group)."""
        self.device = resolve_device(accelerator, env.local_rank if env else 0)

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Move (and, in subclasses, shard) the module; returns the module to call for forward."""
        return module.to(self.device)

    def wrap_step(self, module: nn.Module, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The train step the loop calls; DDP routes it through its forward to sync gradients."""
        return step

    def barrier(self) -> None:
        """Wait for every process (no-op with one)."""

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over processes (identity with one)."""
        return value

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (identity with one)."""
        return obj

    def model_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """The full model state to checkpoint (called on every rank; used on rank 0)."""
        return module.state_dict()

    def optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state to checkpoint (called on every rank; used on rank 0)."""
        return optimizer.state_dict()

    def load_model_state_dict(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load a full model state (every rank reads the same checkpoint)."""
        module.load_state_dict(state)

    def load_optimizer_state_dict(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict
    ) -> None:
        """Load optimizer state; states keyed by parameter name (FSDP checkpoints) work too."""
        optimizer.load_state_dict(_by_index(module, optimizer, state))

    def teardown(self) -> None:
        """Release what `setup_environment` acquired."""


class SingleDevice(Strategy):
    """One process on one device (CPU, one GPU or MPS)."""


class _ProcessGroupStrategy(Strategy):
    """One process per device in a `torch.distributed` process group."""

    def __init__(self, backend: str | None = None, timeout: float = 1800.0) -> None:
        super().__init__()
        if timeout <= 0:
            raise ValueError(
                f"Received an invalid value for `timeout`, expected seconds > 0. "
                f"Received: timeout={timeout!r}"
            )
        self.backend, self.timeout = backend, timeout
        self._owns_group = False

    def setup_environment(self, accelerator: str, env: ClusterEnv | None) -> None:
        import torch.distributed as dist

        private = env is None  # one process without a launcher: a group of its own
        env = env or ClusterEnv()
        self.rank, self.local_rank, self.world_size = env.rank, env.local_rank, env.world_size
        self.device = resolve_device(accelerator, env.local_rank)
        if self.backend is None:
            self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        if dist.is_initialized():
            return
        timeout = datetime.timedelta(seconds=self.timeout)
        kwargs: dict[str, Any] = dict(backend=self.backend, timeout=timeout)
        if private:
            kwargs.update(init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
        if self.device.type == "cuda":
            kwargs["device_id"] = self.device  # NCCL connects eagerly: errors show up here
        dist.init_process_group(**kwargs)
        self._owns_group = True
        atexit.register(self.teardown)
        log.info("Joined process group: rank %d of %d (%s).", self.rank, self.world_size, kwargs)

    def barrier(self) -> None:
        import torch.distributed as dist

        if self.device.type == "cuda":
            dist.barrier(device_ids=[self.device.index])
        else:
            dist.barrier()

    def reduce_mean(self, value: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        value = value.detach().clone().float()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None

    def teardown(self) -> None:
        import torch.distributed as dist

        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False


class DDPStrategy(_ProcessGroupStrategy):
    """DistributedDataParallel: every process holds the model; gradients are averaged.

    The whole train step runs inside DDP's forward (DDP wraps a small module whose forward is
    the step), so `self(x)` inside `Model.train_step` is covered and backward all-reduces.

    Args:
        backend: "gloo", "nccl" or None (NCCL on CUDA, gloo otherwise).
        timeout: seconds a collective may wait for the others before failing.
        find_unused_parameters: allow parameters that get no gradient in a step.
        **ddp_kwargs: passed to `torch.nn.parallel.DistributedDataParallel`.

    Example:
        >>> ember.Trainer(strategy=DDPStrategy(find_unused_parameters=True), devices=2)
    """

    def __init__(
        self,
        backend: str | None = None,
        timeout: float = 1800.0,
        find_unused_parameters: bool = False,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(backend, timeout)
        self.ddp_kwargs = {"find_unused_parameters": find_unused_parameters, **ddp_kwargs}
        self.wrapped: nn.Module | None = None

    def wrap_step(self, module: nn.Module, step: Callable[[Any], Any]) -> Callable[[Any], Any]:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.wrapped = DistributedDataParallel(
            _StepModule(module, step), device_ids=device_ids, **self.ddp_kwargs
        )
        return self.wrapped


class FSDPStrategy(_ProcessGroupStrategy):
    """Fully sharded data parallel (FSDP2, `torch.distributed.fsdp.fully_shard`).

    Parameters, gradients and optimizer state are sharded over processes. The root module is
    always sharded; pass `shard_classes` (e.g. your transformer block) to shard per block, so
    only one block's parameters are gathered at a time. Checkpoints hold the full state
    (gathered with `torch.distributed.checkpoint.state_dict`), so they load at any world size
    and into a one-process model.

    Args:
        backend: "gloo", "nccl" or None (NCCL on CUDA, gloo otherwise).
        timeout: seconds a collective may wait for the others before failing.
        shard_classes: module classes to shard as separate units.
        reshard_after_forward: free gathered parameters after forward (ZeRO-3) or keep them.

    Example:
        >>> ember.Trainer(strategy=FSDPStrategy(shard_classes=(Block,)), devices=2)
    """

    shards_parameters = True

    def __init__(
        self,
        backend: str | None = None,
        timeout: float = 1800.0,
        shard_classes: tuple[type[nn.Module], ...] = (),
        reshard_after_forward: bool = True,
    ) -> None:
        super().__init__(backend, timeout)
        self.shard_classes = tuple(shard_classes)
        self.reshard_after_forward = reshard_after_forward

    def setup_module(self, module: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        module.to(self.device)
        if isinstance(module, FSDPModule):
            return module  # already sharded (a second fit on the same model)
        for sub in list(module.modules())[1:]:
            if self.shard_classes and isinstance(sub, self.shard_classes):
                fully_shard(sub, reshard_after_forward=self.reshard_after_forward)
        fully_shard(module, reshard_after_forward=self.reshard_after_forward)
        return module

    def model_state_dict(self, module: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(module, options=_full_options())

    def optimizer_state_dict(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(module, optimizer, options=_full_options())

    def load_model_state_dict(self, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))

    def load_optimizer_state_dict(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict
    ) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        if not state.get("state"):  # nothing to shard (plain SGD): only the hyperparameters
            return super().load_optimizer_state_dict(module, optimizer, state)
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(module, optimizer, state, options=options)


class _StepModule(nn.Module):
    """A module whose forward is a train step, so DDP's forward hooks wrap the whole step."""

    def __init__(self, module: nn.Module, step: Callable[[Any], Any]) -> None:
        super().__init__()
        self.module = module
        self._step = step

    def forward(self, batch: Any) -> Any:
        return self._step(batch)


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def _by_index(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """An optimizer state keyed by parameter name (FSDP checkpoints) re-keyed by position."""
    groups = state.get("param_groups") or [{}]
    if not any(isinstance(p, str) for p in groups[0].get("params", [])):
        return state  # already torch's positional format
    names = {id(p): n for n, p in module.named_parameters()}
    index: dict[str, int] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            index[names[id(p)]] = len(index)
    return {
        "state": {index[n]: v for n, v in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in groups],
    }
