"""First fit: ember, Keras 3 (torch backend) and Lightning side by side, each in fresh processes.

The same tiny task on every side: an MLP 16-32-2 (ReLU), 256 rows of random features with a
learnable label, batch size 32 (8 steps, one epoch), Adam (lr 1e-3), cross-entropy and accuracy,
every default feature on (ember: progress bar, TensorBoard logger, checkpointing, HTML report;
Keras: its progress bar; Lightning: its progress bar, logger and checkpointing). Each round
starts one fresh process per side, in turn, and the process measures:

  first model   `import` + build + compile + the first `fit`: what a notebook or a script waits
                for before it has a trained model. Goal: ember <= 0.5x Keras' and Lightning's.
  later fit     the median of three more `fit` calls in the same process (a new Lightning Trainer
                each, as Lightning needs). Goal: ember <= 1.5x Keras' second fit.
  fixed cost    (ember only) within those later fits, the time spent in the HTML report,
                TensorBoard's set-up (writer, hyper-parameters, graph, final write), the run
                record (run.json) and the final checkpoint. Goal: <= 20 ms.

Ratios are medians over rounds; the sides of one round run seconds apart, so they see the same
machine. Every process gets one torch thread (`OMP_NUM_THREADS=1`); progress output goes to
/dev/null on every side. A side whose package is missing (pip install 'ember[bench]') is
skipped.

Run:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/first_fit.py --rounds 5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS, FEATURES, HIDDEN, CLASSES, BATCH, LR = 256, 16, 32, 2, 32, 1e-3
LATER_FITS = 3
SIDES = ("ember", "keras", "lightning")
_PACKAGE = {"ember": "ember", "keras": "keras", "lightning": "lightning"}


# -- the sides (each runs in its own fresh process) --------------------------------------------------
def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((ROWS, FEATURES)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    return x, y


def run_ember(x, y, workdir: Path, clock) -> dict:
    marks = {"start": clock()}
    import ember
    from ember import layers

    marks["import"] = clock()
    model = ember.Sequential(
        [
            layers.Input((FEATURES,)),
            layers.Dense(HIDDEN, activation="relu"),
            layers.Dense(CLASSES),
        ]
    )
    marks["build"] = clock()
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"], lr=LR)
    marks["compile"] = clock()
    kwargs = {"epochs": 1, "batch_size": BATCH, "default_root_dir": workdir / "runs"}
    model.fit(x, y, **kwargs)
    marks["fit"] = clock()
    parts = _time_fixed_parts()
    later = []
    for _ in range(LATER_FITS):
        t = clock()
        model.fit(x, y, **kwargs)
        later.append(clock() - t)
    fixed = [sum(values) for values in zip(*parts.values())]
    return {
        **_phases(marks),
        "later_fit": statistics.median(later),
        "fixed": statistics.median(fixed),
        "fixed_parts": {k: statistics.median(v) for k, v in parts.items()},
    }


def _time_fixed_parts() -> dict[str, list[float]]:
    """Wrap the fixed per-fit work of a fit to time it: {part: [seconds per fit]}."""
    import functools

    from ember.report.callback import ReportCallback
    from ember.train import loop_state
    from ember.train.loggers import TensorBoardLogger
    from ember.train.trainer import Trainer

    parts: dict[str, list[float]] = {}
    targets = {
        "report": [(ReportCallback, "on_fit_start"), (ReportCallback, "on_fit_end")],
        "tensorboard set-up": [
            (TensorBoardLogger, "start"),
            (TensorBoardLogger, "log_hyperparams"),
            (TensorBoardLogger, "log_graph"),
            (TensorBoardLogger, "finalize"),
        ],
        "run record": [(loop_state, "write_run_record")],
        "final checkpoint": [(Trainer, "save_checkpoint")],
    }
    fit_count = [0]

    def wrap(owner, name, part):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part][fit_count[0] - 1] += time.perf_counter() - t

        setattr(owner, name, timed)

    for part, methods in targets.items():
        parts[part] = []
        for owner, name in methods:
            wrap(owner, name, part)
    original_fit = Trainer.fit

    @functools.wraps(original_fit)
    def counted_fit(*args, **kwargs):
        fit_count[0] += 1
        for row in parts.values():
            row.append(0.0)
        return original_fit(*args, **kwargs)

    Trainer.fit = counted_fit
    return parts


def run_keras(x, y, workdir: Path, clock) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"
    marks = {"start": clock()}
    import keras

    marks["import"] = clock()
    model = keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(HIDDEN, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )
    marks["build"] = clock()
    model.compile(
        optimizer=keras.optimizers.Adam(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    marks["compile"] = clock()
    model.fit(x, y, epochs=1, batch_size=BATCH)
    marks["fit"] = clock()
    later = []
    for _ in range(LATER_FITS):
        t = clock()
        model.fit(x, y, epochs=1, batch_size=BATCH)
        later.append(clock() - t)
    return {**_phases(marks), "later_fit": statistics.median(later)}


def run_lightning(x, y, workdir: Path, clock) -> dict:
    marks = {"start": clock()}
    import lightning as L
    import torch
    import torchmetrics
    from torch.utils.data import DataLoader, TensorDataset

    marks["import"] = clock()

    class Net(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
            )
            self.accuracy = torchmetrics.classification.MulticlassAccuracy(CLASSES, average="micro")

        def training_step(self, batch, batch_idx):
            inputs, targets = batch
            out = self.net(inputs)
            loss = torch.nn.functional.cross_entropy(out, targets)
            self.accuracy(out, targets)
            self.log("loss", loss, prog_bar=True)
            self.log("accuracy", self.accuracy, prog_bar=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=LR)

    model = Net()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), BATCH, shuffle=True
    )
    marks["build"] = clock()
    marks["compile"] = clock()  # Lightning has no compile step: the module holds it all

    def fit() -> None:
        trainer = L.Trainer(max_epochs=1, default_root_dir=str(workdir / "lightning"))
        trainer.fit(model, loader)

    fit()
    marks["fit"] = clock()
    later = []
    for _ in range(LATER_FITS):
        t = clock()
        fit()
        later.append(clock() - t)
    return {**_phases(marks), "later_fit": statistics.median(later)}


def _phases(marks: dict) -> dict:
    return {
        "import": marks["import"] - marks["start"],
        "build": marks["build"] - marks["import"],
        "compile": marks["compile"] - marks["build"],
        "first_fit": marks["fit"] - marks["compile"],
        "first_model": marks["fit"] - marks["start"],
    }


def worker(side: str, out: Path) -> None:
    """One side in this (fresh) process; writes its figures as JSON to `out`."""
    x, y = _data()  # numpy and the data are ready before the clock starts, on every side
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # whatever a side writes by default lands in the temporary directory
        runner = {"ember": run_ember, "keras": run_keras, "lightning": run_lightning}[side]
        result = runner(x, y, Path(tmp), time.perf_counter)
    out.write_text(json.dumps(result))


# -- the driver --------------------------------------------------------------------------------------
def _run_side(side: str) -> dict | None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
        )
        cmd = [sys.executable, __file__, "--worker", side, "--out", str(out)]
        proc = subprocess.run(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600
        )
        if proc.returncode != 0:
            print(
                f"{side}: failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr
            )
            return None
        return json.loads(out.read_text())


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _ratio(rows: dict[str, list[dict]], key: str, other: str, other_key: str | None = None):
    """The median over rounds of ember's figure over `other`'s (same round)."""
    pairs = [(a[key], b[other_key or key]) for a, b in zip(rows["ember"], rows[other]) if a and b]
    return statistics.median(a / b for a, b in pairs) if pairs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out)
        return
    sides = [s for s in SIDES if importlib.util.find_spec(_PACKAGE[s]) is not None]
    for missing in sorted(set(SIDES) - set(sides)):
        print(f"{missing}: not installed, skipped (pip install 'ember[bench]')")
    rows: dict[str, list] = {s: [] for s in sides}
    for _ in range(args.rounds):
        for side in sides:
            rows[side].append(_run_side(side))
    import torch

    print(
        f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}, "
        f"MLP {FEATURES}-{HIDDEN}-{CLASSES}, {ROWS} rows, batch {BATCH} ({ROWS // BATCH} steps), "
        f"{args.rounds} rounds, medians"
    )
    for side in sides:
        done = [r for r in rows[side] if r]
        if not done:
            continue
        print(
            f"{side:9s} import {_median(done, 'import'):6.3f} s | build+compile "
            f"{_median(done, 'build') + _median(done, 'compile'):6.3f} s | first fit "
            f"{_median(done, 'first_fit'):6.3f} s | first model {_median(done, 'first_model'):6.3f} s"
            f" | later fit {_median(done, 'later_fit') * 1e3:7.1f} ms"
        )
    done = [r for r in rows.get("ember", []) if r]
    if done:
        parts = {
            k: statistics.median(r["fixed_parts"][k] for r in done) for k in done[0]["fixed_parts"]
        }
        listed = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items())
        print(
            f"ember fixed per-fit cost {_median(done, 'fixed') * 1e3:.1f} ms ({listed} ms) - goal <= 20 ms"
        )
    for other, goal in (("keras", 0.5), ("lightning", 0.5)):
        if "ember" in rows and other in rows:
            ratio = _ratio(rows, "first_model", other)
            if ratio is not None:
                print(f"first model ratio, ember / {other}: {ratio:.3f} - goal <= {goal}")
    if "ember" in rows and "keras" in rows:
        ratio = _ratio(rows, "later_fit", "keras")
        if ratio is not None:
            print(f"later fit ratio, ember / keras' second fit: {ratio:.3f} - goal <= 1.5")
    if "ember" in rows and "lightning" in rows:
        ratio = _ratio(rows, "later_fit", "lightning")
        if ratio is not None:
            print(f"later fit ratio, ember / lightning's second fit: {ratio:.3f}")


if __name__ == "__main__":
    main()
