"""Trainer overhead: ember's Trainer against a hand-written torch loop, side by side in one run.

The same model (an MLP on digits (N, 64) and a small CNN on digits (N, 1, 8, 8)), the same
initial weights, the same batches (size 32, shuffled), the same optimizer (Adam). ember runs as
users run it in a terminal: the rich progress bar (drawn to a terminal that discards the bytes),
the default TensorBoard logger (per-step loss, epoch scalars and norms, weight and gradient
histograms every epoch, the graph), history.json, the default checkpointing (`last`, refreshed at
most every 10 s and at the end of fit: the final save is inside the measured time) and the report. The torch
loop is written as people write it: zero_grad, forward, loss, backward, step, and `loss.item()`
summed per epoch. Runs alternate (torch, ember, ember, torch, ...); each round's ember run is divided
by the torch run beside it and the median of those paired ratios is printed.

Printed figures:
  step ratio     steady-state time per training step (epochs 2..N, everything the loop does
                 between the start of one epoch and the next: steps, epoch-end logging,
                 histograms, checkpoints), ember / torch. Goal: <= 1.02.
  in-loop ratio  the same, counting only the batches of each epoch (epoch-end work excluded).
  run ratio      the whole fit() call including one-off set-up (graph trace, run record).
  import ratio   `import ember` over `import torch`, each in a fresh interpreter. Goal: <= 1.3.

One torch thread by default: on a small shared machine extra intra-op threads only add noise;
`--threads 0` keeps torch's default. Both sides always use the same setting.

Run:
    .venv/bin/python benchmarks/trainer_overhead.py --rounds 7 --epochs 6
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember import layers

log = logging.getLogger("trainer_overhead")

BATCH_SIZE = 32
LR = 1e-3


def make_mlp() -> nn.Module:
    """A 64-128-64-10 MLP for flat digits (N, 64)."""
    return ember.Sequential(
        [
            layers.Input((64,)),
            layers.Dense(128, activation="relu"),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def make_cnn() -> nn.Module:
    """A small CNN for digit images (N, 1, 8, 8)."""
    return ember.Sequential(
        [
            layers.Input((1, 8, 8)),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def _loader(x: torch.Tensor, y: torch.Tensor, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, shuffle=True, generator=generator)


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, every thread included)."""
    return time.perf_counter(), time.process_time()


def run_torch(make: Callable[[], nn.Module], x, y, epochs: int) -> dict[str, float]:
    """The hand-written loop; returns per-step and per-run timings in seconds."""
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    loader = _loader(x, y, seed=0)
    start = _now()
    epoch_starts, in_loop = [], [0.0, 0.0]
    for _ in range(epochs):
        epoch_starts.append(_now())
        model.train()
        running = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        _add_since(in_loop, epoch_starts)
        log.debug("torch epoch loss %.4f", running / len(loader))
    return _timings(start, epoch_starts, _now(), in_loop, len(loader))


class _Terminal(io.StringIO):
    """A terminal that discards what it is sent: the rich bar is drawn as in a real terminal."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


class _EpochTimer(ember.Callback):
    """Records when each epoch starts, how long its batches took and when fit ends."""

    def __init__(self) -> None:
        self.epoch_starts: list[tuple[float, float]] = []
        self.in_loop = [0.0, 0.0]
        self.end = (0.0, 0.0)

    def on_train_epoch_start(self, trainer, module) -> None:
        self.epoch_starts.append(_now())

    def on_train_epoch_end(self, trainer, module) -> None:
        _add_since(self.in_loop, self.epoch_starts)

    def on_fit_end(self, trainer, module) -> None:
        self.end = _now()


def run_ember(make: Callable[[], nn.Module], x, y, epochs: int, root: str) -> dict[str, float]:
    """ember's Trainer with the defaults users get; returns per-step and per-run timings."""
    torch.manual_seed(0)
    model = make()
    model.compile("adam", "cross_entropy", lr=LR)
    timer = _EpochTimer()
    # The default ProgressBar, drawing its rich bar to a terminal (rendering cost counted).
    bar = ember.ProgressBar(stream=_Terminal())
    trainer = ember.Trainer(
        max_epochs=epochs, callbacks=[bar, timer], default_root_dir=root, seed=0
    )
    start = _now()
    trainer.fit(model, _loader(x, y, seed=0))
    return _timings(start, timer.epoch_starts, timer.end, timer.in_loop, trainer.num_train_batches)


