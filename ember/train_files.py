"""`ember train data.csv --target label` and `ember train images/`: a default model on the user's files."""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember import layers
from ember.data import from_csv, image_dataset_from_directory
from ember.model import Model, Sequential

__all__ = ["default_image_model", "default_table_model", "train_files"]

log = logging.getLogger(__name__)


def default_table_model(
    num_features: int,
    num_outputs: int,
    encoder: nn.Module,
    target_scale: tuple[float, float] | None = None,
) -> Sequential:
    """An MLP over a table: the encoder (standardise, one-hot), two hidden layers, the output.

    Args:
        num_features: input columns.
        num_outputs: classes, or 1 for regression.
        encoder: the table's `TableEncoder`.
        target_scale: `(mean, std)` of a regression target: the network predicts the
            standardised target and a last `Rescaling` brings it back to the target's units.

    Example:
        >>> model = default_table_model(table.num_features, table.num_outputs, table.encoder())
    """
    tail = [] if target_scale is None else [layers.Rescaling(target_scale[1], target_scale[0])]
    return Sequential(
        [
            layers.Input((num_features,)),
            encoder,
            layers.Dense(64, activation="relu"),
            layers.Dense(32, activation="relu"),
            layers.Dense(num_outputs),
            *tail,
        ]
    )


def default_image_model(input_shape: tuple[int, int, int], num_classes: int) -> Sequential:
    """A small CNN for `(C, H, W)` images: two conv blocks, global pooling, the class logits.

    Example:
        >>> model = default_image_model((3, 64, 64), 5)
    """
    return Sequential(
        [
            layers.Input(tuple(input_shape)),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPool2D(2),
            layers.GlobalAvgPool2D(),
            layers.Dense(num_classes),
        ]
    )


