"""Training: the Trainer, callbacks, loggers, checkpoints."""

from ember.train.backup import BackupAndRestore
from ember.train.callbacks import Callback, CallbackError, EarlyStopping, LearningRateMonitor
from ember.train.history import History
from ember.train.keras_callbacks import LambdaCallback, ReduceLROnPlateau, TerminateOnNaN
from ember.train.loggers import CSVLogger, Logger, TensorBoardLogger
from ember.train.lr_finder import LRFinderResult, lr_find
from ember.train.mlflow_logger import MLflowLogger
from ember.train.model_checkpoint import ModelCheckpoint
from ember.train.progress import ProgressBar
from ember.train.trainer import Trainer

__all__ = [
    "BackupAndRestore",
    "LambdaCallback",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
    "LRFinderResult",
    "lr_find",
    "Callback",
    "CallbackError",
    "CSVLogger",
    "EarlyStopping",
    "History",
    "LearningRateMonitor",
    "Logger",
    "MLflowLogger",
    "ModelCheckpoint",
    "ProgressBar",
    "TensorBoardLogger",
    "Trainer",
]
