"""ember: build, train, watch, scale, export and serve PyTorch models in one package.

Names are imported on first use (PEP 562): `import ember` is instant, and the command line's
`ember --help` does not wait for torch. `from ember import layers` or `ember.Sequential` imports
what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute in it; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "data": ("ember.data", None),
    "layers": ("ember.layers", None),
    "losses": ("ember.losses", None),
    "metrics": ("ember.metrics", None),
    "export": ("ember.export", None),  # a callable module: ember.export(pkg, ["onnx"])
    "load_digits": ("ember.data", "load_digits"),
    "Model": ("ember.model", "Model"),
    "Sequential": ("ember.model", "Sequential"),
    "compile": ("ember.train.compile", "compile"),
    "save": ("ember.package", "save"),
    "load": ("ember.loading", "load"),  # a Model back (predict, evaluate, fit)
    **{
        name: ("ember.train", name)
        for name in (
            "Callback",
            "CSVLogger",
            "EarlyStopping",
            "History",
            "LearningRateMonitor",
            "ModelCheckpoint",
            "ProgressBar",
            "TensorBoardLogger",
            "Trainer",
        )
    },
}

__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LearningRateMonitor",
    "Model",
    "ModelCheckpoint",
    "ProgressBar",
    "Sequential",
    "TensorBoardLogger",
    "Trainer",
    "__version__",
    "compile",
    "data",
    "export",
    "layers",
    "load",
    "load_digits",
    "losses",
    "metrics",
    "save",
]

if TYPE_CHECKING:  # what editors and type checkers see
    from ember import data, layers, losses, metrics
    from ember.data import load_digits
    from ember.loading import load
    from ember.model import Model, Sequential
    from ember.package import save
    from ember.train import (
        Callback,
        CSVLogger,
        EarlyStopping,
        History,
        LearningRateMonitor,
        ModelCheckpoint,
        ProgressBar,
        TensorBoardLogger,
        Trainer,
    )
    from ember.train.compile import compile


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ember' has no attribute {name!r}")
    module_name, attribute = target
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    if name != "export":  # ember.export is set by the import system itself
        globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
