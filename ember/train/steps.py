"""What `compile()` sets up and the default train / validation / predict steps built on it.

`ember.Model` calls these from its `train_step` & co.; the Trainer calls them directly for a plain
`torch.nn.Module` compiled with `ember.compile(module, ...)`.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ember import losses

__all__ = [
    "CompileConfig",
    "bind_train_step",
    "compile",
    "default_train_step",
    "default_validation_step",
    "describe_loss",
    "prediction",
    "split_batch",
]

log = logging.getLogger(__name__)

_INTERVALS = ("epoch", "step")
TARGET_KEYS = ("labels", "label", "y", "target", "targets")
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


def split_batch(batch: Any, target_key: str | None = None) -> tuple[Any, Any]:
    """Split a batch into (inputs, targets); targets is None for unlabelled batches.

    A dict batch is either {"x": ..., "y": ...} or named model inputs plus targets under
    `target_key` (default: the first of "labels", "label", "y", "target", "targets"): then the
    inputs are the dict of the other keys, passed to the model by name.
    """
    if isinstance(batch, (list, tuple)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        return tuple(batch[:-1]), batch[-1]
    if isinstance(batch, dict):
        if target_key is None and ("x" in batch or "input" in batch):
            return batch.get("x", batch.get("input")), batch.get("y", batch.get("target"))
        key = target_key or next((k for k in TARGET_KEYS if k in batch), None)
        return {k: v for k, v in batch.items() if k != key}, batch.get(key)
    return batch, None


def _forward(module: nn.Module, x: Any) -> Any:
    if isinstance(x, dict):  # named inputs: model(image=..., meta=...)
        return module(**x)
    return module(*x) if isinstance(x, tuple) else module(x)


def _loss(cfg: CompileConfig, pred: torch.Tensor, y: Any) -> torch.Tensor:
    try:
        return cfg.loss_fn(pred, y)
    except (IndexError, RuntimeError) as exc:  # wrong labels: say which and how to fix them
        from ember.data.checks import explain_loss_error

        better = explain_loss_error(exc, pred, y)
        if better is None:
            raise
        raise better from exc


def _require_config(module: nn.Module) -> CompileConfig:
    cfg = getattr(module, "_ember_compile", None)
    if cfg is None:
        raise RuntimeError(
            f"{type(module).__name__} is not compiled: call model.compile(optimizer='adam', "
            "loss='cross_entropy') (or ember.compile(module, ...)) before fit/evaluate, or override "
            "train_step."
        )
    return cfg


def _update_metrics(cfg: CompileConfig, stage: str, pred: torch.Tensor, y: torch.Tensor) -> None:
    pred, y = losses.align_tokens(pred.detach(), y, cfg.shift_labels)  # tokens -> (N, C), (N,)
    metrics = cfg.metric_objects.get(stage)
    if metrics is None:  # built on first use: the output width gives the number of classes
        if cfg.num_classes is None:
            cfg.num_classes = pred.shape[-1] if pred.ndim > 1 else 1
        metrics = build_metrics(cfg, pred.device)
        cfg.metric_objects[stage] = metrics
    for metric in metrics.values():
        metric.update(pred, y)


def build_metrics(cfg: CompileConfig, device: torch.device) -> dict:
    """Fresh metric objects for one stage (train or val)."""
    from ember import metrics as _metrics

    built = _metrics.collection(
        cfg.metrics, num_classes=cfg.num_classes, from_logits=cfg.from_logits
    )
    return {k: m.to(device) for k, m in built.items()}


def default_train_step(module: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Forward, loss and metric update on one batch; returns {"loss": loss} (graph attached)."""
    return _train_step(module, _require_config(module), batch)


def bind_train_step(module: nn.Module) -> Callable[[Any], dict[str, torch.Tensor]]:
    """`default_train_step` for `module`, its compile config looked up once, not per batch.

    The Trainer calls this when a fit starts and the result once per batch.

    Example:
        >>> step = bind_train_step(ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy"))
        >>> step((torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)))["loss"].shape
        torch.Size([])
    """
    cfg = _require_config(module)
    log.info("Loss: %s", describe_loss(cfg))
    return functools.partial(_train_step, module, cfg)


