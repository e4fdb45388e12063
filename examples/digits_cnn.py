"""Digits CNN: the demo. Train a small Conv2D network on scikit-learn's 8x8 digits (no download).

Run:
    python examples/digits_cnn.py --epochs 10

It trains with validation, writes TensorBoard logs, checkpoints and report.html into
runs/digits_cnn/version_N/, evaluates on held-out digits and saves a model package.
"""

from __future__ import annotations

import argparse
import logging

import torch

import ember
from ember import layers

log = logging.getLogger("examples.digits_cnn")


def build_model() -> ember.Sequential:
    """Two conv blocks and a classifier head; input shapes are found on the first batch."""
    return ember.Sequential(
        [
            layers.Conv2D(16, 3, padding="same", activation="relu"),  # (B, 16, 8, 8)
            layers.MaxPool2D(2),  # (B, 16, 4, 4)
            layers.Conv2D(32, 3, padding="same", activation="relu"),  # (B, 32, 4, 4)
            layers.GlobalAvgPool2D(),  # (B, 32)
            layers.Dense(10),  # logits
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train, evaluate and save; returns the test metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--root", default="runs", help="where run directories go")
    parser.add_argument("--out", default="digits_package", help="the model package directory")
    args = parser.parse_args(argv)

    (x, y), (x_test, y_test) = ember.load_digits()
    model = build_model()
    model.compile("adam", "cross_entropy", ["accuracy"], lr=3e-3)
    model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=64,
        validation_split=0.2,
        default_root_dir=args.root,
        name="digits_cnn",
        seed=0,
        verbose=False,
    )
    metrics = model.evaluate(x_test, y_test)
    log.info("test metrics: %s (report: %s)", metrics, model.trainer.log_dir / "report.html")
    model.save(
        args.out,
        example_input=torch.from_numpy(x_test[:8]),
        task="classification",
        metrics={f"test_{k}": v for k, v in metrics.items()},
    )
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
