"""Callbacks, importable as `ember.callbacks` (Keras's spelling)."""

from ember.train.backup import BackupAndRestore
from ember.train.callbacks import Callback, CallbackError, EarlyStopping, LearningRateMonitor
from ember.train.keras_callbacks import LambdaCallback, ReduceLROnPlateau, TerminateOnNaN
from ember.train.model_checkpoint import ModelCheckpoint
from ember.train.progress import ProgressBar

__all__ = [
    "BackupAndRestore",
    "LambdaCallback",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "Callback",
    "CallbackError",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "ProgressBar",
]
