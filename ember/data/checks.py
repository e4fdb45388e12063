"""Say what is wrong with the targets when a loss rejects them, and how to fix it."""

from __future__ import annotations

import torch

__all__ = ["explain_loss_error"]


def explain_loss_error(exc: Exception, pred: torch.Tensor, y: torch.Tensor) -> ValueError | None:
    """A clear error for the usual target mistakes behind a loss's exception, else None.

    Recognises labels outside `0..C-1` for a `C`-wide output, float labels for a classification
    loss and `(N, 1)` labels where `(N,)` is expected.

    Args:
        exc: what the loss raised.
        pred: the model's output for the batch.
        y: the batch's targets.

    Example:
        >>> try:
        ...     loss = F.cross_entropy(pred, y)
        ... except (IndexError, RuntimeError) as exc:
        ...     raise (explain_loss_error(exc, pred, y) or exc) from exc
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(y, torch.Tensor):
        return None
    text = str(exc)
    classes = pred.shape[-1] if pred.ndim > 1 else 1
    if isinstance(exc, IndexError) and "out of bounds" in text:
        low, high = int(y.min()), int(y.max())
        return ValueError(
            f"A label is out of range for the model's output: with {classes} outputs the labels "
            f"must be class indices 0..{classes - 1}, but this batch holds labels {low}..{high}. "
            f"Fix: give the last layer one unit per class (e.g. Dense({max(high + 1, classes)})), "
            f"or map the labels to 0..C-1 first: "
            f"classes, y = np.unique(y, return_inverse=True)."
        )
    if "target dtype" in text or "expected scalar type Long" in text:
        return ValueError(
            f"The labels are {str(y.dtype).removeprefix('torch.')} but a classification loss needs "
            f"integer class indices. Fix: y = y.astype('int64') (numpy) or y.long() (torch); for "
            f"a regression target use loss='mse'; for one probability per class pass y of shape "
            f"(N, {classes}), the output's shape."
        )
    if "multi-target not supported" in text and y.ndim == 2 and y.shape[-1] == 1:
        return ValueError(
            f"The labels have shape {tuple(y.shape)}; a classification loss needs one class index "
            f"per sample, shape ({y.shape[0]},). Fix: y = y.reshape(-1)."
        )
    return None
