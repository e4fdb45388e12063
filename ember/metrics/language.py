"""Language-model metrics: perplexity over tokens (token accuracy is `Accuracy(ignore_index=-100)`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ember.metrics.base import Metric

__all__ = ["Perplexity"]


class Perplexity(Metric):
    """exp(mean negative log-likelihood of the target tokens); targets equal to `ignore_index` (padding,
    prompt tokens) are left out.

    Args:
        ignore_index: the target value to skip (-100 as in Hugging Face and `F.cross_entropy`).
        from_logits: outputs are logits (True) or probabilities (False).

    Shape:
        outputs (..., V) for targets (...).

    Example:
        >>> ppl = Perplexity()
        >>> ppl.update(torch.zeros(2, 5, 10), torch.tensor([[1, 2, 3, -100, -100]] * 2))
        >>> round(float(ppl.compute()), 3)   # uniform over 10 tokens
        10.0
    """

    def __init__(self, *, ignore_index: int | None = -100, from_logits: bool = True) -> None:
        super().__init__()
        self.ignore_index, self.from_logits = ignore_index, from_logits
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def _update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        preds, target = preds.reshape(-1, preds.shape[-1]).float(), target.reshape(-1).long()
        keep = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:  # a mask: indexing would wait for the accelerator
            keep = target != self.ignore_index
            target = target.where(keep, 0)
        log_p = F.log_softmax(preds, dim=-1) if self.from_logits else preds.clamp_min(1e-12).log()
        nll = -log_p.gather(1, target.unsqueeze(1)).squeeze(1)  # (N,)
        self.total += nll.where(keep, 0).sum().to(self.total.dtype)
        self.count += keep.sum()

    def _compute(self, total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return (total / count.clamp_min(1)).exp()

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
