"""Losses by name ("cross_entropy", "binary_cross_entropy", "mse", ...): callables `loss(pred, target)`.

The cross-entropies take `from_logits` as in Keras: True for a model that outputs logits (a last
`Dense` without activation), False for one that outputs probabilities (a sigmoid or softmax head).
`compile` infers it from the model's last layer when it is not given (see `infer_from_logits`).
Targets equal to `ignore_index` (-100, Hugging Face's convention for padding) count in no loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BinaryCrossEntropy", "CrossEntropy", "get", "infer_from_logits"]

IGNORE_INDEX = -100
_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log, as Keras does


class CrossEntropy:
    """Multi-class cross-entropy for integer targets (or class probabilities of the output's shape).

    Outputs (N, C) with targets (N,), or per token (B, T, C) with targets (B, T); channels-first
    (N, C, d1, ...) with targets (N, d1, ...) as in `F.cross_entropy`.

    Args:
        from_logits: outputs are logits (True) or probabilities, e.g. after a softmax (False).
            None: logits, unless `compile` infers otherwise from the model.
        ignore_index: targets with this value count nowhere (padding tokens).
        shift_labels: next-token prediction (causal language models): the output at position t
            is scored against the target at t + 1, as Hugging Face's `*ForCausalLM` models do.

    Example:
        >>> loss = CrossEntropy(from_logits=False)   # a softmax head
        >>> float(loss(torch.tensor([[0.5, 0.5]]), torch.tensor([0])))   # -log(0.5)
        0.6931...
    """

    name = "cross_entropy"

    def __init__(
        self,
        from_logits: bool | None = None,
        *,
        ignore_index: int = IGNORE_INDEX,
        shift_labels: bool = False,
    ) -> None:
        self.from_logits, self.ignore_index, self.shift_labels = (
            from_logits,
            ignore_index,
            shift_labels,
        )

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim > 2:  # per-token outputs (checked here: this runs every batch)
            pred, target = align_tokens(pred, target, self.shift_labels)
        try:
            if self.from_logits is not False:
                return F.cross_entropy(pred, target, ignore_index=self.ignore_index)
            return self._from_probabilities(pred, target)
        except (IndexError, RuntimeError) as exc:  # only on failure: no check costs a step
            explained = _explain_targets(pred, target, self.ignore_index)
            if explained is None:
                raise
            raise explained from exc

    def _from_probabilities(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = pred.float()
        p = p / p.sum(dim=1, keepdim=True)  # as Keras: a row that does not sum to 1 is rescaled
        log_p = p.clamp(_EPS, 1 - _EPS).log()
        if target.is_floating_point() and target.shape == pred.shape:  # class probabilities
            return -(target * log_p).sum(dim=1).mean()
        return F.nll_loss(log_p, target, ignore_index=self.ignore_index)

    def with_from_logits(self, from_logits: bool) -> CrossEntropy:
        return type(self)(
            from_logits, ignore_index=self.ignore_index, shift_labels=self.shift_labels
        )

    def __repr__(self) -> str:
        shift = ", shift_labels=True" if self.shift_labels else ""
        return f"{self.name}(from_logits={self.from_logits}{shift})"


class BinaryCrossEntropy:
    """Binary cross-entropy of one output per sample (or per label) against 0/1 targets.

    Args:
        from_logits: outputs are logits (True, numerically stable) or probabilities after a
            sigmoid (False). None: logits, unless `compile` infers otherwise from the model.

    Example:
        >>> head = ember.layers.Dense(1, activation="sigmoid")
        >>> model.compile("adam", ember.losses.BinaryCrossEntropy(from_logits=False))
    """

    name = "binary_cross_entropy"

    def __init__(self, from_logits: bool | None = None) -> None:
        self.from_logits = from_logits

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.to(pred.dtype).reshape(pred.shape)
        if self.from_logits is not False:
            return F.binary_cross_entropy_with_logits(pred, target)
        # F.binary_cross_entropy refuses to run under autocast: compute it in float32.
        with torch.autocast(pred.device.type, enabled=False):
            return F.binary_cross_entropy(pred.float().clamp(_EPS, 1 - _EPS), target.float())

    def with_from_logits(self, from_logits: bool) -> BinaryCrossEntropy:
        return type(self)(from_logits)

    def __repr__(self) -> str:
        return f"{self.name}(from_logits={self.from_logits})"


def align_tokens(
    pred: torch.Tensor, target: torch.Tensor, shift_labels: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token outputs (B, T, C) and targets (B, T) as (B*T', C) and (B*T',); others unchanged.

    With `shift_labels` the last output and the first target are dropped (next-token prediction).
    """
    if pred.ndim < 3 or target.ndim != pred.ndim - 1 or pred.shape[:-1] != target.shape:
        return pred, target
    if shift_labels:
        pred, target = pred[:, :-1], target[:, 1:]
    return pred.reshape(-1, pred.shape[-1]), target.reshape(-1)


def _explain_targets(pred: torch.Tensor, target: torch.Tensor, ignore: int) -> ValueError | None:
    """A clear error for the usual target mistakes of a classification loss, or None."""
    classes = pred.shape[1] if pred.ndim > 1 else 1
    if target.is_floating_point() and target.shape != pred.shape:
        return ValueError(
            f"cross_entropy takes integer class labels, but the targets are {target.dtype} of "
            f"shape {tuple(target.shape)}: convert them (y.astype('int64') / y.long()), or use "
            "binary_cross_entropy for one 0/1 output or mse for regression."
        )
    real = target[target != ignore] if not target.is_floating_point() else target[:0]
    if real.numel():
        low, high = int(real.min()), int(real.max())
        if high >= classes:
            return ValueError(
                f"A target label is {high}, but the model has {classes} outputs, so labels must "
                f"be 0..{classes - 1}: give the last layer {high + 1} units (Dense({high + 1})) "
                "or check the labels."
            )
        if low < 0:
            return ValueError(
                f"A target label is {low}: labels must be 0..{classes - 1} (or {ignore}, ignored)."
            )
    return None


def _elementwise(fn: Callable) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return fn(pred, target.to(pred.dtype).reshape(pred.shape))

    loss.__name__ = fn.__name__
    return loss


_LOSSES: dict[str, Callable[[], Any]] = {
    "cross_entropy": CrossEntropy,
    "sparse_categorical_crossentropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "token_cross_entropy": CrossEntropy,
    "causal_lm": lambda: CrossEntropy(shift_labels=True),
    "nll": lambda: F.nll_loss,
    "binary_cross_entropy": BinaryCrossEntropy,
    "binary_crossentropy": BinaryCrossEntropy,
    "mse": lambda: _elementwise(F.mse_loss),
    "mean_squared_error": lambda: _elementwise(F.mse_loss),
    "mae": lambda: _elementwise(F.l1_loss),
    "mean_absolute_error": lambda: _elementwise(F.l1_loss),
    "huber": lambda: _elementwise(F.huber_loss),
}


def get(identifier: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Return a loss function `fn(pred, target) -> scalar Tensor`.

    Args:
        identifier: a name (cross_entropy, binary_cross_entropy, token_cross_entropy (per token,
            padding -100 ignored), causal_lm (next token), mse, mae, huber, nll, ...), an
            `nn.Module` loss or any callable.

    Example:
        >>> loss_fn = get("cross_entropy")
    """
    if callable(identifier):
        return identifier
    if isinstance(identifier, str) and identifier.lower() in _LOSSES:
        return _LOSSES[identifier.lower()]()
    raise ValueError(
        f"Unknown loss {identifier!r}. Choose one of: {', '.join(_LOSSES)}, or pass a callable."
    )


_PROBABILITY_HEADS = (nn.Sigmoid, nn.Softmax)
_PASS_THROUGH = (nn.Dropout, nn.Identity, nn.Flatten, nn.Unflatten)


def infer_from_logits(module: nn.Module) -> tuple[bool, str]:
    """Whether `module` outputs logits, judged from its last layer, and why.

    A last `nn.Sigmoid` / `nn.Softmax` (ember's `activation="sigmoid"` or `"softmax"` included)
    means probabilities; anything else logits. Layers are read in registration order, so an
    activation applied as a function inside `forward` is not seen: pass `from_logits` then.

    Example:
        >>> infer_from_logits(ember.Sequential([ember.layers.Dense(1, activation="sigmoid")]))
        (False, 'the model ends in Sigmoid')
    """
    last = None
    for sub in module.modules():
        if not list(sub.children()) and not isinstance(sub, _PASS_THROUGH):
            last = sub
    if isinstance(last, _PROBABILITY_HEADS):
        return False, f"the model ends in {type(last).__name__}"
    name = type(last).__name__ if last is not None else "no layer"
    return True, f"the model ends in {name}, not a sigmoid or softmax"
