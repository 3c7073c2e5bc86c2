"""Normalisation layers: BatchNorm and LayerNorm."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.door import check_flag, check_number, new_array
from ..core.layer import Layer
from ..core.parameter import Parameter, resolve_dtype
from ..kernels import replaceable


class BatchNorm(Layer):
    """Batch normalisation of (N, C) or (N, C, H, W) input, as torch's BatchNorm1d/2d.

    Per channel c, over the batch (and pixels): x̂ = (x − μ_B)/√(σ²_B + ε) with the
    biased batch variance, y = γ x̂ + β. Running statistics move by ``momentum``:
    μ ← (1 − m)μ + m·μ_B, σ² ← (1 − m)σ² + m·σ²_B·M/(M − 1) (unbiased, M values per
    channel), and replace the batch statistics in eval mode; ``num_batches_tracked`` counts
    the training batches, as torch's. A frozen BatchNorm (``trainable = False``) runs as in
    eval mode, with and without changing its running statistics, as Keras's.
    VJP (training), per channel over its M values, with ĝ = g ⊙ γ:
    dL/dx = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / √(σ²_B + ε);
    dL/dγ += Σ g ⊙ x̂;  dL/dβ += Σ g.  In eval mode dL/dx = g ⊙ γ/√(σ² + ε).
    JVP: J is symmetric within a channel (the statistics of every sample move with v):
    J · v = γ (v − mean(v) − x̂ ⊙ mean(v ⊙ x̂)) / √(σ²_B + ε); in eval mode v ⊙ γ/√(σ² + ε).
    Under ``fit(threads=n)`` each thread sees a part of the batch; the sums over the batch
    (Σ x, Σ (x − μ)², Σ g, Σ g ⊙ x̂ and M) are the parts' sums added up (``across``).
    """

    #: Adds up a per-channel sum over the parts of a batch that ``fit(threads=n)`` split
    #: among threads (``nnlite.training.parallel`` sets it in each part's copy); None: one part.
    across: Any = None
    #: In training it normalises with the batch's own statistics: ``fit`` refuses a last
    #: batch of one sample, which would give each channel one value.
    batch_statistics = True

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

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.num_features}) or "
                             f"(N, {self.num_features}, H, W), got {x.shape}")
        if self.training and self._trainable and x.size // self.num_features < 2:
            raise ValueError(f"{self!r} needs more than one value per channel in training, "
                             f"got input of shape {x.shape}")

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """x as (M, C): channels last (NHWC memory for 4-D input)."""
        return x if x.ndim == 2 else x.transpose(0, 2, 3, 1).reshape(-1, self.num_features)

    def _back(self, rows: np.ndarray, like: np.ndarray) -> np.ndarray:
        """(M, C) rows back to the shape of ``like`` (an NCHW view of NHWC memory)."""
        if like.ndim == 2:
            return rows
        n, c, h, w = like.shape
        return rows.reshape(n, h, w, c).transpose(0, 3, 1, 2)

    def _whole(self, part_sum: np.ndarray) -> np.ndarray:
        """A sum over this part of the batch, as the sum over the whole batch."""
        return part_sum if self.across is None else self.across(part_sum)

    def lipschitz_bound(self) -> float:
        """In eval mode, x ↦ γ(x − μ)/√(σ² + ε) + β per channel: max |γ|/√(σ² + ε)."""
        return float(np.max(np.abs(self.weight.data) / np.sqrt(self.running_var + self.eps)))

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("BatchNormalization", x, g.constant(self.weight.data),
                    g.constant(self.bias.data), g.constant(self.running_mean),
                    g.constant(self.running_var), epsilon=self.eps)

    def forward(self, x: np.ndarray) -> np.ndarray:
        rows = self._rows(x)
        if self.training and self._trainable:
            m = int(self._whole(np.array(len(rows))))
            mean = self._whole(_column_sums(rows)) / m
            centred = rows - mean
            var = self._whole(np.einsum("ij,ij->j", centred, centred)) / m
            self.num_batches_tracked += 1
            self.running_mean *= 1 - self.momentum
            self.running_mean += self.momentum * mean
            self.running_var *= 1 - self.momentum
            self.running_var += (self.momentum * m / (m - 1)) * var
        else:
            centred = rows - self.running_mean
            var = self.running_var
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(rows.dtype)
        self._centred, self._inv_std = centred, inv_std
        self._batch_stats = self.training and self._trainable
        y = np.multiply(centred, inv_std * self.weight.data)    # γ x̂ = γ/σ · (x − μ)
        y += self.bias.data
        return self._back(y, x)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        centred, inv_std = self._cached("_centred"), self._cached("_inv_std")
        g = self._rows(grad)
        scale = self.weight.data * inv_std                      # γ/σ
        if not self._batch_stats:
            if self._trainable:
                self.weight.grad += np.einsum("ij,ij->j", g, centred) * inv_std
                self.bias.grad += _column_sums(g)
            return self._back(g * scale, grad)
        sum_g = _column_sums(g)
        sum_g_xhat = np.einsum("ij,ij->j", g, centred) * inv_std
        self.weight.grad += sum_g_xhat
        self.bias.grad += sum_g
        m = int(self._whole(np.array(len(g))))
        sum_g, sum_g_xhat = self._whole(sum_g), self._whole(sum_g_xhat)
        # γ/σ · (g − mean(g) − x̂ mean(g x̂)), with x̂ = (x − μ)/σ, as a·(g − ḡ) + k·(x − μ)
        dx = np.subtract(g, sum_g / m)
        dx *= scale
        dx += centred * (-scale * inv_std * sum_g_xhat / m)
        return self._back(dx, grad)

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        centred, inv_std = self._cached("_centred"), self._cached("_inv_std")
        v = self._rows(tangent)
        scale = self.weight.data * inv_std                      # γ/σ
        if not self._batch_stats:
            return self._back(v * scale, tangent)
        mean_v_xhat = np.einsum("ij,ij->j", v, centred) * inv_std / len(v)
        dx = v - _column_sums(v) / len(v)
        dx -= centred * (inv_std * mean_v_xhat)
        dx *= scale
        return self._back(dx, tangent)


def _column_sums(rows: np.ndarray) -> np.ndarray:
    """Σ over rows of an (M, C) array, as one matrix-vector product."""
    return np.ones(len(rows), rows.dtype) @ rows


class LayerNorm(Layer):
    """Layer normalisation over the last axes, as ``torch.nn.LayerNorm``.

    Over the D values of ``normalized_shape`` at each position: x̂ = (x − μ)/√(σ² + ε) with
    the biased variance, y = γ ⊙ x̂ + β (γ, β of ``normalized_shape``, if affine).
    VJP, with ĝ = g ⊙ γ and means over those D values:
    dL/dx = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂)) / √(σ² + ε);
    dL/dγ += Σ over positions of g ⊙ x̂;  dL/dβ += Σ over positions of g.
    JVP: J · v = γ ⊙ (v − mean(v) − x̂ ⊙ mean(v ⊙ x̂)) / √(σ² + ε).
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *, dtype: Any = None):
        super().__init__()
        shape = (normalized_shape,) if not isinstance(normalized_shape, (list, tuple)) \
            else tuple(normalized_shape)
        self.normalized_shape = tuple(check_number("LayerNorm", "normalized_shape", d,
                                                   integer=True, low=1) for d in shape)
        self.eps = check_number("LayerNorm", "eps", eps, low=0)
        self.elementwise_affine = check_flag("LayerNorm", "elementwise_affine",
                                             elementwise_affine)
        self.dtype = resolve_dtype(dtype)
        affine = self.elementwise_affine
        self.weight = Parameter(new_array(self.normalized_shape, self.dtype, 1), self.dtype) \
            if affine else None
        self.bias = Parameter(new_array(self.normalized_shape, self.dtype), self.dtype) \
            if affine and check_flag("LayerNorm", "bias", bias) else None

    def check_input(self, x: np.ndarray) -> None:
        k = len(self.normalized_shape)
        if x.shape[x.ndim - k:] != self.normalized_shape or x.ndim <= k:
            raise ValueError(f"{self!r} normalises trailing axes {self.normalized_shape}, got "
                             f"input of shape {x.shape}")

    def lipschitz_bound(self) -> float:
        """max |γ|/√ε: loose (the slope of x/√(σ² + ε) near σ² = 0)."""
        gamma = 1.0 if self.weight is None else float(np.max(np.abs(self.weight.data)))
        return gamma / math.sqrt(self.eps) if self.eps > 0 else math.inf

    def to_onnx(self, g: Any, x: str) -> str:
        shape = self.normalized_shape
        scale = self.weight.data if self.weight is not None else np.ones(shape)
        bias = self.bias.data if self.bias is not None else np.zeros(shape)
        return g.op("LayerNormalization", x, g.constant(scale), g.constant(bias),
                    axis=-len(shape), epsilon=self.eps)

    def forward(self, x: np.ndarray) -> np.ndarray:
        rows = x.reshape(-1, int(np.prod(self.normalized_shape)))
        weight, bias = (None if p is None else p.data.reshape(-1)
                        for p in (self.weight, self.bias))
        y, self._xhat, self._inv_std = layer_norm(rows, weight, bias, self.eps)
        return y.reshape(x.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._cached("_xhat"), self._inv_std
        weight = None if self.weight is None else self.weight.data.reshape(-1)
        want = weight is not None and self._trainable
        dx, dw, db = layer_norm_vjp(grad.reshape(xhat.shape), xhat, inv_std, weight, want)
        if want:
            self.weight.grad += dw.reshape(self.normalized_shape)
            if self.bias is not None:
                self.bias.grad += db.reshape(self.normalized_shape)
        return dx.reshape(grad.shape)

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        xhat, inv_std = self._cached("_xhat"), self._inv_std
        v = tangent.reshape(xhat.shape)
        dy = v - v.mean(axis=1, keepdims=True)
        dy -= xhat * (np.einsum("ij,ij->i", v, xhat)[:, None] / xhat.shape[1])
        dy *= inv_std
        if self.weight is not None:
            dy *= self.weight.data.reshape(-1)
        return dy.reshape(tangent.shape)

    def get_config(self) -> dict[str, Any]:
        return {"normalized_shape": list(self.normalized_shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.bias is not None,
                "dtype": self.dtype.name}


@replaceable
def layer_norm(rows: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None,
               eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LayerNorm of each row of (M, D) rows: y = γ ⊙ x̂ + β, and x̂ and 1/√(σ² + ε) (M, 1)
    for the VJP; γ, β of length D, or None."""
    xhat = rows - rows.mean(axis=1, keepdims=True)
    var = np.einsum("ij,ij->i", xhat, xhat)[:, None]
    var *= var.dtype.type(1 / rows.shape[1])
    var += var.dtype.type(eps)
    inv_std = np.sqrt(var, out=var)
    np.divide(1, inv_std, out=inv_std)
    xhat *= inv_std
    if weight is None:
        return xhat.copy(), xhat, inv_std
    y = xhat * weight
    if bias is not None:
        y += bias
    return y, xhat, inv_std


@replaceable
def layer_norm_vjp(g: np.ndarray, xhat: np.ndarray, inv_std: np.ndarray,
                   weight: np.ndarray | None, params: bool
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """dL/dx = (ĝ − mean(ĝ) − x̂ ⊙ mean(ĝ ⊙ x̂))/√(σ² + ε) with ĝ = g ⊙ γ, for (M, D) rows;
    with ``params``, also Σ over rows of g ⊙ x̂ and of g (dL/dγ and dL/dβ), else None."""
    dw = db = None
    if params:
        dw, db = np.einsum("ij,ij->j", g, xhat), _column_sums(g)
    if weight is not None:
        g = g * weight
    mean_g = g.mean(axis=1, keepdims=True)
    mean_gx = np.einsum("ij,ij->i", g, xhat)[:, None]
    mean_gx *= mean_gx.dtype.type(1 / xhat.shape[1])
    dx = g - mean_g
    dx -= xhat * mean_gx
    dx *= inv_std
    return dx, dw, db
