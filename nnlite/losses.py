"""Losses: ``MSE``, ``CrossEntropy``, ``BinaryCrossEntropy``, defined in ``nnlite.core.losses``
(a loss starts backpropagation, so it is part of the core)."""
from .core.losses import BinaryCrossEntropy, CrossEntropy, Loss, MSE

__all__ = ["Loss", "MSE", "CrossEntropy", "BinaryCrossEntropy"]
