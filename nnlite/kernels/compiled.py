"""The numba twins of nnlite's replaceable NumPy passes (see ``nnlite.kernels``).

Each function here has the name, arguments and results of the reference it replaces,
named in its docstring, and computes the same values: the same operations on the same
dtype in the same order, so the results are equal bit for bit. Loops run on one thread
(on 2 cores, a parallel layer waits for OpenBLAS's spinning worker), one image or one
row at a time so that what a loop writes stays in cache, channels innermost (NHWC).

Python floats are float64 in numba and would promote float32 arithmetic: the optimizers'
twins cast theirs to the arrays' dtype before the loop, as NumPy casts a Python float.
"""
from __future__ import annotations

import numba  # noqa: F401 (nnlite.kernels reads its version and error types here)
import numpy as np

from .jit import jit as _jit
from .rows import gelu, layer_norm, layer_norm_vjp  # noqa: F401 (twins, looked up by name)


# -- pooling: nnlite.layers.pooling -------------------------------------------------------
@_jit
def _maximum(a, b):
    """np.maximum(a, b) exactly: NaN if either is (a's first), else b unless a > b, so an
    equal b wins (0.0 against -0.0 gives -0.0, as NumPy's vector max does)."""
    if a != a:
        return a
    if b != b or not a > b:
        return b
    return a


@_jit
def _max_along_h(x, y, arg, k, s):
    """The 1-D max over windows of k rows every s rows of x (N, H, W, C), into y and
    arg (N, count, W, C): y as np.maximum folds them, arg the first strict maximum."""
    n, count, w, c = y.shape
    for a in range(n):
        for p in range(count):
            for b in range(w):
                for ch in range(c):
                    y[a, p, b, ch] = x[a, p * s, b, ch]
                    arg[a, p, b, ch] = 0
                for i in range(1, k):
                    for ch in range(c):
                        v, best = x[a, p * s + i, b, ch], y[a, p, b, ch]
                        if v > best:  # the reference's arg: a strict maximum
                            arg[a, p, b, ch] = i
                        y[a, p, b, ch] = _maximum(best, v)


