"""Trainer overhead: ember's Trainer against a hand-written torch loop, side by side in one run.

The same model (an MLP on digits (N, 64) and a small CNN on digits (N, 1, 8, 8)), the same
initial weights, the same batches in the same order (size 32, shuffled by the same seeded
sampler), the same optimizer (Adam): both sides compute the same numbers, and each round checks
that their final weights are equal. (With different orders the two runs' values drift apart,
and so does their speed: Adam on CPU slows down by up to ~10 % as more of its state underflows
to subnormal floats, which depends on the trajectory, not on the trainer.) ember runs as
users run it in a terminal: the progress bar (drawn to a terminal that discards the bytes),
the default TensorBoard logger (per-step loss, epoch scalars, norms and weight and gradient
histograms within their time budgets, the graph), the default checkpointing (`last`, refreshed at
most every 10 s and at the end of fit, history.json written with it) and the report.
The torch loop is written as people write it: zero_grad, forward, loss, backward, step, and
`loss.item()` summed per epoch. Its DataLoader draws its order from the sampler ember's Trainer
puts in the loader it is given (`ResumableSampler`, seeded per epoch, so that a fit can resume
mid-epoch), set to the same seed and epoch.

The two sides alternate epoch by epoch in one process: a callback runs one epoch of the torch
loop before each of ember's epochs, outside ember's timed span. This machine's speed drifts by
tens of percent within seconds; epochs a few milliseconds apart see the same speed, whole runs
do not. A round is one fit; its ratio is ember's time over the torch epochs run beside it, and
the median over rounds is printed. The budgets of norms and histograms count wall time,
torch epochs included, so here they run about twice as often per ember epoch as in a plain fit:
their cost is overstated, not hidden.

Printed figures:
  step ratio     steady-state time per training step, ember / torch: epochs 2..N-1, everything
                 the loop does between the start of one epoch and the next (steps, epoch-end
                 logging, norms and histograms when their budgets allow, a checkpoint
                 when one is due: the default's 10 s interval is longer than a round here,
                 and at ~5-10 ms a save it costs under 0.1 % of a longer fit). Epoch 1
                 (warm-up) and epoch N (end-of-fit work: the final checkpoint, histograms and
                 history.json) are one-off costs, in the run ratio. Goal: <= 1.02.
  in-loop ratio  the same epochs, counting only their batches (epoch-end work excluded).
  run ratio      the whole fit() call (torch epochs taken out) over the torch epochs: one-off
                 set-up and the end of fit included (graph trace, run record, the final
                 checkpoint, the HTML report).
  import ratio   `import ember.model` (what building and training a model imports: `import ember`
                 alone imports its names on first use) over `import torch`, each in a fresh
                 interpreter. Goal: <= 1.3.

One torch thread by default: on a small shared machine extra intra-op threads only add noise;
`--threads 0` keeps torch's default. Both sides always use the same setting.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trainer_overhead.py --rounds 15 --epochs 30
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
from ember.train.sampler import ResumableSampler

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


class TorchLoop:
    """The hand-written loop, written as people write it; `epoch()` runs and times one epoch."""

    def __init__(self, make: Callable[[], nn.Module], x, y) -> None:
        torch.manual_seed(0)
        self.model = make()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss_fn = nn.CrossEntropyLoss()
        # ember's order: the sampler the Trainer uses, with the Trainer's seed (0) and epoch.
        self.sampler = ResumableSampler(len(y), shuffle=True, seed=0)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=BATCH_SIZE, sampler=self.sampler)
        self.epochs = 0

    def epoch(self) -> tuple[float, float]:
        self.sampler.set_epoch(self.epochs)
        self.epochs += 1
        start = _now()
        model, optimizer, loss_fn = self.model, self.optimizer, self.loss_fn
        model.train()
        running = 0.0
        for xb, yb in self.loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item()
        log.debug("torch epoch loss %.4f", running / len(self.loader))
        return _since(start)


class _Terminal(io.StringIO):
    """A terminal that discards what it is sent: the bar is drawn as in a real terminal."""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return len(text)


class _Interleaved(ember.Callback):
    """Runs one epoch of the hand-written loop before each of ember's epochs, and times both.

    ember's epoch k lasts from its `on_train_epoch_start` (after the torch epoch) to the next
    epoch's (before that one's torch epoch) or to `on_fit_end`: its steps, the epoch-end work
    and every hook in between. The two sides alternate epoch by epoch, so a drift of the
    machine's speed hits both alike.
    """

    def __init__(self, torch_loop: TorchLoop) -> None:
        self.torch_loop = torch_loop
        self.torch_epochs: list[tuple[float, float]] = []
        self.ember_epochs: list[tuple[float, float]] = []
        self.ember_in_loop: list[tuple[float, float]] = []
        self._start: tuple[float, float] | None = None

    def on_train_epoch_start(self, trainer, module) -> None:
        self._end_ember_epoch()
        self.torch_epochs.append(self.torch_loop.epoch())
        self._start = _now()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.ember_in_loop.append(_since(self._start))

    def on_fit_end(self, trainer, module) -> None:
        self._end_ember_epoch()

    def _end_ember_epoch(self) -> None:
        if self._start is not None:
            self.ember_epochs.append(_since(self._start))


def run_round(make: Callable[[], nn.Module], x, y, epochs: int, root: str) -> dict[str, float]:
    """One ember fit with the defaults users get, a torch epoch before each of its epochs.

    Returns per-step seconds of both sides (steady epochs 2..N-1) and their ratios.
    """
    torch_loop = TorchLoop(make, x, y)
    torch.manual_seed(0)  # the same initial weights as the torch side
    model = make()
    model.compile("adam", "cross_entropy", lr=LR)
    timer = _Interleaved(torch_loop)
    # The default ProgressBar, drawing its bar to a terminal (rendering cost counted).
    bar = ember.ProgressBar(stream=_Terminal())
    trainer = ember.Trainer(
        max_epochs=epochs, callbacks=[bar, timer], default_root_dir=root, seed=0
    )
    start = _now()
    trainer.fit(model, _loader(x, y, seed=0))
    fit = _since(start)
    same = all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), torch_loop.model.state_dict().values())
    )
    if not same:  # a different computation: the ratios would compare unlike work
        raise RuntimeError("ember and the torch loop ended with different weights")
    steps = trainer.num_train_batches * (epochs - 2)
    out = {}
    for i, clock in enumerate(("wall", "cpu")):
        torch_steady = sum(t[i] for t in timer.torch_epochs[1:-1])
        torch_all = sum(t[i] for t in timer.torch_epochs)
        out[f"torch_step_{clock}"] = torch_steady / steps
        out[f"ember_step_{clock}"] = sum(t[i] for t in timer.ember_epochs[1:-1]) / steps
        out[f"step_{clock}"] = out[f"ember_step_{clock}"] / out[f"torch_step_{clock}"]
        out[f"in_loop_{clock}"] = sum(t[i] for t in timer.ember_in_loop[1:-1]) / torch_steady
        out[f"run_{clock}"] = (fit[i] - torch_all) / torch_all
    return out


def _now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, every thread included)."""
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _now()
    return now[0] - start[0], now[1] - start[1]


