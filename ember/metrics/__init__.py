"""Resolve metric names ("accuracy", "f1_weighted", "mae", ...) to small torch-only metric objects.

Building a named metric imports no torchmetrics (importing it costs about 2 s); a user's own
`torchmetrics.Metric` (or any object with `update`, `compute` and `reset`) is used as given.
"""

from __future__ import annotations

import re
from typing import Any

from ember.losses import IGNORE_INDEX  # targets with this value (padding) count nowhere
from ember.metrics.base import Metric
from ember.metrics.classification import AUROC, Accuracy, F1Score, Precision, Recall
from ember.metrics.language import Perplexity
from ember.metrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

__all__ = [
    "AUROC",
    "Accuracy",
    "F1Score",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "Metric",
    "Perplexity",
    "Precision",
    "R2Score",
    "Recall",
    "check",
    "collection",
    "get",
    "is_known",
]

_AVERAGED = {"f1": F1Score, "precision": Precision, "recall": Recall, "auroc": AUROC}
_REGRESSION = {
    "mae": MeanAbsoluteError,
    "mse": MeanSquaredError,
    "rmse": lambda: MeanSquaredError(squared=False),
    "r2": R2Score,
}
_TOP_K = re.compile(r"top(\d+)_accuracy")

# Every name `get` accepts (top<k>_accuracy for any k; f1/precision/recall/auroc default to macro).
_NAMES = (
    "accuracy",
    "top5_accuracy",
    "token_accuracy",
    *(
        f"{m}{s}"
        for m in ("f1", "precision", "recall")
        for s in ("", "_macro", "_micro", "_weighted")
    ),
    "auroc",
    "auroc_weighted",
    "perplexity",
    *_REGRESSION,
)


def is_known(name: str) -> bool:
    """Whether `get` accepts the metric name `name`."""
    name = name.lower()
    return name in _NAMES or _TOP_K.fullmatch(name) is not None


def check(identifier: Any) -> None:
    """Raise a clear error unless `get` accepts `identifier` (a known name or a metric object).

    Example:
        >>> check("f1_weighted")   # fine
    """
    if not isinstance(identifier, str):
        if not all(hasattr(identifier, a) for a in ("update", "compute", "reset")):
            raise TypeError(
                "A metric is a name or an object with update(), compute() and reset() (an "
                f"ember.metrics.Metric or a torchmetrics.Metric). Received: {identifier!r}"
            )
    elif not is_known(identifier):
        raise ValueError(
            f"Unknown metric {identifier!r}. Choose one of: {', '.join(_NAMES)} (top<k>_accuracy "
            "for any k), or pass a torchmetrics.Metric."
        )


def get(identifier: Any, *, num_classes: int | None = None, from_logits: bool | None = None) -> Any:
    """Return a metric object for a name, or the metric object itself.

    Args:
        identifier: a name (accuracy, top5_accuracy, token_accuracy, f1 / precision / recall with
            an optional _macro (the default), _micro or _weighted suffix, auroc, auroc_weighted,
            perplexity, mae, mse, rmse, r2) or an object with `update`, `compute` and `reset`
            (an `ember.metrics.Metric` or a `torchmetrics.Metric`).
        num_classes: the output width (1 = binary), needed by classification metrics; `compile`
            takes it from the model's first output.
        from_logits: whether a binary output is a logit (threshold 0) or a probability (0.5);
            None: outputs outside [0, 1] are logits.

    Example:
        >>> f1 = get("f1", num_classes=10)          # macro-averaged
        >>> f1w = get("f1_weighted", num_classes=10)
    """
    check(identifier)
    if not isinstance(identifier, str):
        return identifier
    name = identifier.lower()
    if name in _REGRESSION:
        return _REGRESSION[name]()
    if name == "perplexity":
        return Perplexity(ignore_index=IGNORE_INDEX, from_logits=from_logits is not False)
    if num_classes is None:
        raise ValueError(
            f"Metric {identifier!r} needs the number of classes; call the model once or pass "
            f"num_classes, e.g. ember.metrics.get({identifier!r}, num_classes=10)."
        )
    if name in ("accuracy", "token_accuracy") or _TOP_K.fullmatch(name):
        top = _TOP_K.fullmatch(name)
        return Accuracy(
            num_classes,
            top_k=int(top.group(1)) if top else 1,
            from_logits=from_logits,
            ignore_index=IGNORE_INDEX,
        )
    base, _, average = name.partition("_")
    kwargs = {"average": average or "macro", "from_logits": from_logits}
    return _AVERAGED[base](num_classes, ignore_index=IGNORE_INDEX, **kwargs)


def collection(
    identifiers: list, *, num_classes: int | None = None, from_logits: bool | None = None
) -> dict[str, Any]:
    """Return `{name: metric}` for a list of names or metric objects."""
    out = {}
    for ident in identifiers:
        name = ident if isinstance(ident, str) else type(ident).__name__.lower()
        out[name] = get(ident, num_classes=num_classes, from_logits=from_logits)
    return out