@_jit
def _max_pool_1d(x, axis, k, s):
    """Equals ``nnlite.layers.pooling.max_pool_1d`` (x NHWC, axis 1 or 2)."""
    n, h, w, c = x.shape
    if axis == 1:
        shape = (n, (h - k) // s + 1, w, c)
    else:
        shape = (n, h, (w - k) // s + 1, c)
    y = np.empty(shape, x.dtype)
    arg = np.empty(shape, np.uint8)
    if axis == 1:
        _max_along_h(x, y, arg, k, s)
    else:
        _max_along_h(x.transpose(0, 2, 1, 3), y.transpose(0, 2, 1, 3),
                     arg.transpose(0, 2, 1, 3), k, s)
    return y, arg


@_jit
def _unpool_along_h(g, arg, dx, k, s, tiles):
    """dx[window p, offset i] = g·[arg = i]: written where windows tile the axis, else
    added offset by offset (i outer, as the reference) onto zeros."""
    n, count, w, c = g.shape
    zero = np.zeros(1, dx.dtype)[0]
    for a in range(n):
        for i in range(k):
            for p in range(count):
                for b in range(w):
                    for ch in range(c):
                        share = g[a, p, b, ch] if arg[a, p, b, ch] == i else \
                            g[a, p, b, ch] * zero
                        if tiles:
                            dx[a, p * s + i, b, ch] = share
                        else:
                            dx[a, p * s + i, b, ch] += share


@_jit
def _max_pool_1d_adjoint(g, arg, in_shape, axis, k, s):
    """Equals ``nnlite.layers.pooling.max_pool_1d_adjoint``."""
    tiles = s == k and g.shape[axis] * k == in_shape[axis]
    dx = np.empty(in_shape, g.dtype) if tiles else np.zeros(in_shape, g.dtype)
    if axis == 1:
        _unpool_along_h(g, arg, dx, k, s, tiles)
    else:
        _unpool_along_h(g.transpose(0, 2, 1, 3), arg.transpose(0, 2, 1, 3),
                        dx.transpose(0, 2, 1, 3), k, s, tiles)
    return dx


@_jit
def _max_pool_2x2(xh):
    """``max_pool_2d`` of 2×2 windows every 2: the general loop's steps written out, with
    the argmaxes stored as comparisons rather than under branches; its channel loop then
    runs as vector instructions (1.0 ms against 12.5 ms on (128, 28, 28, 32) values)."""
    n, h, w, c = xh.shape
    y = np.empty((n, h // 2, w // 2, c), xh.dtype)
    arg_h = np.empty((n, h // 2, w // 2, c), np.uint8)
    arg_w = np.zeros((n, h, w // 2, c), np.uint8)
    for a in range(n):
        for p in range(h // 2):
            for q in range(w // 2):
                for ch in range(c):
                    x00, x01 = xh[a, 2 * p, 2 * q, ch], xh[a, 2 * p, 2 * q + 1, ch]
                    x10, x11 = xh[a, 2 * p + 1, 2 * q, ch], xh[a, 2 * p + 1, 2 * q + 1, ch]
                    top, bottom = _maximum(x00, x01), _maximum(x10, x11)
                    arg_w[a, 2 * p, q, ch] = x01 > x00
                    arg_w[a, 2 * p + 1, q, ch] = x11 > x10
                    arg_h[a, p, q, ch] = bottom > top
                    y[a, p, q, ch] = _maximum(top, bottom)
    return y, arg_w, arg_h


@_jit
def max_pool_2d(xh, kernel, stride):
    """Equals ``nnlite.layers.pooling.max_pool_2d``. Where windows tile (stride =
    kernel), one pass: each window row's maximum (the W pass) folded straight into the
    window's (the H pass), so the intermediate never goes to memory; ``arg_w`` of rows in
    no window stays 0 (no gradient reaches them). Otherwise the two 1-D passes."""
    (kh, kw), (sh, sw) = kernel, stride
    if kh == kw == sh == sw == 2:  # MaxPool2D(2): straight-line, so that it vectorises
        return _max_pool_2x2(xh)
    if sh != kh or sw != kw:
        mid, arg_w = _max_pool_1d(xh, 2, kw, sw)
        y, arg_h = _max_pool_1d(mid, 1, kh, sh)
        return y, arg_w, arg_h
    n, h, w, c = xh.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.empty((n, ho, wo, c), xh.dtype)
    arg_h = np.empty((n, ho, wo, c), np.uint8)
    arg_w = np.zeros((n, h, wo, c), np.uint8)
    row = np.empty(c, xh.dtype)  # one window row's running maximum, per channel
    for a in range(n):
        for p in range(ho):
            for q in range(wo):
                for i in range(kh):
                    r = p * sh + i
                    for ch in range(c):
                        row[ch] = xh[a, r, q * sw, ch]
                    for j in range(1, kw):
                        for ch in range(c):
                            v = xh[a, r, q * sw + j, ch]
                            if v > row[ch]:
                                arg_w[a, r, q, ch] = j
                            row[ch] = _maximum(row[ch], v)
                    for ch in range(c):
                        v = row[ch]
                        if i == 0:
                            y[a, p, q, ch] = v
                            arg_h[a, p, q, ch] = 0
                        else:
                            if v > y[a, p, q, ch]:
                                arg_h[a, p, q, ch] = i
                            y[a, p, q, ch] = _maximum(y[a, p, q, ch], v)
    return y, arg_w, arg_h


@_jit
def max_pool_2d_adjoint(g, arg_w, arg_h, in_shape, kernel, stride):
    """Equals ``nnlite.layers.pooling.max_pool_2d_adjoint``, zeros' signs included:
    where windows tile, each input's gradient is g, or g·0, through the H then the W
    adjoint as the reference computes it (0 + s where that adjoint adds onto zeros)."""
    (kh, kw), (sh, sw) = kernel, stride
    n, ho, wo, c = g.shape
    g = np.ascontiguousarray(g)  # g is often a view without the next layer's padding:
    # copied once, the loops below index it several times faster
    if sh != kh or sw != kw:
        mid = _max_pool_1d_adjoint(g, arg_h, (n, in_shape[1], wo, c), 1, kh, sh)
        return _max_pool_1d_adjoint(mid, arg_w, in_shape, 2, kw, sw)
    tile_h, tile_w = ho * kh == in_shape[1], wo * kw == in_shape[2]
    dx = np.empty(in_shape, g.dtype) if tile_h and tile_w else np.zeros(in_shape, g.dtype)
    zero = np.zeros(1, g.dtype)[0]
    for a in range(n):
        for p in range(ho):
            for i in range(kh):
                r = p * sh + i
                for q in range(wo):
                    for j in range(kw):
                        for ch in range(c):
                            gm = g[a, p, q, ch]
                            if arg_h[a, p, q, ch] != i:
                                gm = gm * zero
                            if not tile_h:
                                gm = zero + gm
                            d = gm if arg_w[a, r, q, ch] == j else gm * zero
                            if not tile_w:
                                d = zero + d
                            dx[a, r, q * sw + j, ch] = d
    return dx


@_jit
def max_pool_2d_tangent(vh, arg_w, arg_h, kernel, stride):
    """Equals ``nnlite.layers.pooling.max_pool_2d_tangent``: each output copies the tangent
    at its window's maximum, the row from ``arg_h`` and, in that row, the column from
    ``arg_w``; one pass, where the reference makes two."""
    sh, sw = stride
    n, ho, wo, c = arg_h.shape
    out = np.empty((n, ho, wo, c), vh.dtype)
    for a in range(n):
        for p in range(ho):
            for q in range(wo):
                for ch in range(c):
                    r = p * sh + arg_h[a, p, q, ch]
                    out[a, p, q, ch] = vh[a, r, q * sw + arg_w[a, r, q, ch], ch]
    return out


# -- activations: nnlite.layers.activations ----------------------------------------------
def relu_vjp(g, x):
    """Equals ``nnlite.layers.activations.relu_vjp`` (g, or g·0, where x > 0 or not), laid
    out as NumPy lays it out: in the memory order g and x share (a view of NHWC memory as
    NCHW included), else row-major. One pass in that order, whatever the strides, for up
    to 4 dimensions; NotImplemented for more, or for two dtypes."""
    if g.dtype != x.dtype or x.ndim > 4:
        return NotImplemented
    # Both row-major (the MLP's case): a flat loop, without the layout work below (6.5
    # against 25 µs a call on 128×256).
    if g.flags.c_contiguous and x.flags.c_contiguous:
        out = np.empty(g.shape, g.dtype)
        _relu_vjp(g.reshape(-1), x.reshape(-1), out.reshape(-1))
        return out
    order = _memory_order(x)
    if order != _memory_order(g):
        order = tuple(range(x.ndim))
    gt, xt = g.transpose(order), x.transpose(order)
    out = np.empty(xt.shape, g.dtype)
    four = (1,) * (4 - x.ndim) + xt.shape  # (one loop for 1 to 4 dimensions)
    _relu_vjp_4d(gt.reshape(four), xt.reshape(four), out.reshape(four))
    return out.transpose(np.argsort(order))


def _memory_order(a):
    """a's axes from the largest stride to the smallest: ``nnlite.core.layer.memory_order``,
    written again since the kernels import nothing of nnlite."""
    return tuple(np.argsort([-abs(s) for s in a.strides], kind="stable"))


@_jit
def _relu_vjp(g, x, out):
    zero = np.zeros(1, g.dtype)[0]
    for i in range(g.size):
        out[i] = g[i] if x[i] > 0 else g[i] * zero


@_jit
def _relu_vjp_4d(g, x, out):
    zero = np.zeros(1, g.dtype)[0]
    n0, n1, n2, n3 = x.shape
    for a in range(n0):
        for b in range(n1):
            for c in range(n2):
                for d in range(n3):
                    v = g[a, b, c, d]
                    out[a, b, c, d] = v if x[a, b, c, d] > 0 else v * zero


# -- col2im: nnlite.layers.convolution ----------------------------------------------------
@_jit
def add_windows(out, rows, stride):
    """Equals ``nnlite.layers.convolution.add_windows``: per image, the window offsets
    (i, j) in the reference's order, so each element sums its parts in the same order."""
    n, ho, wo, kh, kw, c = rows.shape
    sh, sw = stride
    for a in range(n):
        for i in range(kh):
            for j in range(kw):
                for p in range(ho):
                    for q in range(wo):
                        for ch in range(c):
                            out[a, i + sh * p, j + sw * q, ch] += rows[a, p, q, i, j, ch]


# -- optimizers: nnlite.optim --------------------------------------------------------------
def adam_update(p, g, m, v, tmp, b1, b2, step, eps_hat):
    """Equals ``nnlite.optim.adam_update``: its Python floats cast as NumPy casts them
    against arrays of p's dtype (1 − β computed in float64 first)."""
    dt = p.dtype.type
    _adam(p, g, m, v, dt(b1), dt(1 - b1), dt(b2), dt(1 - b2), dt(step), dt(eps_hat))


@_jit
def _adam(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, step, eps_hat):
    for i in range(p.size):
        gi = g[i]
        mi = m[i] * b1 + gi * one_minus_b1
        vi = v[i] * b2 + gi * gi * one_minus_b2
        m[i], v[i] = mi, vi
        p[i] -= mi / (np.sqrt(vi) + eps_hat) * step


def sgd_update(p, g, b, scratch, lr, momentum, nesterov, first):
    """Equals ``nnlite.optim.sgd_update`` (its Python floats cast as NumPy casts them)."""
    dt = p.dtype.type
    _sgd(p, g, g if b is None else b, dt(lr), dt(momentum), bool(momentum), nesterov, first)


@_jit
def _sgd(p, g, b, lr, momentum, has_momentum, nesterov, first):
    for i in range(p.size):
        gi = g[i]
        if has_momentum:
            bi = gi if first else b[i] * momentum + gi
            b[i] = bi
            gi = gi + bi * momentum if nesterov else bi
        p[i] -= gi * lr


def rmsprop_update(p, g, v, b, tmp, lr, alpha, eps, momentum):
    """Equals ``nnlite.optim.rmsprop_update`` (its Python floats cast as NumPy casts them)."""
    dt = p.dtype.type
    _rmsprop(p, g, v, g if b is None else b, dt(lr), dt(alpha), dt(1 - alpha), dt(eps),
             dt(momentum), bool(momentum))


@_jit
def _rmsprop(p, g, v, b, lr, alpha, one_minus_alpha, eps, momentum, has_momentum):
    for i in range(p.size):
        gi = g[i]
        vi = v[i] * alpha + gi * gi * one_minus_alpha
        v[i] = vi
        step = gi / (np.sqrt(vi) + eps)
        if has_momentum:
            bi = b[i] * momentum + step
            b[i] = bi
            step = bi * lr
        else:
            step = step * lr
        p[i] -= step
