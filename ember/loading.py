"""`ember.load`: a model package back as a Model you can predict with, evaluate and keep training."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ember import data as _data
from ember.model import Model, Sequential

__all__ = ["LoadedModel", "load"]

log = logging.getLogger(__name__)

# What a loaded model is compiled with when its package names a task (recompile to change it).
_DEFAULT_COMPILE = {
    "classification": ("cross_entropy", ["accuracy"]),
    "regression": ("mse", ["mae"]),
}


class LoadedModel(Model):
    """A packaged module (its `torch.export` program) with `fit`, `evaluate`, `predict`, `save`.

    Calling it accepts numpy arrays as well as tensors. The exported graph was traced in eval
    mode, so dropout and batch-norm statistics stay as at save time when it keeps training.

    Args:
        module: the module `ember.package.load` returned.

    Example:
        >>> model = ember.load("digits_model")
        >>> model.predict(x_test[:5]).shape
        (5, 10)
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # several inputs (token ids, masks) come positionally or by name, as the package's
        # signature lists them; numpy arrays are accepted as predict accepts them
        args = tuple(self._tensor(a) for a in args)
        kwargs = {k: self._tensor(v) for k, v in kwargs.items()}
        return self.module(*args, **kwargs)

    def _tensor(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            x = _data.as_tensor(x, "x").to(device)
        return x


def load(path: str | os.PathLike, *, compile: bool = True) -> Model:
    """Load a model package as an `ember.Model`: `predict`, `evaluate`, `fit`, `save` all work.

    A package with an `ember.Sequential` architecture comes back as that `Sequential` (every
    layer trainable, dropout and batch norm included); any other model comes back as a
    `LoadedModel` over its `torch.export` program, without your Python class. Files are checked
    against their sha256 first and nothing is unpickled (see `ember.package.load`).

    Args:
        path: the package directory.
        compile: compile for the package's task (classification: cross_entropy + accuracy,
            regression: mse + mae, Adam) so `evaluate` and `fit` work at once; call
            `model.compile(...)` to change it.

    Returns:
        The model, in eval mode, with `.manifest` (the package's `ember.json`) and `.labels`.

    Example:
        >>> model = ember.load("digits_model")
        >>> model.evaluate(x_test, y_test)
        >>> model.fit(x_new, y_new, epochs=2)
    """
    from ember import package

    manifest = package.read_manifest(path)
    loaded = package.load(path)
    named, _ = package.load_named_sample(path)
    # one input: its tensor; several (ids + mask): the dict, as save() takes it back
    inputs = next(iter(named.values())) if len(named) == 1 else named
    model = _as_model(loaded, manifest.get("architecture"), inputs)
    model.eval()
    model.manifest = manifest
    model.labels = manifest.get("labels")
    model._fit_sample = inputs  # lets model.save(...) trace it again without example_input
    task = manifest.get("task")
    if compile and task in _DEFAULT_COMPILE:
        loss, metrics = _DEFAULT_COMPILE[task]
        model.compile("adam", loss, metrics)
    return model


def _as_model(loaded: nn.Module, architecture: Any, sample: torch.Tensor) -> Model:
    if isinstance(loaded, Model):
        return loaded  # package.load rebuilt the Sequential itself
    if isinstance(architecture, dict) and architecture.get("kind") == "sequential":
        rebuilt = _rebuild(loaded, architecture, sample)
        if rebuilt is not None:
            return rebuilt
    return LoadedModel(loaded)


def _rebuild(loaded: nn.Module, architecture: dict, sample: torch.Tensor) -> Sequential | None:
    """The Sequential from its config, with the program's weights (trainable in every mode)."""
    try:
        model = Sequential.from_config(architecture)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(sample[:2])  # builds lazy layers
        model.load_state_dict(_match_keys(loaded.state_dict(), model.state_dict()))
        return model
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:
        log.warning("Kept the exported program: rebuilding the Sequential failed (%s)", exc)
        return None


def _match_keys(loaded: dict, expected: dict) -> dict:
    """The loaded weights under the rebuilt model's names (the program's wrapper adds a prefix)."""
    out = {}
    for key in expected:
        found = [k for k in loaded if k == key or k.endswith("." + key)]
        if len(found) != 1:
            raise KeyError(f"no unique weight for {key} (found {found})")
        out[key] = loaded[found[0]]
    return out
