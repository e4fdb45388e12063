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

Every figure is printed twice: wall time, and the process's CPU time (which leaves out other
jobs' turns on a shared machine and waits on the disk, such as a checkpoint's fsync). Ratios are
medians over rounds of one round's figures; the sides of one round run seconds apart, so they
see the same machine. Every process gets one torch thread (`OMP_NUM_THREADS=1`); progress output
goes to /dev/null on every side. A side whose package is missing (pip install 'ember[bench]') is
skipped.

torch.optim imports torch._dynamo (~1 s here) when an optimizer is first built or stepped; Keras'
torch backend imports it with `import keras`, Lightning with `import lightning`. An eager ember
fit does not (ember/train/deferred_dynamo.py): the saving is part of ember's first model.

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
        "later_fit": _middle(later),
        "fixed": _middle(fixed),
        "fixed_parts": {k: _middle(v) for k, v in parts.items()},
    }


def _time_fixed_parts() -> dict[str, list[float]]:
    """Wrap the fixed per-fit work of a fit to time it: {part: [seconds per fit]}."""
    import functools

    from ember.train import trainer as trainer_module
    from ember.train.loggers import TensorBoardLogger
    from ember.train.report_callback import ReportCallback
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
        "run record": [(trainer_module, "write_run_record")],
        "final checkpoint": [(Trainer, "save_checkpoint")],
    }
    fit_count = [0]

    def wrap(owner, name, part):
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            t = _clock()
            try:
                return original(*args, **kwargs)
            finally:
                parts[part][fit_count[0] - 1] += _clock() - t

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
            row.append(_clock() * 0)
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
    return {**_phases(marks), "later_fit": _middle(later)}


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
    return {**_phases(marks), "later_fit": _middle(later)}


def _clock():
    """(wall seconds, CPU seconds of this process): this shared machine's wall time also counts
    other jobs' turns, CPU time does not (nor waits on the disk)."""
    import numpy as np

    return np.array([time.perf_counter(), time.process_time()])


def _middle(values: list) -> list[float]:
    """The median of [wall, cpu] pairs, each on its own."""
    import numpy as np

    return np.median(np.array(values), axis=0).tolist()


def _phases(marks: dict) -> dict:
    return {
        "import": (marks["import"] - marks["start"]).tolist(),
        "build": (marks["build"] - marks["import"]).tolist(),
        "compile": (marks["compile"] - marks["build"]).tolist(),
        "first_fit": (marks["fit"] - marks["compile"]).tolist(),
        "first_model": (marks["fit"] - marks["start"]).tolist(),
    }


def worker(side: str, out: Path) -> None:
    """One side in this (fresh) process; writes its figures as JSON to `out`."""
    x, y = _data()  # numpy and the data are ready before the clock starts, on every side
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # whatever a side writes by default lands in the temporary directory
        runner = {"ember": run_ember, "keras": run_keras, "lightning": run_lightning}[side]
        result = runner(x, y, Path(tmp), _clock)
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


def _median(rows: list[dict], key: str, clock: int) -> float:
    return statistics.median(r[key][clock] for r in rows)


def _ratio(rows: dict[str, list[dict]], key: str, other: str, clock: int) -> float | None:
    """The median over rounds of ember's figure over `other`'s (same round)."""
    pairs = [(a[key][clock], b[key][clock]) for a, b in zip(rows["ember"], rows[other]) if a and b]
    return statistics.median(a / b for a, b in pairs) if pairs else None


def _report(rows: dict[str, list], clock: int) -> None:
    name = ("wall", "cpu ")[clock]
    for side, done in ((s, [r for r in rows[s] if r]) for s in rows):
        if done:
            build = _median(done, "build", clock) + _median(done, "compile", clock)
            print(
                f"{side:9s} ({name}) import {_median(done, 'import', clock):6.3f} s | build+compile "
                f"{build:6.3f} s | first fit {_median(done, 'first_fit', clock):6.3f} s | "
                f"first model {_median(done, 'first_model', clock):6.3f} s | later fit "
                f"{_median(done, 'later_fit', clock) * 1e3:7.1f} ms"
            )
    done = [r for r in rows.get("ember", []) if r]
    if done:
        parts = {
            k: statistics.median(r["fixed_parts"][k][clock] for r in done)
            for k in done[0]["fixed_parts"]
        }
        listed = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in parts.items())
        fixed = _median(done, "fixed", clock) * 1e3
        print(f"ember ({name}) fixed per-fit cost {fixed:.1f} ms ({listed} ms) - goal <= 20 ms")
    for other in ("keras", "lightning"):
        if "ember" in rows and other in rows:
            first = _ratio(rows, "first_model", other, clock)
            later = _ratio(rows, "later_fit", other, clock)
            if first is not None:
                print(
                    f"ember / {other} ({name}): first model {first:.3f} (goal <= 0.5) | later fit "
                    f"{later:.3f}" + (" (goal <= 1.5)" if other == "keras" else "")
                )


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
    for clock in (0, 1):
        _report(rows, clock)


if __name__ == "__main__":
    main()
