"""Callbacks, importable as `ember.callbacks` (Keras's spelling)."""

from ember.train.callbacks import Callback, CallbackError, EarlyStopping, LearningRateMonitor
from ember.train.model_checkpoint import ModelCheckpoint
from ember.train.progress import ProgressBar

__all__ = [
    "Callback",
    "CallbackError",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ProgressBar",
]