def compare(name: str, make, x, y, rounds: int, epochs: int, root: str) -> dict[str, float]:
    """Run `rounds` interleaved rounds after a warm-up one; print and return the median ratios."""
    run_round(make, x, y, 3, root)  # warm-up: first-call costs (allocator, kernels, imports)
    results = [run_round(make, x, y, epochs, root) for _ in range(rounds)]
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    for clock in ("cpu", "wall"):
        print(
            f"{name} ({clock:4s}) step: torch {med[f'torch_step_{clock}'] * 1e3:.3f} ms, "
            f"ember {med[f'ember_step_{clock}'] * 1e3:.3f} ms | "
            f"step ratio {med[f'step_{clock}']:.3f} | "
            f"in-loop ratio {med[f'in_loop_{clock}']:.3f} | run ratio {med[f'run_{clock}']:.3f}"
        )
    return med


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
    """Median `import ember.model` time over median `import torch` time, runs alternated."""
    times: dict[str, list[tuple[float, float]]] = {"torch": [], "ember": []}
    modules = {"torch": "torch", "ember": "ember.model"}  # ember.model: Model, Trainer, layers
    import_time("ember.model")  # warm the OS file cache for both
    for _ in range(runs):
        for side in times:
            times[side].append(import_time(modules[side]))
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
    parser.add_argument("--rounds", type=int, default=15, help="fits per model (ratio: median)")
    parser.add_argument(
        "--epochs", type=int, default=30, help="epochs per run (the first and last are not steady)"
    )
    parser.add_argument("--import-runs", type=int, default=7)
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads for both sides (0: torch's default)"
    )
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error(
            f"--epochs must be >= 3 (epoch 1 is warm-up, the last ends fit). Received: {args.epochs}"
        )
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    (x_img, y_train), _ = ember.load_digits(images=True)
    x_img, y_train = torch.from_numpy(x_img), torch.from_numpy(y_train)
    data = {"mlp": (make_mlp, x_img.reshape(len(x_img), 64)), "cnn": (make_cnn, x_img)}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(y_train)} samples, "
        f"batch {BATCH_SIZE}, {args.epochs} epochs x {args.rounds} rounds (fits) per model"
    )
    with tempfile.TemporaryDirectory() as root:
        for name in args.models.split(","):
            make, x = data[name]
            compare(name, make, x, y_train, args.rounds, args.epochs, root)
    compare_imports(args.import_runs)


if __name__ == "__main__":
    main()