def train_files(
    data: str | Path,
    *,
    target: str | None = None,
    task: str | None = None,
    model: str | None = None,
    image_size: tuple[int, int] = (64, 64),
    validation_split: float = 0.2,
    epochs: int = 15,
    batch_size: int = 32,
    lr: float = 3e-3,
    output: str | Path = "ember_output",
    seed: int = 0,
    progress: bool = True,
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train on a CSV file (a `target` column) or a folder of images (one sub-folder per class).

    Writes TensorBoard logs and the report under `output/runs/<name>/version_N/` and the model
    package (labels, preprocessing, validation metrics) to `output/model`.

    Args:
        data: a `.csv` file or an image folder.
        target: the CSV column to predict (required for a CSV file).
        task: "classification" or "regression" for a CSV target; default guessed (see
            `ember.data.from_dataframe`).
        model: "module:function" returning your `nn.Module`; it may take `input_shape`,
            `num_outputs` and `task` keyword arguments. Default: an MLP or a small CNN.
        image_size: `(height, width)` images are resized to.
        validation_split: the share held out for validation (shuffled with `seed`).
        epochs, batch_size, lr, seed, progress: training settings.
        output: the output directory.
        **trainer_kwargs: passed to `ember.Trainer` (precision, devices, ...).

    Returns:
        {"model", "history", "metrics", "package", "log_dir"}.

    Example:
        >>> result = train_files("iris.csv", target="species", epochs=20)
    """
    data = Path(data)
    if data.is_dir():
        prepared = _images(data, image_size, validation_split, seed)
    elif data.is_file():
        prepared = _table(data, target, task, validation_split, seed)
    else:
        raise FileNotFoundError(
            f"{data} does not exist: pass a .csv file (with --target COLUMN) or a folder of images "
            "with one sub-folder per class."
        )
    torch.manual_seed(seed)
    net = _build(model, prepared)
    loss, metrics = (
        ("cross_entropy", ["accuracy"])
        if prepared["task"] == "classification"
        else (
            "mse",
            ["mae"],
        )
    )
    net.compile("adamw", loss, metrics, lr=lr)
    output = Path(output)
    history = net.fit(
        prepared["train"],
        epochs=epochs,
        batch_size=batch_size,
        validation_data=prepared["val"],
        verbose=progress,
        seed=seed,
        default_root_dir=output / "runs",
        name=prepared["name"],
        **trainer_kwargs,
    )
    scores = net.evaluate(prepared["val"], batch_size=batch_size)
    package = None
    if net.trainer.is_global_zero:
        package = net.save(
            output / "model",
            name=prepared["name"],
            task=prepared["task"],
            labels=prepared["labels"],
            preprocessing=prepared["preprocessing"],
            metrics={f"val_{k}": v for k, v in scores.items()},
        )
    return {
        "model": net,
        "history": history,
        "metrics": scores,
        "package": package,
        "log_dir": net.trainer.log_dir,
    }


def _table(
    path: Path, target: str | None, task: str | None, validation_split: float, seed: int
) -> dict:
    if path.suffix.lower() != ".csv":
        raise ValueError(
            f"{path} is not a .csv file: ember train reads CSV files or image folders."
        )
    if target is None:
        import pandas as pd

        columns = ", ".join(map(str, pd.read_csv(path, nrows=0).columns))
        raise ValueError(f"Name the column to predict: --target COLUMN (columns: {columns})")
    table = from_csv(path, target=target, task=task)
    order = np.random.default_rng(seed).permutation(len(table.x))
    n_val = max(1, int(round(len(order) * validation_split)))
    val, train = order[:n_val], order[n_val:]
    # (N, 1) regression targets, as the Dense(1) output: the "mae" metric compares shapes as they are.
    y = table.y.reshape(-1, 1) if table.task == "regression" else table.y
    return {
        "name": path.stem,
        "task": table.task,
        "labels": table.labels,
        "preprocessing": table.preprocessing,
        "train": _pairs(table.x[train], y[train]),
        "val": _pairs(table.x[val], y[val]),
        "input_shape": (table.num_features,),
        "num_outputs": table.num_outputs,
        "encoder": table.encoder(),
        "target_scale": _mean_std(y[train]) if table.task == "regression" else None,
    }


def _mean_std(y: np.ndarray) -> tuple[float, float]:
    return float(y.mean()), float(y.std()) or 1.0


def _images(folder: Path, image_size: tuple, validation_split: float, seed: int) -> dict:
    train, val = image_dataset_from_directory(
        folder, image_size=tuple(image_size), validation_split=validation_split, seed=seed
    )
    return {
        "name": folder.resolve().name,
        "task": "classification",
        "labels": train.class_names,
        "preprocessing": train.preprocessing,
        "train": train,
        "val": val,
        "input_shape": (3, *image_size),
        "num_outputs": len(train.class_names),
        "encoder": None,
    }


def _pairs(x: np.ndarray, y: np.ndarray) -> torch.utils.data.TensorDataset:
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


def _build(spec: str | None, prepared: dict) -> Model:
    encoder = prepared["encoder"]
    if spec is None:
        if encoder is not None:
            shape, outputs = prepared["input_shape"], prepared["num_outputs"]
            return default_table_model(shape[0], outputs, encoder, prepared["target_scale"])
        return default_image_model(prepared["input_shape"], prepared["num_outputs"])
    # The user's network sees what the encoder makes of a table row (its encoded width).
    width = (encoder.output_size,) if encoder is not None else prepared["input_shape"]
    module = _call_user_model(spec, width, prepared["num_outputs"], prepared["task"])
    front = [layers.Input(prepared["input_shape"])] + ([encoder] if encoder is not None else [])
    return Sequential([*front, module])


def _call_user_model(spec: str, input_shape: tuple, num_outputs: int, task: str) -> nn.Module:
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"--model expects module:function, e.g. mymodels:build. Received: {spec}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # `mymodels.py` in the current folder
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"Cannot load --model {spec}: {exc}") from exc
    offered = {"input_shape": tuple(input_shape), "num_outputs": num_outputs, "task": task}
    params = inspect.signature(func).parameters
    takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
    built = func(**{k: v for k, v in offered.items() if takes_all or k in params})
    if not isinstance(built, nn.Module):
        raise TypeError(
            f"--model {spec} must return a torch.nn.Module. Received: {type(built).__name__}"
        )
    return built
