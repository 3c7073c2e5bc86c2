"""Regularisation layers: Dropout."""
from __future__ import annotations

import numpy as np

from ..layer import Layer, default_rng


class Dropout(Layer):
    """Inverted dropout: in training y = x ⊙ m / (1 − p), m ~ Bernoulli(1 − p);
    in eval mode y = x.

    VJP: g ⊙ m / (1 − p) (the same mask as the forward pass), or g in eval mode.
    Draws come from ``self.rng`` (set per epoch by ``fit``), else from the
    generator seeded by ``nnlite.set_seed``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p is the probability of dropping a unit and must be "
                             f"in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0:
            self._scale = None
            return x.copy()
        rng = self.rng if self.rng is not None else default_rng()
        keep = 1.0 - self.p
        dtype = np.dtype(x.dtype if x.dtype == np.float32 else np.float64)
        self._scale = (rng.random(x.shape, dtype=dtype) < keep) * dtype.type(1.0 / keep)
        return x * self._scale

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if "_scale" not in self.__dict__:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return grad.copy() if self._scale is None else grad * self._scale
