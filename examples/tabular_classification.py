"""Tabular classification: an MLP on scikit-learn's breast cancer data (569 samples, 30 features).

Run:
    python examples/tabular_classification.py --epochs 30
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

import ember
from ember import layers

log = logging.getLogger("examples.tabular_classification")


def load_data(seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Standardised features (statistics from the training part only) and a stratified split."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731
    return (scale(x_train), y_train.astype(np.int64)), (scale(x_test), y_test.astype(np.int64))


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Train with early stopping; returns the test metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--root", default="runs")
    args = parser.parse_args(argv)

    (x, y), (x_test, y_test) = load_data()
    model = ember.Sequential(
        [layers.Dense(32, activation="relu"), layers.Dropout(0.1), layers.Dense(2)]
    )
    model.compile("adam", "cross_entropy", ["accuracy"], lr=1e-3)
    stop = ember.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)
    model.fit(
        x,
        y,
        epochs=args.epochs,
        validation_split=0.2,
        callbacks=[stop],
        default_root_dir=args.root,
        name="breast_cancer",
        seed=0,
        verbose=False,
    )
    metrics = model.evaluate(x_test, y_test)
    log.info("test metrics: %s", metrics)
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
