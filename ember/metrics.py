"""Resolve metric names ("accuracy", "mae", ...) to torchmetrics objects."""

from __future__ import annotations

from typing import Any

__all__ = ["get", "collection"]

_NAMES = (
    "accuracy",
    "top5_accuracy",
    "f1",
    "precision",
    "recall",
    "mae",
    "mse",
    "rmse",
    "r2",
    "auroc",
)


def get(identifier: Any, *, num_classes: int | None = None):
    """Return a torchmetrics `Metric` for a name, or the metric object itself.

    Classification metrics need `num_classes` (taken from the model's output width by `compile`).

    Example:
        >>> acc = get("accuracy", num_classes=10)
    """
    import torchmetrics as tm  # lazy: torchmetrics adds ~0.3 s to import time

    if isinstance(identifier, tm.Metric):
        return identifier
    name = identifier.lower() if isinstance(identifier, str) else identifier
    regression = {
        "mae": tm.MeanAbsoluteError,
        "mse": tm.MeanSquaredError,
        "r2": tm.R2Score,
    }
    if name in regression:
        return regression[name]()
    if name == "rmse":
        return tm.MeanSquaredError(squared=False)
    if name in _NAMES:
        if num_classes is None:
            raise ValueError(
                f"Metric {identifier!r} needs the number of classes; call the model once or pass "
                f"a torchmetrics object, e.g. torchmetrics.Accuracy(task='multiclass', num_classes=10)."
            )
        task = "binary" if num_classes == 1 else "multiclass"
        kw = {"task": task} if task == "binary" else {"task": task, "num_classes": num_classes}
        if name == "top5_accuracy":
            return tm.Accuracy(top_k=5, **kw)
        cls = {
            "accuracy": tm.Accuracy,
            "f1": tm.F1Score,
            "precision": tm.Precision,
            "recall": tm.Recall,
            "auroc": tm.AUROC,
        }[name]
        return cls(**kw)
    raise ValueError(
        f"Unknown metric {identifier!r}. Choose one of: {', '.join(_NAMES)}, or pass a torchmetrics.Metric."
    )


def collection(identifiers: list, *, num_classes: int | None = None) -> dict[str, Any]:
    """Return `{name: Metric}` for a list of names or metric objects."""
    out = {}
    for ident in identifiers:
        name = ident if isinstance(ident, str) else type(ident).__name__.lower()
        out[name] = get(ident, num_classes=num_classes)
    return out
