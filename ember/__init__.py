"""ember: build, train, watch, scale, export and serve PyTorch models in one package."""

from ember import data, layers, losses, metrics
from ember.data import load_digits
from ember.model import Model, Sequential
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

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CSVLogger",
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


def __getattr__(name: str):
    # save / load / export live in modules that other parts import lazily; resolve on first use.
    if name == "save":
        from ember import package

        return package.save
    if name == "load":  # a Model back (predict, evaluate, fit), over ember.package.load
        from ember.loading import load

        return load
    if name == "export":
        import ember.export  # a callable module: ember.export(pkg, ["onnx"]) and ember.export.TARGETS

        return ember.export
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
