"""The steps the Trainer runs: the default train / validation / predict steps, `DefaultSteps`
(which `ember.Model` builds on) and `Steps`, which picks a module's own steps or the defaults.

The default steps read the module's `CompileConfig` (`ember.train.compile`). This module and
`compile` belong to the model's layer: they import nothing else from `ember.train`, so
`ember.model` can build on them while the Trainer above uses them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ember import losses, optimizers
from ember.train.compile import CompileConfig, compile, describe_loss

__all__ = [
    "CompileConfig",
    "DefaultSteps",
    "Steps",
    "bind_train_step",
    "build_metrics",
    "build_optimizers",
    "call_module",
    "compile",
    "default_predict_step",
    "default_train_step",
    "default_validation_step",
    "describe_loss",
    "prediction",
    "require_config",
    "split_batch",
    "update_metrics",
]

log = logging.getLogger(__name__)

TARGET_KEYS = ("labels", "label", "y", "target", "targets")


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


def call_module(module: nn.Module, x: Any) -> Any:
    """`module(x)`, with a tuple as positional inputs and a dict as named ones."""
    if isinstance(x, dict):  # named inputs: model(image=..., meta=...)
        return module(**x)
    return module(*x) if isinstance(x, tuple) else module(x)


def require_config(module: nn.Module) -> CompileConfig:
    """The module's `CompileConfig`; a RuntimeError saying how to compile it when it has none."""
    cfg = getattr(module, "_ember_compile", None)
    if cfg is None:
        raise RuntimeError(
            f"{type(module).__name__} is not compiled: call model.compile(optimizer='adam', "
            "loss='cross_entropy') (or ember.compile(module, ...)) before fit/evaluate, or override "
            "train_step."
        )
    return cfg


def update_metrics(cfg: CompileConfig, stage: str, pred: torch.Tensor, y: torch.Tensor) -> None:
    """Update the compiled metrics of `stage` ("train" or "val"), built on first use."""
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
    return _train_step(module, require_config(module), batch)


def bind_train_step(module: nn.Module) -> Callable[[Any], dict[str, torch.Tensor]]:
    """`default_train_step` for `module`, its compile config looked up once, not per batch.

    The Trainer calls this when a fit starts and the result once per batch.

    Example:
        >>> step = bind_train_step(ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy"))
        >>> step((torch.zeros(8, 4), torch.zeros(8, dtype=torch.long)))["loss"].shape
        torch.Size([])
    """
    cfg = require_config(module)
    log.info("Loss: %s", describe_loss(cfg))
    return functools.partial(_train_step, module, cfg)


def _train_step(module: nn.Module, cfg: CompileConfig, batch: Any) -> dict[str, torch.Tensor]:
    x, y = _inputs_and_targets(cfg, batch)
    if y is None:
        raise ValueError(f"The training data has no targets: {_target_hint(cfg, x)}")
    pred, loss = _forward_and_loss(module, cfg, x, y)
    if cfg.metrics:
        update_metrics(cfg, "train", pred, y)
    return {"loss": loss}


