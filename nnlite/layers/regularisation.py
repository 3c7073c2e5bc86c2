"""Regularisation layers: Dropout, and data augmentation (RandomShift, RandomHorizontalFlip)."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.door import check_number, quote
from ..core.layer import Layer, default_rng


class Dropout(Layer):
    """Inverted dropout: in training y = x ⊙ m / (1 − p), m ~ Bernoulli(1 − p);
    in eval mode y = x.

    VJP: g ⊙ m / (1 − p) (the same mask as the forward pass), or g in eval mode. J is
    diagonal, so the JVP is the same product with v: ``jvp`` is ``backward``.
    Draws come from ``self.rng`` (set per epoch by ``fit``), else from the
    generator seeded by ``nnlite.set_seed``.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not isinstance(p, (int, float, np.number)) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p is the probability of dropping a unit and must be "
                             f"in [0, 1), got {quote(p)}")
        self.p = float(p)

    def lipschitz_bound(self) -> float:
        return 1.0  # the identity in eval mode

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Identity", x)  # the identity at inference

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

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return self.backward(tangent)


class RandomShift(Layer):
    """Data augmentation for NCHW images: in training, each sample is shifted by its own
    random (dy, dx) ∈ [−s, s]², filling with zeros; in eval mode y = x.

    y[n, c, i, j] = x[n, c, i + dyₙ, j + dxₙ] (0 outside the image), a linear map whose
    VJP shifts the gradient back: dL/dx[n, c, i, j] = g[n, c, i − dyₙ, j − dxₙ] (0 outside),
    and whose JVP shifts the tangent as the forward shifts x.
    Draws come from ``self.rng`` (set per epoch by ``fit``), else nnlite's generator.
    """

    def __init__(self, max_shift: int = 2):
        super().__init__()
        self.max_shift = check_number("RandomShift", "max_shift", max_shift, integer=True, low=0)

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"{self!r} expects images of shape (N, C, H, W), got {x.shape}")

    def lipschitz_bound(self) -> float:
        return 1.0  # the identity in eval mode

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Identity", x)  # the identity at inference

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.max_shift == 0:
            self._offsets = None
            return x.copy()
        rng = self.rng if self.rng is not None else default_rng()
        self._offsets = rng.integers(0, 2 * self.max_shift + 1, (2, len(x)))
        self._shape = x.shape
        return self.jvp(x)  # a linear map: y = J · x

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        if "_offsets" not in self.__dict__:
            raise RuntimeError(f"{self!r}: jvp called before forward")
        if self._offsets is None:
            return tangent.copy()
        s = self.max_shift
        return self._at_offsets(np.pad(tangent, ((0, 0), (0, 0), (s, s), (s, s))))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if "_offsets" not in self.__dict__:
            raise RuntimeError(f"{self!r}: backward called before forward")
        if self._offsets is None:
            return grad.copy()
        s = self.max_shift
        n, c, h, w = self._shape
        padded = np.zeros((n, c, h + 2 * s, w + 2 * s), grad.dtype)
        self._at_offsets(padded, grad)
        return padded[:, :, s:s + h, s:s + w].copy()

    def _at_offsets(self, padded: np.ndarray, value: np.ndarray | None = None) -> np.ndarray:
        """Each sample's H×W window of ``padded`` at its offset: read it, or write ``value``."""
        n, c, h, w = self._shape
        windows = sliding_window_view(padded, (h, w), axis=(2, 3), writeable=value is not None)
        index = (np.arange(n), slice(None), self._offsets[0], self._offsets[1])
        if value is None:
            return windows[index]
        windows[index] = value
        return padded


class RandomHorizontalFlip(Layer):
    """Data augmentation for NCHW images: in training, each sample is mirrored left-right
    with probability ``p`` (as torchvision's RandomHorizontalFlip); in eval mode y = x.

    y[n, c, i, j] = x[n, c, i, W − 1 − j] for a mirrored sample, else x[n, c, i, j]: a
    permutation, so the VJP mirrors the gradient of the same samples back; mirroring twice
    is the identity, so J is symmetric and the JVP is the same: ``jvp`` is ``backward``.
    Draws come from ``self.rng`` (set per epoch by ``fit``), else nnlite's generator.
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = check_number("RandomHorizontalFlip", "p", p, low=0, high=1)

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 4:
            raise ValueError(f"{self!r} expects images of shape (N, C, H, W), got {x.shape}")

    def lipschitz_bound(self) -> float:
        return 1.0  # the identity in eval mode

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Identity", x)  # the identity at inference

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = x.copy()
        self._mirrored = None
        if self.training and self.p > 0:
            rng = self.rng if self.rng is not None else default_rng()
            self._mirrored = np.flatnonzero(rng.random(len(x)) < self.p)
            y[self._mirrored] = x[self._mirrored, :, :, ::-1]
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        if "_mirrored" not in self.__dict__:
            raise RuntimeError(f"{self!r}: backward called before forward")
        dx = grad.copy()
        if self._mirrored is not None:
            dx[self._mirrored] = grad[self._mirrored, :, :, ::-1]
        return dx

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return self.backward(tangent)
