"""Start N local processes when `Trainer(devices=N)` runs outside torchrun.

The launching process re-runs the user's script (or `-m` module) through torchrun
(`python -m torch.distributed.run --standalone --nproc-per-node N ...`), waits, and exits with
the job's status. torchrun's agent watches the workers: when one rank fails, it stops the
others and the job exits non-zero, with the failing rank's traceback on stderr - never a hang.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = ["ClusterEnv", "detect_environment", "free_port", "relaunch", "torchrun_command"]

log = logging.getLogger(__name__)

# Mains that must never be re-run N times: test runners and notebook kernels.
_REFUSED_MAINS = ("pytest", "py.test", "ipykernel_launcher", "ipykernel", "IPython")


@dataclass(frozen=True)
class ClusterEnv:
    """Where this process sits in a job, as torchrun describes it."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1


def detect_environment(environ: Mapping[str, str] | None = None) -> ClusterEnv | None:
    """Read torchrun's variables; None when this process was not started by a launcher.

    Args:
        environ: the environment to read (default `os.environ`).

    Returns:
        A `ClusterEnv`, or None without RANK / WORLD_SIZE.

    Example:
        >>> detect_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).rank
        1
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    world = int(env["WORLD_SIZE"])
    return ClusterEnv(
        rank=int(env["RANK"]),
        local_rank=int(env.get("LOCAL_RANK", 0)),
        world_size=world,
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


def free_port() -> int:
    """A TCP port that was free on localhost a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int, argv: Sequence[str] | None = None) -> list[str]:
    """The command that re-runs this process's script in `nproc` processes under torchrun.

    Args:
        nproc: processes to start on this machine.
        argv: the script and its arguments (default: this process's main script or `-m`
            module, and `sys.argv[1:]`).

    Returns:
        The command line, starting with `sys.executable`.

    Example:
        >>> torchrun_command(2, ["train.py", "--lr", "0.1"])[-3:]
        ['train.py', '--lr', '0.1']
    """
    target, args = (_target(), sys.argv[1:]) if argv is None else ([argv[0]], list(argv[1:]))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    torchrun += ["--nproc-per-node", str(nproc), "--max-restarts", "0"]
    return [*torchrun, *target, *args]


def relaunch(nproc: int) -> NoReturn:
    """Run this script in `nproc` processes under torchrun, wait, and exit with their status.

    Args:
        nproc: processes to start on this machine (one per device).

    Raises:
        SystemExit: always, with torchrun's exit code (0 when every rank succeeded).
        RuntimeError: this Python session has no script to re-run (notebook, `python -c`, pytest).

    Example:
        >>> ember.Trainer(devices=2)  # in train.py: `python train.py` starts 2 ranks
    """
    cmd = torchrun_command(nproc)
    log.info("Starting %d processes: %s", nproc, " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    code = subprocess.call(cmd, env=env)
    if code != 0:
        log.error("The distributed job failed (exit code %d); see the rank errors above.", code)
    raise SystemExit(code)


def _target() -> list[str]:
    """How to run the main module again: [path] for a script, ["-m", name] for `python -m`."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    file = getattr(main, "__file__", None)
    shown = name or (os.path.basename(file) if file else "an interactive session")
    if name is not None and name.removesuffix(".__main__") not in _REFUSED_MAINS:
        return ["-m", name.removesuffix(".__main__")]
    if file is not None and name is None and not os.path.basename(file).startswith(_REFUSED_MAINS):
        return [os.path.abspath(file)]
    raise RuntimeError(
        f"Trainer(devices=N) outside torchrun re-runs your script in N processes, but this "
        f"process runs {shown}, which cannot be re-run. Put the training code in a script and run "
        "`python train.py`, or start it yourself: `torchrun --nproc-per-node N train.py`."
    )


def check_launch_matches(env: ClusterEnv, devices: Any, num_nodes: int) -> None:
    if devices != "auto" and devices != env.local_world_size:
        raise ValueError(
            f"devices={devices} but the launcher started {env.local_world_size} processes on "
            f"this node (LOCAL_WORLD_SIZE). Pass devices='auto' or match --nproc-per-node."
        )
    if num_nodes > 1 and num_nodes * env.local_world_size != env.world_size:
        raise ValueError(
            f"num_nodes={num_nodes} with {env.local_world_size} processes per node is "
            f"{num_nodes * env.local_world_size} processes, but WORLD_SIZE={env.world_size}."
        )


def multi_node_message(num_nodes: int) -> str:
    return (
        f"num_nodes={num_nodes}: start multi-node jobs with torchrun on every node, e.g.\n"
        f"  torchrun --nnodes {num_nodes} --nproc-per-node 8 --rdzv-backend c10d "
        "--rdzv-endpoint HOST:29500 train.py\n(see docs/distributed.md for SLURM)."
    )