def default_validation_step(module: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
    """Like `default_train_step` in eval mode, metrics go to the validation set."""
    cfg = require_config(module)
    x, y = _inputs_and_targets(cfg, batch)
    if y is None:
        call_module(module, x)
        return {}
    pred, loss = _forward_and_loss(module, cfg, x, y)
    if cfg.metrics:
        update_metrics(cfg, "val", pred, y)
    return {"loss": loss}


def default_predict_step(module: nn.Module, batch: Any) -> torch.Tensor:
    """The model's output for the batch's inputs (targets ignored); a dict's or ModelOutput's
    "logits"."""
    cfg = getattr(module, "_ember_compile", None)
    x, _ = split_batch(batch, cfg.target_key if cfg is not None else None)
    return prediction(call_module(module, x))


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
    if type(batch) in (list, tuple) and len(batch) == 2 and type(batch[0]) is torch.Tensor:
        return batch[0], batch[1]  # the usual (x, y), first: this runs every batch
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
        out = module(x) if type(x) is torch.Tensor else call_module(module, x)
        pred = out if type(out) is torch.Tensor else prediction(out)
        if not isinstance(pred, torch.Tensor):
            raise TypeError(
                f"{type(module).__name__} returned a {type(pred).__name__}, but the compiled loss "
                "takes one tensor: return a tensor or a dict with 'logits', or override "
                "train_step / validation_step to compute the loss of several outputs."
            )
        try:
            return pred, cfg.loss_fn(pred, y)
        except (IndexError, RuntimeError) as exc:  # wrong labels: say which and how to fix them
            from ember.data.checks import explain_loss_error

            better = explain_loss_error(exc, pred, y)
            if better is None:
                raise
            raise better from exc
    # The model's own loss (Hugging Face): it gets the targets as `labels`.
    out = module(**x, labels=y) if isinstance(x, dict) else call_module(module, x)
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


class DefaultSteps:
    """The default `train_step`, `validation_step` and `predict_step` of a compiled model.

    `ember.Model` inherits them; a subclass that overrides one replaces the default (`Steps`
    checks which ones a module overrides). A plain `torch.nn.Module` compiled with
    `ember.compile` gets the same steps from `Steps` without inheriting them.
    """

    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One training batch -> logs with a "loss" tensor (the Trainer runs backward)."""
        return default_train_step(self, batch)

    def validation_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One validation batch -> logs ("loss"); compiled metrics are updated."""
        return default_validation_step(self, batch)

    def predict_step(self, batch: Any) -> torch.Tensor:
        """One batch -> the model's output."""
        return default_predict_step(self, batch)


class Steps:
    """What the Trainer drives: a module's `train_step`, `validation_step`, `predict_step` and
    optimizers.

    A module that defines one of these methods (an `ember.Model` subclass overriding it, or any
    module) has it called directly; otherwise, and for a plain `nn.Module` compiled with
    `ember.compile`, the default steps of this module run.

    Example:
        >>> steps = Steps(ember.compile(torch.nn.Linear(4, 2), "adam", "cross_entropy"))
        >>> steps.train_step is None  # the default: the Trainer binds it when fit starts
        True
    """

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(
                f"The Trainer trains a torch.nn.Module. Received: {type(module).__name__}"
            )
        self.module = module
        self.forward_module: nn.Module = module
        # None: the default step, which the Trainer binds to the compile config when fit starts.
        self.train_step = _override(module, "train_step")
        self.validation_step = _method(module, "validation_step", default_validation_step)
        self.predict_step = _method(module, "predict_step", default_predict_step)

    @property
    def config(self) -> CompileConfig | None:
        return getattr(self.module, "_ember_compile", None)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, Any, str, str]:
        """Return (optimizer, scheduler or None, scheduler interval, scheduler monitor)."""
        if hasattr(self.module, "configure_optimizers"):
            return _normalize(self.module.configure_optimizers())
        cfg = self.config
        if cfg is None:
            raise RuntimeError(
                f"{type(self.module).__name__} has no optimizer: call "
                "model.compile(optimizer='adam', loss='cross_entropy') (for a plain torch module: "
                "ember.compile(module, ...)) first, or define configure_optimizers()."
            )
        return build_optimizers(self.module, cfg)

    def compute_metrics(self, stage: str, strategy: Any) -> dict[str, float]:
        """Compute and reset the compiled metrics of `stage` ("train" or "val")."""
        cfg = self.config
        if cfg is None:
            return {}
        out = {}
        for name, metric in cfg.metric_objects.get(stage, {}).items():
            if metric.update_count:
                # Every metric (ember's and torchmetrics') sums its state over the ranks itself.
                out[name] = float(metric.compute())
            metric.reset()
        return out

    def hparams(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {"model": type(self.module).__name__}
        if cfg is not None:
            out.update(
                optimizer=_name(cfg.optimizer),
                loss=_name(cfg.loss) if cfg.loss is not None else "the model's own",
                lr=cfg.lr,
                metrics=",".join(_name(m) for m in cfg.metrics),
            )
            if hasattr(cfg.loss_fn, "from_logits"):  # which the cross-entropy read (see the log)
                out["from_logits"] = cfg.loss_fn.from_logits
        return out


def build_optimizers(module: nn.Module, cfg: CompileConfig):
    """The optimizer and scheduler described by a compile config."""
    optimizer = optimizers.get(cfg.optimizer, module.parameters(), lr=cfg.lr)
    scheduler = cfg.scheduler
    if callable(scheduler) and not hasattr(scheduler, "step"):
        scheduler = scheduler(optimizer)
    return optimizer, scheduler, cfg.scheduler_interval, cfg.scheduler_monitor


def _normalize(result: Any) -> tuple[torch.optim.Optimizer, Any, str, str]:
    """Accept an optimizer, (optimizer, scheduler) or Lightning's dict form."""
    if isinstance(result, torch.optim.Optimizer):
        return result, None, "epoch", "val_loss"
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return result[0], result[1], "epoch", "val_loss"
    if isinstance(result, dict) and "optimizer" in result:
        sched = result.get("lr_scheduler")
        if isinstance(sched, dict):
            return (
                result["optimizer"],
                sched["scheduler"],
                sched.get("interval", "epoch"),
                sched.get("monitor", "val_loss"),
            )
        return result["optimizer"], sched, "epoch", "val_loss"
    raise TypeError(
        "configure_optimizers() must return an optimizer, (optimizer, scheduler) or "
        "{'optimizer': ..., 'lr_scheduler': {'scheduler': ..., 'interval': 'step'}}. "
        f"Received: {type(result).__name__}"
    )


def _method(module: nn.Module, name: str, default: Any) -> Any:
    return _override(module, name) or functools.partial(default, module)


def _override(module: nn.Module, name: str) -> Any:
    """`module.<name>` when the module defines it (the `DefaultSteps` it inherits do not count),
    else None."""
    bound = getattr(module, name, None)
    if bound is None or getattr(bound, "__func__", None) is getattr(DefaultSteps, name):
        return None
    return bound


def _name(obj: Any) -> str:
    if obj is None or isinstance(obj, str):
        return str(obj)
    return getattr(obj, "__name__", type(obj).__name__)
