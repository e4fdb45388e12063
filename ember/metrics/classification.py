"""Classification metrics: accuracy (top-k, per token), precision / recall / F1 (macro, micro,
weighted) and AUROC, for binary (one output) and multi-class (one output per class) models.

Predictions are the model's outputs: logits or probabilities for multi-class (the arg max is the
same), and for binary either logits (`from_logits=True`, threshold at 0) or probabilities
(`from_logits=False`, threshold at `threshold`). `from_logits=None` decides per batch as
torchmetrics does: outputs outside [0, 1] are logits. Outputs of shape (..., C) with targets of
shape (...) (a language model's tokens) are flattened; targets equal to `ignore_index` are left out.
"""

from __future__ import annotations

import torch

from ember.metrics.base import Metric

__all__ = ["AUROC", "Accuracy", "F1Score", "Precision", "Recall"]

AVERAGES = ("macro", "micro", "weighted")


class Accuracy(Metric):
    """Share of samples whose target is among the `top_k` highest outputs (binary: thresholded).

    Args:
        num_classes: the output width (1 = binary).
        top_k: count a sample right when its target is among the k highest outputs.
        from_logits: binary outputs are logits (True), probabilities (False) or either (None).
        threshold: the probability above which a binary prediction is positive.
        ignore_index: a target value to leave out (e.g. -100 for padded tokens).

    Example:
        >>> acc = Accuracy(num_classes=3)
        >>> acc.update(torch.tensor([[2.0, 0.1, 0.3], [0.1, 0.2, 3.0]]), torch.tensor([0, 1]))
        >>> float(acc.compute())
        0.5
    """

    def __init__(
        self,
        num_classes: int,
        *,
        top_k: int = 1,
        from_logits: bool | None = None,
        threshold: float = 0.5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        _check_classes(num_classes)
        self.num_classes, self.top_k = num_classes, top_k
        self.from_logits, self.threshold, self.ignore_index = from_logits, threshold, ignore_index
        self.add_state("correct", torch.zeros((), dtype=torch.int64))
        self.add_state("total", torch.zeros((), dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target, keep = _flatten(preds, target, self.num_classes, self.ignore_index)
        if self.num_classes == 1:
            hit = _binary_labels(preds, self.from_logits, self.threshold) == target.bool()
        elif preds.ndim == 1 or self.top_k == 1:
            hit = _labels(preds) == target
        else:
            top = preds.topk(min(self.top_k, preds.shape[-1]), dim=-1).indices  # (N, k)
            hit = (top == target.unsqueeze(-1)).any(dim=-1)
        if keep is None:
            self.correct += hit.sum()
            self.total += target.numel()
        else:
            self.correct += (hit & keep).sum()
            self.total += keep.sum()

    def _compute(self, correct: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        return correct.double() / total.clamp_min(1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, top_k={self.top_k}"


class _StatScores(Metric):
    """True positives, false positives and false negatives per class; subclasses score them."""

    def __init__(
        self,
        num_classes: int,
        *,
        average: str = "macro",
        from_logits: bool | None = None,
        threshold: float = 0.5,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        _check_classes(num_classes)
        if average not in AVERAGES:
            raise ValueError(
                f"Unknown average {average!r}. Choose one of: {', '.join(AVERAGES)}. "
                f"Received: average={average!r}"
            )
        self.num_classes, self.average = num_classes, average
        self.from_logits, self.threshold, self.ignore_index = from_logits, threshold, ignore_index
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(num_classes, dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target, keep = _flatten(preds, target, self.num_classes, self.ignore_index)
        keep = torch.ones_like(target, dtype=torch.bool) if keep is None else keep
        if self.num_classes == 1:
            pred, true = _binary_labels(preds, self.from_logits, self.threshold), target.bool()
            self.tp += (pred & true & keep).sum()
            self.fp += (pred & ~true & keep).sum()
            self.fn += (~pred & true & keep).sum()
            return
        pred, target = _labels(preds), target.long().where(keep, 0)  # ignored: weight 0 below
        tp = _count(target, (pred == target) & keep, self.num_classes)
        self.tp += tp
        self.fp += _count(pred, keep, self.num_classes) - tp
        self.fn += _count(target, keep, self.num_classes) - tp

    def _compute(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        tp, fp, fn = tp.double(), fp.double(), fn.double()
        if self.num_classes == 1 or self.average == "micro":
            return self._score(tp.sum(), fp.sum(), fn.sum())
        score = self._score(tp, fp, fn)  # (C,)
        if self.average == "weighted":
            weights = tp + fn
        else:  # macro: classes never predicted nor present do not count
            weights = (tp + fp + fn > 0).double()
        return _divide((weights * score).sum(), weights.sum())

    def _score(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, average={self.average!r}"


class Precision(_StatScores):
    """TP / (TP + FP), averaged over classes (`average`: "macro", "micro" or "weighted").

    Example:
        >>> p = Precision(num_classes=3, average="macro")
    """

    def _score(self, tp, fp, fn):
        return _divide(tp, tp + fp)


class Recall(_StatScores):
    """TP / (TP + FN), averaged over classes (`average`: "macro", "micro" or "weighted").

    Example:
        >>> r = Recall(num_classes=3, average="weighted")
    """

    def _score(self, tp, fp, fn):
        return _divide(tp, tp + fn)


class F1Score(_StatScores):
    """2 TP / (2 TP + FP + FN), averaged over classes (`average`: "macro", "micro" or "weighted").

    Example:
        >>> f1 = F1Score(num_classes=3)   # macro
    """

    def _score(self, tp, fp, fn):
        return _divide(2 * tp, 2 * tp + fp + fn)


class AUROC(Metric):
    """Area under the ROC curve; multi-class: one class against the rest, macro or weighted average.

    Keeps every score until `compute` (exact, like torchmetrics' default `thresholds=None`).

    Example:
        >>> auroc = AUROC(num_classes=1, from_logits=True)
    """

    def __init__(
        self,
        num_classes: int,
        *,
        average: str = "macro",
        from_logits: bool | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        _check_classes(num_classes)
        if average not in ("macro", "weighted"):
            raise ValueError(f"AUROC averages 'macro' or 'weighted'. Received: average={average!r}")
        self.num_classes, self.average = num_classes, average
        self.from_logits, self.ignore_index = from_logits, ignore_index
        self.add_state("preds", [])
        self.add_state("target", [])

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target, keep = _flatten(preds, target, self.num_classes, self.ignore_index)
        if keep is not None:  # kept until compute: drop the ignored ones now
            preds, target = preds[keep], target[keep]
        self.preds.append(_probabilities(preds.float(), self.num_classes, self.from_logits))
        self.target.append(target.long())

    def _compute(self, preds: list, target: list) -> torch.Tensor:
        scores, labels = torch.cat(preds), torch.cat(target)
        if self.num_classes == 1:
            return _binary_auroc(scores, labels.bool())
        per_class = torch.stack(
            [_binary_auroc(scores[:, c], labels == c) for c in range(self.num_classes)]
        )
        support = torch.bincount(labels, minlength=self.num_classes).double()
        weights = support if self.average == "weighted" else (support > 0).double()
        return _divide((weights * per_class).sum(), weights.sum())

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, average={self.average!r}"


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"num_classes must be a positive integer (1 for a binary output). "
            f"Received: num_classes={num_classes!r}"
        )


def _flatten(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(N, C) / (N,) predictions, (N,) targets and which targets count (None: all).

    A mask, not indexing: boolean indexing would wait for the accelerator on every batch.
    """
    if num_classes > 1 and target.is_floating_point() and target.shape == preds.shape:
        target = target.argmax(dim=-1)  # one-hot (or class probability) targets
    if num_classes > 1 and preds.ndim == target.ndim + 1:
        preds = preds.reshape(-1, preds.shape[-1])  # (..., C) -> (N, C)
    else:
        preds = preds.reshape(-1)  # binary (N, 1) or class labels
    target = target.reshape(-1)
    keep = None
    if ignore_index is not None and not target.is_floating_point():
        keep = target != ignore_index
        target = target.where(keep, 0)  # a valid class index, counted nowhere
    return preds, target, keep


def _count(index: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """How often each of `n` classes occurs in `index`, counting where `weight` is True."""
    out = torch.zeros(n, dtype=torch.int64, device=index.device)
    return out.scatter_add_(0, index, weight.long())


def _labels(preds: torch.Tensor) -> torch.Tensor:
    return preds.argmax(dim=-1) if preds.ndim > 1 else preds.long()


def _binary_labels(preds: torch.Tensor, from_logits: bool | None, threshold: float) -> torch.Tensor:
    return _probabilities(preds.float(), 1, from_logits) > threshold


def _probabilities(preds: torch.Tensor, num_classes: int, from_logits: bool | None) -> torch.Tensor:
    squash = (lambda p: p.sigmoid()) if num_classes == 1 else (lambda p: p.softmax(dim=-1))
    if from_logits is None:  # as torchmetrics: anything outside [0, 1] means logits (no sync)
        outside = ((preds < 0) | (preds > 1)).any()
        return torch.where(outside, squash(preds), preds)
    return squash(preds) if from_logits else preds


def _binary_auroc(scores: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The Mann-Whitney statistic: P(score of a positive > score of a negative), ties count half."""
    n_pos = positive.sum().double()
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.zeros((), dtype=torch.float64, device=scores.device)
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    ranks = (ends - (counts.double() - 1) / 2)[inverse]  # 1-based, ties get their mean rank
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
