"""Program: what the Trainer drives - the steps and optimizers of an ember Model or a plain module."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ember import optimizers
from ember.train import steps

__all__ = ["Program"]


class Program:
    """Adapts a module to the Trainer: `train_step`, `validation_step`, `predict_step`, optimizers.

    An `ember.Model` (or any module) that defines these methods is called directly; a plain
    `nn.Module` compiled with `ember.compile` gets the default steps.
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
        self.validation_step = _method(module, "validation_step", steps.default_validation_step)
        self.predict_step = _method(module, "predict_step", steps.default_predict_step)

    @property
    def config(self) -> steps.CompileConfig | None:
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


def build_optimizers(module: nn.Module, cfg: steps.CompileConfig):
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
    """`module.<name>` when the module defines it (ember.Model's defaults do not count), else None."""
    from ember.model import Model  # lazy: ember.model imports this package

    bound = getattr(module, name, None)
    if bound is None or getattr(bound, "__func__", None) is getattr(Model, name):
        return None
    return bound


def _name(obj: Any) -> str:
    if obj is None or isinstance(obj, str):
        return str(obj)
    return getattr(obj, "__name__", type(obj).__name__)
