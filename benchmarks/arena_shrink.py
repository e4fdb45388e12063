"""ONNX Runtime's memory arena after big requests: kept grown, or given back (issue 15)?

Runs the ``ember serve`` ONNX Runtime runtime (``ember.serve.runtime._OrtRuntime``) in a fresh
process on ``big_body.py``'s 4 -> 3 MLP: one small warm-up request, then ``--runs`` requests of
``--rows`` rows (748,000 rows: what a 59.9 MiB JSON body decodes to, 11.4 MiB of float32), and
prints the resident memory held afterwards over that before them (input array included), with arena shrinkage for big runs
off (the old behaviour) and on (the default), side by side. Then times batch-1 calls both ways.
Run:
    .venv/bin/python benchmarks/arena_shrink.py [--rows 748000] [--runs 4]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(mode: str, rows: int, runs: int) -> None:
    """In this process: build, warm, run big requests, print held MiB and batch-1 us."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.big_body import build_model
    from ember.serve.runtime import _OrtRuntime

    root = build_model(Path(tempfile.mkdtemp()))
    runtime = _OrtRuntime(root / "m" / "1" / "model.onnx")
    if mode == "off":
        runtime._shrink_above = 1 << 62  # never shrink: ONNX Runtime's default
    small = {"input": np.ones((1, 4), np.float32)}
    runtime.run(small)
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    base = _rss_mib()
    for _ in range(runs):
        runtime.run({"input": x})
    held = _rss_mib() - base
    start = time.perf_counter()
    for _ in range(20000):
        runtime.run(small)
    per_call = (time.perf_counter() - start) / 20000 * 1e6
    print(f"{mode} {held:.1f} {per_call:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=748_000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--mode", choices=["off", "on"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        return measure(args.mode, args.rows, args.runs)
    mib = args.rows * 16 / 2**20
    print(f"{args.runs} runs of {args.rows:,} rows ({mib:.1f} MiB of input each)")
    results = {}
    for mode in ("off", "on", "off", "on"):  # alternate: drift on a shared machine hits both
        cmd = [sys.executable, __file__, "--mode", mode, "--rows", str(args.rows),
               "--runs", str(args.runs)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        results.setdefault(mode, []).append((float(out[-2]), float(out[-1])))
    for mode, label in (("off", "arena kept (before)"), ("on", "arena shrunk (after)")):
        held = ", ".join(f"{h:.1f}" for h, _ in results[mode])
        calls = ", ".join(f"{c:.2f}" for _, c in results[mode])
        print(f"{label:22s} held MiB above warm: {held:14s} batch-1 us/call: {calls}")
    before = min(h for h, _ in results["off"])
    after = max(h for h, _ in results["on"])
    print(f"held after / before (worst after over best before): {after / max(before, 1e-9):.2f}")
    print("held is measured after the input array exists: it is what the runs left behind")


if __name__ == "__main__":
    main()
