"""Callbacks for ``fit`` (Keras's), defined in ``nnlite.training.callbacks``, where the
loop that calls them is."""
from .training.callbacks import (CSVLogger, Callback, CallbackList, EarlyStopping, EpochLine,
                                 History, LambdaCallback, ModelCheckpoint, ProgressBar)

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "LambdaCallback", "EpochLine", "ProgressBar", "CallbackList"]
