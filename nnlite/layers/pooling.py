"""Pooling on NCHW arrays (MaxPool2D, AvgPool2D), with PyTorch's semantics.

Like the convolution, the pools work on NHWC memory (``x.transpose(0, 2, 3, 1)``), so
a window's channels sit in contiguous runs.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.door import quote
from ..core.layer import Layer
from ..kernels import replaceable
from .activations import ReLU
from .convolution import _check_nchw, _pair


def _along(axis: int, ndim: int, start: int, count: int, step: int) -> tuple:
    """Index of ``count`` entries from ``start`` every ``step`` along ``axis``."""
    index = [slice(None)] * ndim
    index[axis] = slice(start, start + step * (count - 1) + 1, step)
    return tuple(index)


def _adjoint_1d(g, arg, in_shape, axis, k, s, share) -> np.ndarray:
    """The adjoint of a 1-D pooling pass: offset i of every window receives share(g, arg,
    i, k); written where the windows tile the axis, else added onto zeros."""
    count = g.shape[axis]
    if s == k and count * k == in_shape[axis]:  # windows tile the axis: write, not add
        dx = np.empty(in_shape, g.dtype)
        for i in range(k):
            share(g, arg, i, k, out=dx[_along(axis, dx.ndim, i, count, s)])
        return dx
    dx = np.zeros(in_shape, g.dtype)
    for i in range(k):
        dx[_along(axis, dx.ndim, i, count, s)] += share(g, arg, i, k)
    return dx


def max_pool_1d(x: np.ndarray, axis: int, k: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """The maximum of windows of k every s along ``axis``, and each window's offset of its
    first maximum (a uint8); NaN propagates, as np.maximum."""
    count = (x.shape[axis] - k) // s + 1
    first = x[_along(axis, x.ndim, 0, count, s)]
    if k == 1:
        return first.copy(), np.zeros(first.shape, np.uint8)
    second = x[_along(axis, x.ndim, 1, count, s)]
    y = np.maximum(first, second)
    arg = np.greater(second, first).view(np.uint8)   # offset of the first maximum
    for i in range(2, k):
        candidate = x[_along(axis, x.ndim, i, count, s)]
        better = candidate > y
        np.maximum(y, candidate, out=y)
        arg[better] = i
    return y, arg


def _max_share(g, arg, i, k, out=None):
    """The part of g that offset i receives: g where it held the maximum, else 0."""
    return np.multiply(g, arg == i, out=out)


def max_pool_1d_adjoint(g: np.ndarray, arg: np.ndarray, in_shape: tuple[int, ...], axis: int,
                        k: int, s: int) -> np.ndarray:
    """The VJP of ``max_pool_1d``: each window's g goes to the offset of its maximum."""
    return _adjoint_1d(g, arg, in_shape, axis, k, s, _max_share)


