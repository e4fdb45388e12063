"""The built-in example: a small CNN on scikit-learn's bundled digits (no download)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ember import layers
from ember.data import load_digits
from ember.model import Sequential

__all__ = ["digits_cnn", "train_digits"]

log = logging.getLogger(__name__)


def digits_cnn() -> Sequential:
    """A small CNN for 8x8 digit images in NCHW layout: (N, 1, 8, 8) -> 10 logits.

    Example:
        >>> model = digits_cnn(); model.summary()
    """
    return Sequential(
        [
            layers.Input((1, 8, 8)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.BatchNorm(),
            layers.MaxPool2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.GlobalAvgPool2D(),
            layers.Dropout(0.2),
            layers.Dense(64, activation="relu"),
            layers.Dense(10),
        ]
    )


def train_digits(
    *,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 3e-3,
    output: str | Path = "demo_output",
    seed: int = 0,
    progress: bool = True,
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train `digits_cnn` on the digits data, evaluate it and save a model package.

    Args:
        epochs, batch_size, lr: training settings.
        output: directory for runs (TensorBoard, checkpoints, report) and the package (`model/`).
        seed: seeds data split, weights and training.
        progress: show the progress bar.
        **trainer_kwargs: passed to `ember.Trainer` (e.g. precision, devices).

    Returns:
        {"model", "history", "test_accuracy", "package", "log_dir"}.
    """
    output = Path(output)
    (x, y), (xt, yt) = load_digits(images=True, seed=seed)
    torch.manual_seed(seed)
    model = digits_cnn()
    model.compile(
        "adamw",
        "cross_entropy",
        ["accuracy"],
        lr=lr,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
    )
    history = model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(xt, yt),
        verbose=progress,
        seed=seed,
        default_root_dir=output / "runs",
        name="digits",
        **trainer_kwargs,
    )
    result = model.evaluate(xt, yt)
    package = None
    if model.trainer.is_global_zero:
        from ember import package as _package

        package = _package.save(
            model,
            output / "model",
            example_input=torch.from_numpy(xt[:1]),
            name="digits",
            task="classification",
            labels=[str(i) for i in range(10)],
            preprocessing={"input": "8x8 grey image, values in [0, 1] (pixel / 16), NCHW"},
            metrics={"test_accuracy": result["accuracy"], "test_loss": result["loss"]},
            sample_inputs=torch.from_numpy(xt[:64]),
        )
    return {
        "model": model,
        "history": history,
        "test_accuracy": result["accuracy"],
        "package": package,
        "log_dir": model.trainer.log_dir,
        "test_data": (xt, yt),
    }
