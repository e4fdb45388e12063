"""Regression: an MLP on scikit-learn's diabetes data (442 patients, 10 features, one target).

Run:
    python examples/regression.py --epochs 50
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import ember
from ember import layers

log = logging.getLogger("examples.regression")


def load_data(seed: int = 0):
    """Standardised features and a standardised target (mse on a ~150-unit scale trains badly)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    x, y = load_diabetes(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
    mx, sx = x_train.mean(axis=0), x_train.std(axis=0)
    my, sy = y_train.mean(), y_train.std()

    def prep(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ((a - mx) / sx).astype(np.float32), ((b - my) / sy).astype(np.float32)[:, None]

    return prep(x_train, y_train), prep(x_test, y_test), float(sy)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train; returns the test metrics, with the MAE also in the target's own units."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--root", default="runs")
    args = parser.parse_args(argv)

    (x, y), (x_test, y_test), y_scale = load_data()
    model = ember.Sequential([layers.Dense(32, activation="relu"), layers.Dense(1)])
    model.compile("adam", "mse", ["mae"], lr=3e-3)
    model.fit(
        x,
        y,
        epochs=args.epochs,
        validation_split=0.2,
        default_root_dir=args.root,
        name="diabetes",
        seed=0,
        verbose=False,
    )
    metrics = model.evaluate(x_test, y_test)
    metrics["mae_units"] = metrics["mae"] * y_scale  # disease progression, the target's unit
    log.info("test metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
