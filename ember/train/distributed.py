"""Strategies: how the Trainer places the model and talks to other processes.

`SingleDevice` is one process. `DDPStrategy` and `FSDPStrategy` run one process per device on
`torch.distributed`: started by torchrun (which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT), or by `ember.train.launch` when `Trainer(devices=N)` runs outside torchrun.
Gloo is the backend on CPU, NCCL on CUDA.

This module turns the Trainer's `strategy`, `devices` and `num_nodes` into a ready strategy
(`get_strategy`); the strategy classes live in `ember.train.strategies` and are re-exported here.
"""

from __future__ import annotations

from typing import Any

import torch

from ember.train.launch import (
    ClusterEnv,
    check_launch_matches,
    detect_environment,
    multi_node_message,
    relaunch,
)
from ember.train.strategies import DDPStrategy, FSDPStrategy, SingleDevice, Strategy

__all__ = [
    "DDPStrategy",
    "FSDPStrategy",
    "SingleDevice",
    "Strategy",
    "STRATEGIES",
    "get_strategy",
]

STRATEGIES = ("auto", "single_device", "ddp", "fsdp")


def get_strategy(
    strategy: str | Strategy = "auto",
    accelerator: str = "auto",
    devices: int | str = "auto",
    num_nodes: int = 1,
) -> Strategy:
    """Resolve the Trainer's `strategy`, `devices` and `num_nodes` into a ready Strategy.

    Under torchrun the strategy joins the job ("auto" becomes DDP when WORLD_SIZE > 1). Outside
    it, `devices > 1` starts the processes (see `ember.train.launch.relaunch`): this call then
    returns only in the started processes, and the launching process exits with the job's status.

    Args:
        strategy: "auto", "single_device", "ddp", "fsdp" or a Strategy object.
        accelerator: "auto", "cpu", "cuda" or "mps".
        devices: processes per node, or "auto" (torchrun's count, else 1).
        num_nodes: machines in the job (multi-node jobs are started with torchrun).

    Returns:
        The strategy, with its device chosen and its process group joined.

    Example:
        >>> get_strategy("auto").world_size
        1
    """
    _check_arguments(strategy, devices, num_nodes)
    env = detect_environment()
    if env is None:
        nproc = 1 if devices == "auto" else int(devices)
        if nproc * num_nodes > 1:
            if num_nodes > 1:
                raise ValueError(multi_node_message(num_nodes))
            _check_gpu_count(accelerator, nproc)
            relaunch(nproc)  # raises SystemExit in this (launching) process
    else:
        check_launch_matches(env, devices, num_nodes)
    chosen = _make_strategy(strategy, env)
    chosen.setup_environment(accelerator, env)
    return chosen


def _make_strategy(strategy: str | Strategy, env: ClusterEnv | None) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    world = env.world_size if env else 1
    if strategy == "auto":
        strategy = "ddp" if world > 1 else "single_device"
    if strategy == "single_device":
        if world > 1:
            raise ValueError(
                f"strategy='single_device' cannot run in a job of {world} processes "
                "(WORLD_SIZE): choose one of: auto, ddp, fsdp"
            )
        return SingleDevice()
    return DDPStrategy() if strategy == "ddp" else FSDPStrategy()


def _check_arguments(strategy: Any, devices: Any, num_nodes: Any) -> None:
    if not isinstance(strategy, Strategy) and strategy not in STRATEGIES:
        raise ValueError(
            f"Unknown strategy {strategy!r}. Choose one of: {', '.join(STRATEGIES)}, "
            "or pass a Strategy object (DDPStrategy(...), FSDPStrategy(...))."
        )
    if devices != "auto" and (not isinstance(devices, int) or isinstance(devices, bool)):
        raise ValueError(
            f"Received an invalid value for `devices`, expected a positive integer or 'auto'. "
            f"Received: devices={devices!r}"
        )
    if devices != "auto" and devices < 1:
        raise ValueError(
            f"Received an invalid value for `devices`, expected a positive integer or 'auto'. "
            f"Received: devices={devices!r}"
        )
    if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
        raise ValueError(
            f"Received an invalid value for `num_nodes`, expected a positive integer. "
            f"Received: num_nodes={num_nodes!r}"
        )


def _check_gpu_count(accelerator: str, nproc: int) -> None:
    if accelerator in ("cuda", "auto") and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if nproc > count:
            raise ValueError(
                f"devices={nproc} but only {count} CUDA device(s) are visible. "
                f"Pass devices<={count}, or accelerator='cpu' for CPU processes."
            )