def _add_since(total: list[float], epoch_starts: list) -> None:
    if len(epoch_starts) > 1:  # the first epoch is warm-up on both sides
        now = _now()
        for i in (0, 1):
            total[i] += now[i] - epoch_starts[-1][i]


def _timings(start, epoch_starts, end, in_loop, steps_per_epoch) -> dict[str, float]:
    steps = steps_per_epoch * (len(epoch_starts) - 1)
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        out[f"step_{clock}"] = (end[i] - epoch_starts[1][i]) / steps
        out[f"in_loop_{clock}"] = in_loop[i] / steps
        out[f"run_{clock}"] = end[i] - start[i]
    return out


def compare(name: str, make, x, y, rounds: int, epochs: int, root: str) -> dict[str, float]:
    """Alternate torch and ember runs; return the median ratios."""
    results: dict[str, list[dict[str, float]]] = {"torch": [], "ember": []}
    run_torch(make, x, y, 2)  # warm-up: first-call costs (allocator, kernels) for neither side
    run_ember(make, x, y, 2, root)
    for i in range(rounds):
        order = ("torch", "ember") if i % 2 == 0 else ("ember", "torch")
        for side in order:
            if side == "torch":
                results[side].append(run_torch(make, x, y, epochs))
            else:
                results[side].append(run_ember(make, x, y, epochs, root))
    med = {
        side: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for side, runs in results.items()
    }
    # Paired: each round's ember run over the torch run next to it, then the median of those
    # ratios, so the machine's drift between rounds cancels out.
    ratios = {
        k: statistics.median(e[k] / t[k] for e, t in zip(results["ember"], results["torch"]))
        for k in med["torch"]
    }
    for clock in ("cpu", "wall"):
        print(
            f"{name} ({clock:4s}) step: torch {med['torch'][f'step_{clock}'] * 1e3:.3f} ms, "
            f"ember {med['ember'][f'step_{clock}'] * 1e3:.3f} ms | "
            f"step ratio {ratios[f'step_{clock}']:.3f} | "
            f"in-loop ratio {ratios[f'in_loop_{clock}']:.3f} | run ratio {ratios[f'run_{clock}']:.3f}"
        )
    return ratios


def import_time(module: str) -> tuple[float, float]:
    """(wall, CPU) seconds to `import module` in a fresh interpreter, start-up excluded."""
    code = (
        "import time; t, c = time.perf_counter(), time.process_time(); "
        f"import {module}; print(time.perf_counter() - t, time.process_time() - c)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def compare_imports(runs: int) -> dict[str, float]:
    """Median `import ember` time over median `import torch` time, runs alternated."""
    times: dict[str, list[tuple[float, float]]] = {"torch": [], "ember": []}
    import_time("ember")  # warm the OS file cache for both
    for _ in range(runs):
        for module in times:
            times[module].append(import_time(module))
    ratios = {}
    for i, clock in enumerate(("cpu", "wall")):
        torch_s, ember_s = (statistics.median(t[i] for t in times[m]) for m in ("torch", "ember"))
        ratios[clock] = ember_s / torch_s
        print(
            f"import ({clock:4s}): torch {torch_s:.3f} s, ember {ember_s:.3f} s | "
            f"import ratio {ratios[clock]:.3f}"
        )
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="alternated runs per side")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (first is warm-up)")
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)"
    )
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (epoch 1 is warm-up). Received: {args.epochs}")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    (x_img, y_train), _ = ember.load_digits(images=True)
    x_img, y_train = torch.from_numpy(x_img), torch.from_numpy(y_train)
    data = {"mlp": (make_mlp, x_img.reshape(len(x_img), 64)), "cnn": (make_cnn, x_img)}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(y_train)} samples, "
        f"batch {BATCH_SIZE}, {args.epochs} epochs x {args.rounds} rounds per side"
    )
    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            make, x = data[name]
            compare(name, make, x, y_train, args.rounds, args.epochs, root)
    compare_imports(args.import_runs)


if __name__ == "__main__":
    main()
