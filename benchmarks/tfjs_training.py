"""Training speed in JavaScript (TF.js, pure JS cpu backend under Node.js) against ember's own.

The same ember CNN (or MLP) is exported to the tfjs target, then trained for the same epochs on
the same digits examples with the same batch size, once by ember (``model.fit``) and once by the
bundle's ``train.js``; the script prints both times and their ratio, plus the export's parity.

    python benchmarks/tfjs_training.py --model cnn --examples 512 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import ember
from ember import layers as L
from ember import package
from ember.export import export
from ember.export.web import ensure_npm_runtime


def _model(kind: str) -> ember.Sequential:
    if kind == "mlp":
        return ember.Sequential([L.Input((1, 8, 8)), L.Flatten(), L.Dense(128, activation="relu"),
                                 L.Dense(10)])  # fmt: skip
    return ember.Sequential([
        L.Input((1, 8, 8)), L.Conv2D(16, 3, padding="same", activation="relu"), L.MaxPool2D(2),
        L.Flatten(), L.Dense(64, activation="relu"), L.Dense(10),
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="cnn")
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    (x, y), (x_test, _) = ember.load_digits()
    x, y = x[: args.examples], y[: args.examples]
    torch.manual_seed(0)
    model = _model(args.model)
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e-3)
    model(torch.as_tensor(x[:2]))
    with tempfile.TemporaryDirectory() as tmp:
        pkg = ember.save(model, Path(tmp) / "pkg", example_input=torch.as_tensor(x_test[:64]),
                         task="classification")  # fmt: skip
        start = time.perf_counter()
        export(pkg, ["tfjs"])
        export_s = time.perf_counter() - start
        figures = package.read_manifest(pkg)["targets"]["tfjs"]
        bundle = pkg / "tfjs"
        os.symlink(ensure_npm_runtime() / "node_modules", bundle / "node_modules")
        data = Path(tmp) / "data.json"
        data.write_text(json.dumps({"dims": list(x.shape), "inputs": x.ravel().tolist(),
                                    "labels": y.tolist()}))  # fmt: skip
        cmd = ["node", "train.js", str(data), "--epochs", str(args.epochs), "--lr", "0.001",
               "--batch-size", str(args.batch_size)]  # fmt: skip
        proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, check=True)
        js = json.loads(proc.stdout.strip().splitlines()[-1])

        start = time.perf_counter()
        model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=False,
                  logger=False, enable_checkpointing=False)  # fmt: skip
        ember_s = time.perf_counter() - start
        shutil.rmtree(bundle / "trained", ignore_errors=True)

    print(f"model={args.model} examples={args.examples} epochs={args.epochs} "
          f"batch_size={args.batch_size}")  # fmt: skip
    print(f"export parity: max_abs_diff={figures['max_abs_diff']:.3g} "
          f"max_rel_diff={figures['max_rel_diff']:.3g} (export {export_s:.1f} s)")  # fmt: skip
    print(f"TF.js train.js: {js['seconds']:.2f} s  loss {js['loss_first']:.3f} -> "
          f"{js['loss_last']:.3f}")  # fmt: skip
    print(f"ember fit:      {ember_s:.2f} s")
    print(f"ratio TF.js / ember: {js['seconds'] / ember_s:.1f}x")


if __name__ == "__main__":
    main()
