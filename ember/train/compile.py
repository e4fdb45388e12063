"""`compile()`: attach an optimizer, a loss and metrics to a module (`CompileConfig`).

`ember.compile(module, ...)` and `Model.compile(...)` both land here; the default steps
(`ember.train.steps`) read the config when training runs. Like `steps`, this module belongs to the
model's layer: it imports nothing else from `ember.train`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ember import losses

__all__ = ["CompileConfig", "compile", "describe_loss"]

_INTERVALS = ("epoch", "step")
_CAUSAL_LM_CLASSES = ("ForCausalLM", "LMHeadModel")


@dataclass
class CompileConfig:
    """What `compile()` received; optimizer, scheduler and metrics are built when training starts."""

    optimizer: Any = "adam"
    loss: Any = None
    metrics: list = field(default_factory=list)
    lr: float | None = None
    scheduler: Any = None
    scheduler_interval: str = "epoch"
    scheduler_monitor: str = "val_loss"
    loss_fn: Any = None  # None: the model returns its own loss
    metric_objects: dict = field(default_factory=dict)  # {"train": {...}, "val": {...}}
    num_classes: int | None = None  # from the output width, when metrics are first built
    from_logits: bool = True  # the model outputs logits (False: probabilities)
    from_logits_reason: str = ""  # why: given, or read from the model's last layer
    target_key: str | None = None  # the target's key in dict batches (None: the usual names)
    shift_labels: bool = False  # next-token targets (causal language models)


def compile(
    module: nn.Module,
    optimizer: Any = "adam",
    loss: Any = None,
    metrics: list | None = None,
    *,
    lr: float | None = None,
    scheduler: Any = None,
    scheduler_interval: str = "epoch",
    scheduler_monitor: str = "val_loss",
    from_logits: bool | None = None,
    target_key: str | None = None,
) -> nn.Module:
    """Attach an optimizer, a loss and metrics to any `nn.Module` so the Trainer can train it.

    Args:
        module: the model (an `ember.Model` or any `torch.nn.Module`, Hugging Face models too).
        optimizer: a name ("adam", "sgd", ...), an optimizer class, or a torch optimizer instance.
        loss: a name ("cross_entropy", "binary_cross_entropy", "causal_lm", "mse", ...) or a
            callable `loss(pred, target)`. None for a model that computes its own loss (its
            forward takes `labels` and returns a dict with "loss", as Hugging Face models do).
        metrics: names ("accuracy", "f1", "f1_weighted", "perplexity", "mae", ...) or metric
            objects (`ember.metrics.Metric`, `torchmetrics.Metric`).
        lr: learning rate for a named optimizer.
        scheduler: a callable `optimizer -> torch LR scheduler` (any, ReduceLROnPlateau included) or a
            scheduler instance.
        scheduler_interval: step the scheduler every "epoch" or every "step".
        scheduler_monitor: the logged value ReduceLROnPlateau reads.
        from_logits: whether the model outputs logits (True) or probabilities (False) for the
            cross-entropy losses and the binary metrics. None: probabilities when the model's
            last layer is a sigmoid or softmax, else logits.
        target_key: the key of the targets in dict batches (default: the first of "labels",
            "label", "y", "target", "targets"); the other keys are passed to the model by name.

    Returns:
        The same module.

    Example:
        >>> net = ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy", ["accuracy"])
    """
    if loss is None and not _computes_own_loss(module):
        raise ValueError(
            "compile() needs a loss, e.g. compile(model, optimizer='adam', loss='cross_entropy'), "
            "unless the model computes its own (its forward takes `labels` and returns a dict "
            "with 'loss', as Hugging Face models do)."
        )
    if scheduler_interval not in _INTERVALS:
        raise ValueError(
            f"Unknown scheduler_interval {scheduler_interval!r}. Choose one of: {', '.join(_INTERVALS)}"
        )
    from ember import metrics as _metrics
    from ember import optimizers as _optimizers

    if isinstance(optimizer, str) and optimizer.lower() not in _optimizers._OPTIMIZERS:
        raise ValueError(
            f"Unknown optimizer {optimizer!r}. Choose one of: {', '.join(_optimizers._OPTIMIZERS)}, "
            "or pass a torch.optim.Optimizer."
        )
    for m in metrics or []:  # fail fast on unknown names, before training starts
        _metrics.check(m)
    if from_logits is not None and not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be True, False or None. Received: {from_logits!r}")
    loss_fn = losses.get(loss) if loss is not None else None
    logits, reason = _resolve_from_logits(module, loss_fn, from_logits)
    if getattr(loss_fn, "from_logits", False) is None:
        loss_fn = loss_fn.with_from_logits(logits)
    cfg = CompileConfig(
        optimizer=optimizer,
        loss=loss,
        metrics=list(metrics or []),
        lr=lr,
        scheduler=scheduler,
        scheduler_interval=scheduler_interval,
        scheduler_monitor=scheduler_monitor,
        loss_fn=loss_fn,
        from_logits=logits,
        from_logits_reason=reason,
        target_key=target_key,
        shift_labels=_shifts_labels(module, loss_fn),
    )
    object.__setattr__(module, "_ember_compile", cfg)
    return module


def describe_loss(cfg: CompileConfig) -> str:
    """The loss in words for the run's log and hyper-parameters, e.g.
    "binary_cross_entropy(from_logits=False): the model ends in Sigmoid"."""
    if cfg.loss_fn is None:
        return "the model's own loss"
    if hasattr(cfg.loss_fn, "from_logits"):
        return f"{cfg.loss_fn!r}: {cfg.from_logits_reason}"
    return getattr(cfg.loss_fn, "__name__", type(cfg.loss_fn).__name__)


def _resolve_from_logits(module: nn.Module, loss_fn: Any, given: bool | None) -> tuple[bool, str]:
    explicit = getattr(loss_fn, "from_logits", None)
    if explicit is not None:
        return explicit, "set on the loss"
    if given is not None:
        return given, "given to compile"
    return losses.infer_from_logits(module)


def _computes_own_loss(module: nn.Module) -> bool:
    try:
        return "labels" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _shifts_labels(module: nn.Module, loss_fn: Any) -> bool:
    """Next-token targets: a "causal_lm" loss, or a Hugging Face causal LM's own loss."""
    if loss_fn is not None:
        return bool(getattr(loss_fn, "shift_labels", False))
    return type(module).__name__.endswith(_CAUSAL_LM_CLASSES)
