"""The numba twins of the element- and row-wise passes of the transformer's layers: GELU
(``nnlite.layers.activations``) and LayerNorm (``nnlite.layers.normalisation``). GELU's is
two passes around NumPy's vector exp (which both paths call) where its reference makes
about forty, with the reference's operations in its order (float64 inside, rounded once),
so it is equal bit for bit. LayerNorm's are one pass over each row, summing in float64 in
vector lanes where NumPy sums pairwise in the input's dtype, so they are equal to its
rounding. Gathered by ``nnlite.kernels.compiled``.
"""
from __future__ import annotations

import math

import numpy as np

from .jit import jit

#: ``nnlite.layers.activations.ERF_P``/``ERF_Q`` and its constants, written again since the
#: kernels import nothing of nnlite (tests/test_kernels.py checks they are the same).
ERF_P = (1.1283791678789563, 0.18533691457630014, 0.05428027067331551,
         0.003848084737826445, 0.0003773458790224658, 4.620789448503415e-06,
         -1.2878918015379881e-08)
ERF_Q = (1.0, 0.4975839503527622, 0.11396555219434325, 0.015451035598281537,
         0.001304230969589708, 6.250640506762738e-05)
_C = math.sqrt(2.0 / math.pi)
_SQRT_HALF, _INV_SQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)


def gelu(x, tanh):
    """Equals ``nnlite.layers.activations.gelu`` for row-major float32; NotImplemented
    otherwise (float64's erf is scipy's). Two passes around NumPy's vector exp."""
    if x.dtype != np.float32 or not x.flags.c_contiguous:
        return NotImplemented
    e, y = np.empty(x.shape, np.float32), np.empty(x.shape, np.float32)
    _gelu_exponent(x.reshape(-1), e.reshape(-1), tanh)
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    _gelu_from_exp(x.reshape(-1), e.reshape(-1), y.reshape(-1), tanh)
    return y, e


@jit
def _erf(z):
    """``erf_rational`` at one float64 z."""
    if z > 4.0:
        z = 4.0
    elif z < -4.0:
        z = -4.0
    t = z * z
    p = ERF_P[6]
    q = ERF_Q[5]
    for i in range(5, -1, -1):
        p = p * t + ERF_P[i]
    for i in range(4, -1, -1):
        q = q * t + ERF_Q[i]
    return p / q * z


@jit
def _u(w):
    return _C * (w + 0.044715 * w * w * w)


@jit
def _gelu_exponent(x, e, tanh):
    for i in range(x.size):
        w = np.float64(x[i])
        e[i] = np.float32(-2 * _u(w) if tanh else -0.5 * w * w)


@jit
def _gelu_from_exp(x, e, y, tanh):
    """y, and the slope written over e."""
    for i in range(x.size):
        w, ei = np.float64(x[i]), np.float64(e[i])
        if tanh:
            p = 1 / (1 + ei)
            slope = 2 * w * p * (1 - p) * (_C * (1 + 3 * 0.044715 * w * w))
        else:
            p = 0.5 * (1 + _erf(w * _SQRT_HALF))
            slope = ei * _INV_SQRT_2PI * w
        slope += p
        y[i] = np.float32(w * p)
        e[i] = np.float32(slope)


def _rows_of(dtype, *arrays):
    """True if every array is row-major and of ``dtype`` (float32 or float64)."""
    return dtype in (np.float32, np.float64) and all(
        a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def layer_norm(rows, weight, bias, eps):
    """Equals ``nnlite.layers.normalisation.layer_norm`` to rounding, with γ (β optional)."""
    if weight is None or not _rows_of(rows.dtype, rows, weight, *(() if bias is None else
                                                                   (bias,))):
        return NotImplemented
    y, xhat = np.empty_like(rows), np.empty_like(rows)
    inv_std = np.empty((len(rows), 1), rows.dtype)
    _layer_norm(rows, weight, weight if bias is None else bias, bias is not None, eps,
                y, xhat, inv_std)
    return y, xhat, inv_std


def layer_norm_vjp(g, xhat, inv_std, weight, params):
    """Equals ``nnlite.layers.normalisation.layer_norm_vjp`` to rounding, with γ."""
    if weight is None or not _rows_of(xhat.dtype, g, xhat, inv_std, weight):
        return NotImplemented
    dx = np.empty_like(xhat)
    dw, db = np.zeros(xhat.shape[1]), np.zeros(xhat.shape[1])  # float64 sums over rows
    _layer_norm_vjp(g, xhat, inv_std, weight, params, dx, dw, db)
    if not params:
        return dx, None, None
    return dx, dw.astype(xhat.dtype), db.astype(xhat.dtype)


@jit(fastmath={"reassoc"})
def _layer_norm(x, w, b, has_bias, eps, y, xhat, inv_std):
    m, d = x.shape
    for i in range(m):
        total = 0.0
        for j in range(d):
            total += x[i, j]
        mean = total / d
        square = 0.0
        for j in range(d):
            c = x[i, j] - mean
            square += c * c
        r = 1 / math.sqrt(square / d + eps)
        inv_std[i, 0] = r
        for j in range(d):
            h = (x[i, j] - mean) * r
            xhat[i, j] = h
            y[i, j] = h * w[j] + b[j] if has_bias else h * w[j]


@jit(fastmath={"reassoc"})
def _layer_norm_vjp(g, xhat, inv_std, w, params, dx, dw, db):
    m, d = xhat.shape
    for i in range(m):
        mean_g = 0.0
        mean_gx = 0.0
        for j in range(d):
            gj, h = np.float64(g[i, j]), np.float64(xhat[i, j])
            if params:
                dw[j] += gj * h
                db[j] += gj
            gw = gj * w[j]
            mean_g += gw
            mean_gx += gw * h
        mean_g /= d
        mean_gx /= d
        r = inv_std[i, 0]
        for j in range(d):
            dx[i, j] = (g[i, j] * np.float64(w[j]) - mean_g - xhat[i, j] * mean_gx) * r
