"""Tiny models and packages shared by the tests (plain helpers: import them)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "LABELS",
    "HalfPlusThree",
    "TinyTagger",
    "TwoHeads",
    "make_package",
    "tiny_mlp",
    "tiny_sequential",
]

logger = logging.getLogger(__name__)

LABELS = ["a", "b", "c"]  # the labels of the serve tests' 3-class classifier


def tiny_mlp(
    seed: int = 0, in_features: int = 4, out_features: int = 3, hidden: int = 8
) -> torch.nn.Sequential:
    """``Linear(in, hidden) -> ReLU -> Linear(hidden, out)`` with weights fixed by ``seed``.

    Example:
        >>> tiny_mlp(1)(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_features)
    )


def tiny_sequential(
    seed: int = 0,
    in_features: int = 4,
    out_features: int = 3,
    hidden: int = 8,
    optimizer: str = "sgd",
    metrics: Sequence[str] | None = None,
    **compile_kwargs: Any,
):
    """A compiled ``ember.Sequential``: ``Input(in) -> Dense(hidden, relu) -> Dense(out)``,
    cross-entropy loss, weights fixed by ``seed``; ``compile_kwargs`` (``lr=0.1`` by default)
    go to ``compile``."""
    import ember
    from ember import layers

    torch.manual_seed(seed)
    model = ember.Sequential(
        [layers.Input((in_features,)), layers.Dense(hidden, activation="relu"),
         layers.Dense(out_features)]
    )  # fmt: skip
    extra = () if metrics is None else (list(metrics),)
    model.compile(optimizer, "cross_entropy", *extra, **{"lr": 0.1, **compile_kwargs})
    return model


class HalfPlusThree(torch.nn.Module):
    """TF Serving's documentation model: y = x / 2 + 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 + 3.0


class TinyTagger(torch.nn.Module):
    """Embedding + LSTM on int64 ids ``(B, T)`` -> logits ``(B, 3)`` (vocabulary of 50)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 8, batch_first=True)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embed(ids))  # (B, T, 8)
        return self.head(hidden[:, -1])


class TwoHeads(torch.nn.Module):
    """ids + mask in (keywords), a dict of two outputs (``logits`` (B, 3), ``score`` (B, 1))
    out; mean pooling over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 8)
        self.cls = torch.nn.Linear(8, 3)
        self.reg = torch.nn.Linear(8, 1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return {"logits": self.cls(pooled), "score": self.reg(pooled)}


def make_package(model: torch.nn.Module, path: Path, example: torch.Tensor, **meta: Any) -> Path:
    """A package with model.onnx: ember.package.save + ember.export, else written by hand."""
    try:
        from ember import export, package

        package.save(model, path, example_input=example, **meta)
        export.export(path, ["onnx"])
        return path
    except ImportError:
        logger.warning("ember.package/export unavailable: writing the package by hand")
    path.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (example,), str(path / "model.onnx"), input_names=["input"],
        output_names=["output"], dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},),
    )  # fmt: skip
    out = model(example)
    manifest = {
        "format": "ember.package", "format_version": 1, "name": meta.get("name"),
        "task": meta.get("task"), "labels": meta.get("labels"),
        "signature": {
            "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, *example.shape[1:]]}],
            "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, *out.shape[1:]]}],
        },
    }  # fmt: skip
    (path / "ember.json").write_text(json.dumps(manifest))
    return path