@replaceable
def max_pool_2d(xh: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The window maxima of NHWC ``xh``: the 1-D pass along W, then along H; with each
    pass's argmax (``arg_w``, ``arg_h``), which the adjoint needs."""
    mid, arg_w = max_pool_1d(xh, 2, kernel[1], stride[1])
    y, arg_h = max_pool_1d(mid, 1, kernel[0], stride[0])
    return y, arg_w, arg_h


@replaceable
def max_pool_2d_adjoint(g: np.ndarray, arg_w: np.ndarray, arg_h: np.ndarray,
                        in_shape: tuple[int, ...], kernel: tuple[int, int],
                        stride: tuple[int, int]) -> np.ndarray:
    """The VJP of ``max_pool_2d``: the adjoints of its two passes, in reverse."""
    mid_shape = (in_shape[0], in_shape[1], g.shape[2], in_shape[3])
    mid = max_pool_1d_adjoint(g, arg_h, mid_shape, 1, kernel[0], stride[0])
    return max_pool_1d_adjoint(mid, arg_w, in_shape, 2, kernel[1], stride[1])


def max_pool_1d_tangent(v: np.ndarray, arg: np.ndarray, axis: int, k: int, s: int
                        ) -> np.ndarray:
    """The JVP of ``max_pool_1d``: each window takes the tangent at its maximum's offset."""
    count = arg.shape[axis]
    out = v[_along(axis, v.ndim, 0, count, s)].copy()
    for i in range(1, k):
        np.copyto(out, v[_along(axis, v.ndim, i, count, s)], where=arg == i)
    return out


@replaceable
def max_pool_2d_tangent(vh: np.ndarray, arg_w: np.ndarray, arg_h: np.ndarray,
                        kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The JVP of ``max_pool_2d``: the JVPs of its two passes, in order."""
    mid = max_pool_1d_tangent(vh, arg_w, 2, kernel[1], stride[1])
    return max_pool_1d_tangent(mid, arg_h, 1, kernel[0], stride[0])


def _avg_share(g, arg, i, k, out=None):
    """The part of g that offset i receives: an equal 1/k share."""
    return np.multiply(g, g.dtype.type(1.0 / k), out=out)


def avg_pool_1d(x: np.ndarray, axis: int, k: int, s: int) -> tuple[np.ndarray, None]:
    """The mean of windows of k every s along ``axis``."""
    count = (x.shape[axis] - k) // s + 1
    y = x[_along(axis, x.ndim, 0, count, s)].copy()
    for i in range(1, k):
        y += x[_along(axis, x.ndim, i, count, s)]
    y *= y.dtype.type(1.0 / k)
    return y, None


def avg_pool_1d_adjoint(g: np.ndarray, arg: None, in_shape: tuple[int, ...], axis: int,
                        k: int, s: int) -> np.ndarray:
    """The VJP of ``avg_pool_1d``: each window's g, divided by k, to all its offsets."""
    return _adjoint_1d(g, arg, in_shape, axis, k, s, _avg_share)


def avg_pool_2d(xh: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]
                ) -> tuple[np.ndarray, None, None]:
    """The window means of NHWC ``xh``: the 1-D pass along W, then along H."""
    mid, _ = avg_pool_1d(xh, 2, kernel[1], stride[1])
    return avg_pool_1d(mid, 1, kernel[0], stride[0])[0], None, None


def avg_pool_2d_tangent(vh: np.ndarray, arg_w: None, arg_h: None, kernel: tuple[int, int],
                        stride: tuple[int, int]) -> np.ndarray:
    """The JVP of ``avg_pool_2d``, which is linear: the same means, of the tangent."""
    return avg_pool_2d(vh, kernel, stride)[0]


def avg_pool_2d_adjoint(g: np.ndarray, arg_w: None, arg_h: None, in_shape: tuple[int, ...],
                        kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The VJP of ``avg_pool_2d``: the adjoints of its two passes, in reverse."""
    mid_shape = (in_shape[0], in_shape[1], g.shape[2], in_shape[3])
    mid = avg_pool_1d_adjoint(g, None, mid_shape, 1, kernel[0], stride[0])
    return avg_pool_1d_adjoint(mid, None, in_shape, 2, kernel[1], stride[1])


class _Pool2D(Layer):
    """Shared by the pooling layers: kh×kw windows every stride (default: the kernel).

    A 2-D window max or mean is a 1-D one along W, then a 1-D one along H, so both
    pools run two 1-D passes over NHWC memory (``pool_2d``), each visiting the k window
    offsets in turn as strided slices; backward applies the adjoints of the two passes in
    reverse (``adjoint_2d``), and jvp their JVPs in order (``tangent_2d``).
    """

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(name, "kernel_size", kernel_size)
        self.stride = _pair(name, "stride", stride) if stride is not None else self.kernel_size
        if max(self.kernel_size) > 255:  # MaxPool2D keeps each window's argmax in a uint8
            raise ValueError(f"{name}: kernel_size must be at most 255, got {quote(kernel_size)}")

    def check_input(self, x: np.ndarray) -> None:
        _check_nchw(self, x)
        kh, kw = self.kernel_size
        if x.shape[2] < kh or x.shape[3] < kw:
            raise ValueError(f"{self!r}: input {x.shape} is smaller than the window {kh}x{kw}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        xh = x.transpose(0, 2, 3, 1)
        y, *self._args = self.pool_2d(xh, self.kernel_size, self.stride)
        self._in_shape = xh.shape
        return y.transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return self.adjoint_2d(grad.transpose(0, 2, 3, 1), *self._cached("_args"),
                               self._in_shape, self.kernel_size, self.stride
                               ).transpose(0, 3, 1, 2)

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return self.tangent_2d(tangent.transpose(0, 2, 3, 1), *self._cached("_args"),
                               self.kernel_size, self.stride).transpose(0, 3, 1, 2)

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op(self.onnx_op, x, kernel_shape=list(self.kernel_size),
                    strides=list(self.stride))

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


class MaxPool2D(_Pool2D):
    """y = the maximum of each window (as ``torch.nn.MaxPool2d``, floor mode, no padding).

    VJP: each output's gradient goes to the position of its window's maximum (the
    first one in row-major order, if tied), i.e. J has a single 1 per row.
    JVP: each output takes the tangent at its window's maximum.
    """

    pool_2d, adjoint_2d = staticmethod(max_pool_2d), staticmethod(max_pool_2d_adjoint)
    tangent_2d = staticmethod(max_pool_2d_tangent)

    onnx_op = "MaxPool"

    def lipschitz_bound(self) -> float:
        """1 where windows do not overlap; √(windows covering a pixel) where they do."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        return math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw))

    def commutes_with(self, before: Layer) -> bool:
        """Whether a Sequential may run this pool before ``before``, the layer before it, to
        the same result: a ReLU, where the windows tile (stride = kernel). max(relu(x)) =
        relu(max(x)), and the gradient reaches a window's maximum through the ReLU exactly
        when that maximum is positive, either way round; so the ReLU touches a quarter of
        the values (the same bits where the windows cover the input; where they leave rows
        or columns out, a zero gradient's sign may differ)."""
        return type(before) is ReLU and self.stride == self.kernel_size


class AvgPool2D(_Pool2D):
    """y = the mean of each window (as ``torch.nn.AvgPool2d``, floor mode, no padding).

    VJP: each output's gradient, divided by kh·kw, goes to every position of its window.
    JVP: the pool is linear, so J · v is the mean of each window of v.
    """

    pool_2d, adjoint_2d = staticmethod(avg_pool_2d), staticmethod(avg_pool_2d_adjoint)
    tangent_2d = staticmethod(avg_pool_2d_tangent)

    onnx_op = "AveragePool"
    #: Linear in x: its bound is its operator norm for the input's size (``nnlite.check``).
    lipschitz_linear = True
