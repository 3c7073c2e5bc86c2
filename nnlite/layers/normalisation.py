"""Normalisation layers: BatchNorm."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..layer import Layer, Parameter, check_number, new_array, resolve_dtype


class BatchNorm(Layer):
    """Batch normalisation of (N, C) or (N, C, H, W) input, as torch's BatchNorm1d/2d.

    Per channel c, over the batch (and pixels): x̂ = (x − μ_B)/√(σ²_B + ε) with the
    biased batch variance, y = γ x̂ + β. Running statistics move by ``momentum``:
    μ ← (1 − m)μ + m·μ_B, σ² ← (1 − m)σ² + m·σ²_B·M/(M − 1) (unbiased, M values per
    channel), and replace the batch statistics in eval mode; ``num_batches_tracked`` counts
    the training batches, as torch's.
    VJP (training), per channel over its M values, with ĝ = g ⊙ γ:
    dL/dx = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / √(σ²_B + ε);
    dL/dγ += Σ g ⊙ x̂;  dL/dβ += Σ g.  In eval mode dL/dx = g ⊙ γ/√(σ² + ε).
    """

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, *,
                 dtype: Any = None):
        super().__init__()
        self.num_features = check_number("BatchNorm", "num_features", num_features,
                                         integer=True, low=1)
        self.momentum = check_number("BatchNorm", "momentum", momentum, low=0, high=1)
        self.eps = check_number("BatchNorm", "eps", eps, low=0)
        self.dtype = resolve_dtype(dtype)
        c = (self.num_features,)
        self.weight = Parameter(new_array(c, self.dtype, 1), self.dtype)
        self.bias = Parameter(new_array(c, self.dtype), self.dtype)
        self.register_buffer("running_mean", new_array(c, self.dtype))
        self.register_buffer("running_var", new_array(c, self.dtype, 1))
        self.register_buffer("num_batches_tracked", new_array((), np.int64))

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """x as (M, C): channels last (NHWC memory for 4-D input)."""
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got {x.shape}")
        return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, self.num_features)

    def _back(self, rows: np.ndarray, like: np.ndarray) -> np.ndarray:
        """(M, C) rows back to the shape of ``like`` (an NCHW view of NHWC memory)."""
        if like.ndim == 2:
            return rows
        n, c, h, w = like.shape
        return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def forward(self, x: np.ndarray) -> np.ndarray:
        rows = self._rows(x)
        m = len(rows)
        if self.training:
            if m < 2:
                raise ValueError(f"{self!r} needs more than one value per channel in training, "
                                 f"got input of shape {x.shape}")
            mean = _column_sums(rows) / m
            centred = rows - mean
            var = np.einsum("ij,ij->j", centred, centred) / m
            self.num_batches_tracked += 1
            self.running_mean *= 1 - self.momentum
            self.running_mean += self.momentum * mean
            self.running_var *= 1 - self.momentum
            self.running_var += (self.momentum * m / (m - 1)) * var
        else:
            centred = rows - self.running_mean
            var = self.running_var
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(rows.dtype)
        self._centred, self._inv_std, self._batch_stats = centred, inv_std, self.training
        y = np.multiply(centred, inv_std * self.weight.data)    # γ x̂ = γ/σ · (x − μ)
        y += self.bias.data
        return self._back(y, x)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        centred, inv_std = self._cached("_centred"), self._cached("_inv_std")
        g = self._rows(grad)
        m = len(g)
        sum_g = _column_sums(g)
        sum_g_xhat = np.einsum("ij,ij->j", g, centred) * inv_std
        self.weight.grad += sum_g_xhat
        self.bias.grad += sum_g
        scale = self.weight.data * inv_std                      # γ/σ
        if not self._batch_stats:
            return self._back(g * scale, grad)
        # γ/σ · (g − mean(g) − x̂ mean(g x̂)), with x̂ = (x − μ)/σ, as a·(g − ḡ) + k·(x − μ)
        dx = np.subtract(g, sum_g / m)
        dx *= scale
        dx += centred * (-scale * inv_std * sum_g_xhat / m)
        return self._back(dx, grad)


def _column_sums(rows: np.ndarray) -> np.ndarray:
    """Σ over rows of an (M, C) array, as one matrix-vector product."""
    return np.ones(len(rows), rows.dtype) @ rows
