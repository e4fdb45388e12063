"""DDP scaling: training samples/s of 1 process against N processes (gloo on CPU, NCCL on GPUs).

    python benchmarks/ddp_scaling.py --nproc 2 --steps 30

Each configuration runs under torchrun with the same per-process batch and threads (weak
scaling: the global batch grows with N), measured side by side in one run. Efficiency =
(samples/s with N) / (N x samples/s with 1). On CPUs the processes share the cores: with C cores
and C // N threads per process the ideal is min(N, C) processes' worth, so on a 2-core machine
2 processes can at best double 1 single-threaded process, and other load on the machine lowers it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _worker(steps: int, batch: int, out: str) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    import ember

    world = int(os.environ.get("WORLD_SIZE", "1"))
    torch.manual_seed(0)
    width = 512  # compute-bound: three 512x512 matmuls per sample, tiny data
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 10),
    )
    ember.compile(net, "sgd", "cross_entropy", lr=0.01)
    n = batch * world * (steps + 5)
    data = TensorDataset(torch.randn(n, width), torch.randint(0, 10, (n,)))
    loader = DataLoader(data, batch_size=batch, shuffle=False)
    trainer = ember.Trainer(
        max_steps=5,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        strategy="ddp" if world > 1 else "auto",
        seed=0,
    )
    trainer.fit(net, loader)  # warm-up: allocations, DDP buckets
    trainer.max_steps = steps + 5
    trainer.strategy.barrier()
    start = time.perf_counter()
    trainer.fit(net, loader)  # fit again from step 0 for steps + 5 steps
    trainer.strategy.barrier()
    seconds = time.perf_counter() - start
    if trainer.is_global_zero:
        Path(out).write_text(json.dumps({"samples_per_s": (steps + 5) * batch * world / seconds}))


def _measure(nproc: int, steps: int, batch: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc-per-node", str(nproc), __file__, "--worker", out]
        cmd += ["--steps", str(steps), "--batch", str(batch)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
        subprocess.run(cmd, check=True, env=env, cwd=tmp, capture_output=True)
        return json.loads(Path(out).read_text())["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description="DDP samples/s, 1 vs N processes")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64, help="per process")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args.steps, args.batch, args.worker)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.nproc)  # the same threads per process in both runs
    one = _measure(1, args.steps, args.batch, threads=threads)
    many = _measure(args.nproc, args.steps, args.batch, threads=threads)
    efficiency = many / (args.nproc * one)
    print(f"cores: {cores}; per-process batch {args.batch}; {args.steps} timed steps")
    print(f"1 process  ({threads} threads): {one:9.1f} samples/s")
    print(f"{args.nproc} processes ({threads} threads each): {many:9.1f} samples/s")
    print(f"speed-up {many / one:.2f}x; scaling efficiency {efficiency:.0%}")
    ideal = min(args.nproc, cores // threads)
    print(
        f"note: {args.nproc} processes x {threads} threads on {cores} cores: the ideal speed-up "
        f"here is {ideal}x (efficiency {ideal / args.nproc:.0%}), less whatever else runs on "
        "the machine; DDP's N-fold ideal needs one device per process."
    )


if __name__ == "__main__":
    main()
