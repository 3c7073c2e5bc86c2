"""Convolution and pooling on NCHW arrays, with PyTorch's layouts and semantics.

Inside, the layers work on NHWC memory (``x.transpose(0, 2, 3, 1)``): channels
innermost, so a window's values are gathered in contiguous runs and a layer's
output, handed on as an NCHW view of NHWC memory, needs no copy in the next.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..layer import Layer, Parameter, default_rng


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else tuple(int(v) for v in value)


def _check_nchw(layer: Layer, x: np.ndarray, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{layer!r} expects input of shape {want}, got {x.shape}")


def _windows(xh: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """View of every kh×kw window of NHWC ``xh``: shape (N, Ho, Wo, C, kh, kw)."""
    return sliding_window_view(xh, kernel, axis=(1, 2))[:, ::stride[0], ::stride[1]]


def _scatter_windows(dwin: np.ndarray, shape: tuple[int, ...], stride: tuple[int, int]
                     ) -> np.ndarray:
    """The adjoint of ``_windows``: add each window's gradient (N, Ho, Wo, kh, kw, C)
    back onto an NHWC array of ``shape`` (col2im), one kernel offset at a time."""
    out = np.zeros(shape, dwin.dtype)
    _, ho, wo, kh, kw, _ = dwin.shape
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dwin[:, :, :, i, j]
    return out


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) of NCHW input.

    y[n, o, p, q] = b[o] + Σ_{c,i,j} W[o, c, i, j] · xpad[n, c, s·p + i, s·q + j].
    Computed as one matrix product: the windows of x as rows (im2col), times W.
    VJP: with G the output gradient as rows, dL/dW += Gᵀ · windows, dL/db += Σ G, and
    dL/dx = col2im(G · W): each window's gradient added back where the window was read.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 bias: bool = True, *, dtype: Any = np.float32,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.padding = (_pair(kernel_size), _pair(stride),
                                                       _pair(padding))
        self.dtype = np.dtype(dtype)
        kh, kw = self.kernel_size
        limit = np.sqrt(6.0 / (in_channels * kh * kw))  # He uniform, fan_in = C·kh·kw
        w = (rng or default_rng()).uniform(-limit, limit, (out_channels, in_channels, kh, kw))
        self.weight = Parameter(w.astype(self.dtype))
        self.bias = Parameter(np.zeros(out_channels, self.dtype)) if bias else None

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_nchw(self, x, self.in_channels)
        xh = self._padded(x.transpose(0, 2, 3, 1))
        kh, kw = self.kernel_size
        if xh.shape[1] < kh or xh.shape[2] < kw:
            raise ValueError(f"{self!r}: input {x.shape} (padded to {xh.shape[1]}x"
                             f"{xh.shape[2]}) is smaller than the kernel {kh}x{kw}")
        win = _windows(xh, self.kernel_size, self.stride)        # (N, Ho, Wo, C, kh, kw)
        n, ho, wo = win.shape[:3]
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1)  # rows: (kh, kw, C)
        y = cols @ self._weight_rows().T                             # (N·Ho·Wo, O)
        if self.bias is not None:
            y += self.bias.data
        self._cols, self._in_shape = cols, xh.shape
        return y.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        cols = self._cached("_cols")
        n, hp, wp, c = self._in_shape
        g = grad.transpose(0, 2, 3, 1)
        ho, wo = g.shape[1:3]
        g2 = g.reshape(-1, self.out_channels)
        kh, kw = self.kernel_size
        dw = (g2.T @ cols).reshape(self.out_channels, kh, kw, c).transpose(0, 3, 1, 2)
        self.weight.grad += dw
        if self.bias is not None:
            self.bias.add_matmul(np.ones(len(g2), g2.dtype), g2)
        if not self.input_grad:
            return None
        dcols = (g2 @ self._weight_rows()).reshape(n, ho, wo, kh, kw, c)
        dxh = _scatter_windows(dcols, self._in_shape, self.stride)
        ph, pw = self.padding
        dxh = dxh[:, ph:hp - ph, pw:wp - pw]
        return dxh.transpose(0, 3, 1, 2)

    def _weight_rows(self) -> np.ndarray:
        """W as (O, kh·kw·C), matching the im2col rows."""
        return self.weight.data.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def _padded(self, xh: np.ndarray) -> np.ndarray:
        ph, pw = self.padding
        if not (ph or pw):
            return xh
        n, h, w, c = xh.shape
        out = np.zeros((n, h + 2 * ph, w + 2 * pw, c), xh.dtype)
        out[:, ph:ph + h, pw:pw + w] = xh
        return out

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "bias": self.bias is not None,
                "dtype": self.dtype.name}


class _Pool2D(Layer):
    """Shared by the pooling layers: kh×kw windows every stride (default: the kernel)."""

    def __init__(self, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] | None = None):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride) if stride is not None else self.kernel_size

    def _windows(self, x: np.ndarray) -> np.ndarray:
        _check_nchw(self, x)
        kh, kw = self.kernel_size
        if x.shape[2] < kh or x.shape[3] < kw:
            raise ValueError(f"{self!r}: input {x.shape} is smaller than the window {kh}x{kw}")
        self._in_shape = x.shape
        return _windows(x.transpose(0, 2, 3, 1), self.kernel_size, self.stride)

    def _scatter(self, dwin: np.ndarray) -> np.ndarray:
        """Window gradients (N, Ho, Wo, kh, kw, C) back to an NCHW input gradient."""
        n, c, h, w = self._cached("_in_shape")
        return _scatter_windows(dwin, (n, h, w, c), self.stride).transpose(0, 3, 1, 2)

    def get_config(self) -> dict[str, Any]:
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride)}


class MaxPool2D(_Pool2D):
    """y = the maximum of each window (as ``torch.nn.MaxPool2d``, floor mode, no padding).

    VJP: each output's gradient goes to the position of its window's maximum (the
    first one, if tied), i.e. J has a single 1 per row.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        win = self._windows(x)                                  # (N, Ho, Wo, C, kh, kw)
        flat = win.reshape(*win.shape[:4], -1)
        self._argmax = flat.argmax(axis=-1)
        y = np.take_along_axis(flat, self._argmax[..., None], axis=-1)[..., 0]
        return y.transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        argmax = self._cached("_argmax")                         # (N, Ho, Wo, C)
        g = grad.transpose(0, 2, 3, 1)
        kh, kw = self.kernel_size
        hits = argmax[..., None] == np.arange(kh * kw)           # (N, Ho, Wo, C, kh·kw)
        dwin = (g[..., None] * hits).reshape(*g.shape, kh, kw).transpose(0, 1, 2, 4, 5, 3)
        return self._scatter(dwin)


class AvgPool2D(_Pool2D):
    """y = the mean of each window (as ``torch.nn.AvgPool2d``, floor mode, no padding).

    VJP: each output's gradient, divided by kh·kw, goes to every position of its window.
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._windows(x).mean(axis=(4, 5)).transpose(0, 3, 1, 2)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        g = grad.transpose(0, 2, 3, 1)
        kh, kw = self.kernel_size
        share = g * g.dtype.type(1.0 / (kh * kw))
        dwin = np.broadcast_to(share[:, :, :, None, None, :], (*g.shape[:3], kh, kw, g.shape[3]))
        return self._scatter(dwin)
