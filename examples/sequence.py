"""A sequence model: a GRU learns whether a noisy sequence's running sum ends above zero.

The data is synthetic (no download): sequences of 20 steps, 2 features (a signal and noise); the
label is 1 when the signal's sum is positive. An order-free model can do this too, but the GRU
has to carry the sum through time, which is what the example shows.

Run:
    python examples/sequence.py --epochs 15 --cell gru
"""

from __future__ import annotations

import argparse
import logging

import torch

import ember
from ember import layers

log = logging.getLogger("examples.sequence")


def make_data(n: int, steps: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs `(n, steps, 2)` and labels `(n,)` in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(n, steps, generator=g)
    noise = torch.randn(n, steps, generator=g)
    x = torch.stack([signal, noise], dim=-1)  # (N, T, 2)
    y = (signal.sum(dim=1) > 0).long()  # (N,)
    return x, y


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train an LSTM or GRU classifier; returns the test metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--root", default="runs")
    args = parser.parse_args(argv)

    x, y = make_data(args.samples)
    x_test, y_test = make_data(max(args.samples // 4, 32), seed=1)
    cell = layers.GRU if args.cell == "gru" else layers.LSTM
    model = ember.Sequential([cell(32), layers.Dense(2)])  # last hidden state -> logits
    model.compile("adam", "cross_entropy", ["accuracy"], lr=3e-3)
    model.fit(
        x,
        y,
        epochs=args.epochs,
        batch_size=64,
        validation_split=0.2,
        default_root_dir=args.root,
        name=f"sequence_{args.cell}",
        seed=0,
        verbose=False,
    )
    metrics = model.evaluate(x_test, y_test)
    log.info("test metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