def _train_step(module: nn.Module, cfg: CompileConfig, batch: Any) -> dict[str, torch.Tensor]:
    x, y = _inputs_and_targets(cfg, batch)
    if y is None:
        raise ValueError(f"The training data has no targets: {_target_hint(cfg, x)}")
    pred, loss = _forward_and_loss(module, cfg, x, y)
    if cfg.metrics:
        _update_metrics(cfg, "train", pred, y)
    return {"loss": loss}


def default_validation_step(module: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Like `default_train_step` in eval mode, metrics go to the validation set."""
    cfg = _require_config(module)
    x, y = _inputs_and_targets(cfg, batch)
    if y is None:
        _forward(module, x)
        return {}
    pred, loss = _forward_and_loss(module, cfg, x, y)
    if cfg.metrics:
        _update_metrics(cfg, "val", pred, y)
    return {"loss": loss}


def default_predict_step(module: nn.Module, batch: Any) -> torch.Tensor:
    """The model's output for the batch's inputs (targets ignored); a dict's or ModelOutput's
    "logits"."""
    cfg = getattr(module, "_ember_compile", None)
    x, _ = split_batch(batch, cfg.target_key if cfg is not None else None)
    return prediction(_forward(module, x))


def prediction(out: Any) -> torch.Tensor:
    """The tensor the loss and metrics read from a model's output: the output itself, or the
    "logits" of a dict / Hugging Face `ModelOutput`.

    Example:
        >>> prediction({"logits": torch.zeros(2, 3), "hidden_states": None}).shape
        torch.Size([2, 3])
    """
    if not isinstance(out, dict):  # ModelOutput is a dict
        return out
    if "logits" in out and out["logits"] is not None:
        return out["logits"]
    tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor) and k != "loss"]
    if len(tensors) == 1:
        return out[tensors[0]]
    raise ValueError(
        "The model returned a dict without 'logits': ember reads 'logits' for the loss, the "
        f"metrics and predict. Received keys: {', '.join(map(str, out)) or 'none'}."
    )


def _inputs_and_targets(cfg: CompileConfig, batch: Any) -> tuple[Any, Any]:
    """Inputs and targets; token targets of padded positions (attention_mask 0) become -100."""
    x, y = split_batch(batch, cfg.target_key)
    mask = x.get("attention_mask") if isinstance(x, dict) else None
    if (
        isinstance(mask, torch.Tensor)
        and isinstance(y, torch.Tensor)
        and y.shape == mask.shape
        and not y.is_floating_point()
    ):
        y = y.masked_fill(mask == 0, losses.IGNORE_INDEX)
    return x, y


def _forward_and_loss(
    module: nn.Module, cfg: CompileConfig, x: Any, y: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.loss_fn is not None:
        pred = prediction(_forward(module, x))
        if not isinstance(pred, torch.Tensor):
            raise TypeError(
                f"{type(module).__name__} returned a {type(pred).__name__}, but the compiled loss "
                "takes one tensor: return a tensor or a dict with 'logits', or override "
                "train_step / validation_step to compute the loss of several outputs."
            )
        return pred, _loss(cfg, pred, y)
    # The model's own loss (Hugging Face): it gets the targets as `labels`.
    out = module(**x, labels=y) if isinstance(x, dict) else _forward(module, x)
    if not isinstance(out, dict) or out.get("loss") is None:
        raise ValueError(
            f"{type(module).__name__} returned no loss: compile with a loss, e.g. "
            "compile(model, 'adam', loss='cross_entropy'), or give the model its targets as "
            "`labels` in dict batches so it computes its own."
        )
    return prediction(out), out["loss"]


def _target_hint(cfg: CompileConfig, x: Any) -> str:
    if isinstance(x, dict):
        looked = f"{cfg.target_key!r}" if cfg.target_key else ", ".join(map(repr, TARGET_KEYS))
        return (
            f"a dict batch needs its targets under one of the keys {looked} (or set "
            f"compile(target_key=...)). Received keys: {', '.join(map(str, x)) or 'none'}."
        )
    return "pass `y` or a Dataset yielding (x, y)."
