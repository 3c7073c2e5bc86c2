"""Metrics for ``fit(metrics=...)`` and ``evaluate(metrics=...)``, defined in
``nnlite.training.metrics``: by name ``"accuracy"``, ``"top_k_accuracy"``, ``"mae"``,
``"mse"``, or as objects."""
from .training.metrics import (Metric, MeanAbsoluteError, MeanSquaredError,  # noqa: F401
                               TopKAccuracy)

__all__ = ["Metric", "TopKAccuracy", "MeanAbsoluteError", "MeanSquaredError"]
