"""Convolution on NCHW arrays, with PyTorch's layouts and semantics.

Inside, the layers work on NHWC memory (``x.transpose(0, 2, 3, 1)``): channels
innermost, so a window's values are gathered in contiguous runs and a layer's
output, handed on as an NCHW view of NHWC memory, needs no copy in the next.
"""
from __future__ import annotations

import functools
import math

from typing import Any, Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.door import check_flag, check_number, quote
from ..core.layer import Layer
from ..core.parameter import resolve_dtype
from ..kernels import replaceable
from .dense import initial


def _pair(owner: str, name: str, value: int | tuple[int, int], low: int = 1
          ) -> tuple[int, int]:
    """(h, w) from one whole number or two, each at least ``low``."""
    values = [value, value] if not isinstance(value, (list, tuple)) else list(value)
    if len(values) != 2:
        raise ValueError(f"{owner}: {name} must be one whole number or two, got {quote(value)}")
    h, w = (check_number(owner, name, v, integer=True, low=low) for v in values)
    return h, w


def _padding(value: Any, kernel: tuple[int, int], stride: tuple[int, int]
             ) -> tuple[tuple[int, int] | str, tuple[int, int, int, int]]:
    """(the padding as given: (ph, pw) or "same"/"valid", the rows and columns added on
    each side: top, bottom, left, right). "same" keeps H and W (stride 1 only), the odd
    extra row or column at the bottom or right, as ``torch.nn.Conv2d(padding="same")``."""
    if value == "valid":
        return "valid", (0, 0, 0, 0)
    if value == "same":
        if stride != (1, 1):
            raise ValueError(f"Conv2D: padding='same' needs stride 1, got stride {stride}")
        (th, tw) = (kernel[0] - 1, kernel[1] - 1)
        return "same", (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(value, str):
        raise ValueError(f"Conv2D: padding must be 'same', 'valid' or whole numbers, got "
                         f"{quote(value)}")
    ph, pw = _pair("Conv2D", "padding", value, low=0)
    return (ph, pw), (ph, ph, pw, pw)


def _check_nchw(layer: Layer, x: np.ndarray, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(N, {channels}, H, W)" if channels is not None else "(N, C, H, W)"
        raise ValueError(f"{layer!r} expects input of shape {want}, got {x.shape}")


def _windows(xh: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """View of every kh×kw window of NHWC ``xh``: shape (N, Ho, Wo, C, kh, kw)."""
    return sliding_window_view(xh, kernel, axis=(1, 2))[:, ::stride[0], ::stride[1]]


@replaceable
def add_windows(out: np.ndarray, rows: np.ndarray, stride: tuple[int, int]) -> None:
    """The adjoint of ``_windows`` (col2im): ``rows`` (N, Ho, Wo, kh, kw, C) holds the
    gradient of every window's values; add each back into ``out`` where it was read."""
    _, ho, wo, kh, kw, _ = rows.shape
    sh, sw = stride
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += rows[:, :, :, i, j]


#: Bytes of im2col rows (and of input-gradient rows) built at once where BLAS runs on one
#: thread (``fit(threads=n)``'s parts, MPI ranks): a few images' worth, so that they are
#: still in cache when the product, or col2im, reads them: about one core's L2 cache.
_CHUNK_BYTES = 2 << 20
#: The same where BLAS runs on several threads, which share one product: the whole batch
#: in one product, and forward's rows kept for backward, up to this many bytes a layer
#: (conv 32→64 on MNIST, batch 128: 33 against 37 ms forward and backward, rows of 29 MB;
#: examples/fashion_resnet.py --quick peaks at 792 MB against 641 MB).
_SHARED_BYTES = 32 << 20


@functools.cache
def _blas() -> Any:
    """threadpoolctl's view of the BLAS libraries, made once (1 ms)."""
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController().select(user_api="blas")


def _chunk_bytes() -> int:
    """How many bytes of rows to build at once: ``_SHARED_BYTES`` where BLAS runs on
    several threads now, else ``_CHUNK_BYTES``."""
    threads = max((lib.num_threads for lib in _blas().lib_controllers), default=1)
    return _SHARED_BYTES if threads > 1 else _CHUNK_BYTES


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as ``torch.nn.Conv2d``) of NCHW input.

    ``padding`` is rows and columns of zeros on each side (one number or two), or, as
    PyTorch's, ``"valid"`` (none) or ``"same"`` (the output keeps H and W; stride 1; for an
    even kernel the extra row and column go at the bottom and right). ``init`` is
    Linear's: "he" (the default), "glorot" or "torch" (PyTorch's default draw).

    y[n, o, p, q] = b[o] + Σ_{c,i,j} W[o, c, i, j] · xpad[n, c, s·p + i, s·q + j].
    Computed as a matrix product: the windows of x as rows (im2col) with a column of
    ones, times W with b as that column's weights.
    VJP: with G the output gradient as rows, dL/dW += Gᵀ · windows and dL/db += Σ G (both
    one product, Gᵀ · [windows, 1]), and
    dL/dx = col2im(G · W): each window's gradient added back where the window was read.
    JVP: the convolution is linear in x, so J · v is the same product on v, without b.
    Both directions go a few images at a time, so that each chunk's rows are still in
    cache when read (where BLAS runs on several threads, up to the whole batch in one
    product: ``_SHARED_BYTES``); backward builds the windows' rows again, but for
    forward's last chunk, which it reuses. Rows no wider than the output (a first
    convolution of few channels) are built once, for the whole batch, and backward reuses
    them: their product streams its larger output anyway, and the rebuild cost more than
    the cache saved (conv 1→32 on MNIST, batch 128: 10-15% less time, forward and
    backward). They are held column by column, (K, M) in memory.
    """

    skips_input_grad = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] | str = 0, bias: bool = True, *,
                 init: str = "he", dtype: Any = None, rng: np.random.Generator | None = None):
        super().__init__()
        self.in_channels = check_number("Conv2D", "in_channels", in_channels, integer=True,
                                        low=1)
        self.out_channels = check_number("Conv2D", "out_channels", out_channels, integer=True,
                                         low=1)
        self.kernel_size = _pair("Conv2D", "kernel_size", kernel_size)
        self.stride = _pair("Conv2D", "stride", stride)
        self.padding, self._pads = _padding(padding, self.kernel_size, self.stride)
        self.init, self.dtype = init, resolve_dtype(dtype)
        kh, kw = self.kernel_size  # fan_in = C·kh·kw, as Linear's init (nnlite.layers.dense)
        self.weight, self.bias = initial(
            "Conv2D", init, (self.out_channels, self.in_channels, kh, kw),
            self.in_channels * kh * kw, self.out_channels * kh * kw,
            check_flag("Conv2D", "bias", bias), self.dtype, rng)

    def check_input(self, x: np.ndarray) -> None:
        _check_nchw(self, x, self.in_channels)
        (kh, kw), (top, bottom, left, right) = self.kernel_size, self._pads
        hp, wp = x.shape[2] + top + bottom, x.shape[3] + left + right
        if hp < kh or wp < kw:
            raise ValueError(f"{self!r}: input {x.shape} (padded to {hp}x{wp}) is smaller "
                             f"than the kernel {kh}x{kw}")

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call: the padded input, its rows of
        windows and the output."""
        if len(shapes[0]) != 4:
            return 4 * math.prod(shapes[0])
        (n, c, h, w), (top, bottom, left, right), (kh, kw) = shapes[0], self._pads, \
            self.kernel_size
        padded = n * (h + top + bottom) * (w + left + right)
        return math.prod(shapes[0]) + padded * (c * (kh * kw + 2) + self.out_channels)

    #: Linear in x: its Lipschitz bound is the convolution's operator norm, padding
    #: included, for the input's height and width (``nnlite.check``).
    lipschitz_linear = True

    def to_onnx(self, g: Any, x: str) -> str:
        top, bottom, left, right = self._pads
        inputs = [x, g.constant(self.weight.data)]
        if self.bias is not None:
            inputs.append(g.constant(self.bias.data))
        return g.op("Conv", *inputs, kernel_shape=list(self.kernel_size),
                    strides=list(self.stride), pads=[top, left, bottom, right])

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, self._xh, self._last = self._convolve(x, None if self.bias is None else
                                                  self.bias.data)
        return y

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        zero = None if self.bias is None else np.zeros_like(self.bias.data)
        return self._convolve(tangent, zero)[0]

    def _convolve(self, x: np.ndarray, b: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, np.ndarray]]:
        """The convolution of x with W plus ``b`` (which the rows' column of ones meets);
        with the padded NHWC input and the last chunk of rows, which backward reuses."""
        xh = self._padded(x.transpose(0, 2, 3, 1))
        kh, kw = self.kernel_size
        (n, hp, wp, _), (sh, sw) = xh.shape, self.stride
        ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        w = self._weight_rows()
        if b is not None:
            w = np.concatenate([w, b[:, None]], axis=1)
        y = np.empty((n * ho * wo, self.out_channels), x.dtype)
        for start, stop, rows in self._im2col(xh):
            np.matmul(rows, w.T, out=y[start * ho * wo:stop * ho * wo])
        return y.reshape(n, ho, wo, self.out_channels).transpose(0, 3, 1, 2), xh, (start, rows)

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        xh = self._cached("_xh")
        g = grad.transpose(0, 2, 3, 1)
        n, ho, wo, _ = g.shape
        g2 = g.reshape(-1, self.out_channels)
        (kh, kw), c = self.kernel_size, self.in_channels
        w, width = self._weight_rows(), kh * kw * c
        dxh = np.zeros(xh.shape, g2.dtype) if self.input_grad else None
        if dxh is not None:
            buf = np.empty((min(n, self._images_per_chunk(ho, wo)) * ho * wo, width), g2.dtype)
        dw = None
        for start, stop, rows in self._im2col(xh, reuse=self._last):
            gc = g2[start * ho * wo:stop * ho * wo]
            if self._trainable:  # dL/dθ only for a layer fit may change
                # Gᵀ·rows (and, from the column of ones, Σ G for the bias), computed as
                # (rowsᵀ·G)ᵀ, which OpenBLAS runs 10-30% faster for these shapes
                part = (rows.T @ gc).T
                dw = part if dw is None else np.add(dw, part, out=dw)
            if dxh is not None:
                drows = np.matmul(gc, w, out=buf[:len(rows)])
                add_windows(dxh[start:stop], drows.reshape(-1, ho, wo, kh, kw, c),
                             self.stride)
        if dw is not None:
            self.weight.grad += dw[:, :width].reshape(self.out_channels, kh, kw, c
                                                      ).transpose(0, 3, 1, 2)
            if self.bias is not None:
                self.bias.grad += dw[:, width]
        if dxh is None:
            return None
        (top, bottom, left, right), (hp, wp) = self._pads, xh.shape[1:3]
        return dxh[:, top:hp - bottom, left:wp - right].transpose(0, 3, 1, 2)

    def _im2col(self, xh: np.ndarray, reuse: tuple[int, np.ndarray] | None = None
                ) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, rows) for a few images at a time (about ``_CHUNK_BYTES``): the
        windows of images start:stop as rows ordered (kh, kw, C), and a column of ones when
        there is a bias, written into one buffer reused from chunk to chunk.

        Given ``reuse``, the (start, rows) of forward's last chunk, the chunks come in
        reverse order and that one is not built again (with a single chunk, none is)."""
        win = _windows(xh, self.kernel_size, self.stride)        # (N, Ho, Wo, C, kh, kw)
        n, ho, wo, c, kh, kw = win.shape
        width = kh * kw * c
        step = self._images_per_chunk(ho, wo)
        starts = range(0, n, step) if reuse is None else reversed(range(0, n, step))
        buf, narrow = None, self._narrow()
        for start in starts:
            stop = min(n, start + step)
            if reuse is not None and start == reuse[0]:
                yield start, stop, reuse[1]
                continue
            if buf is None:
                shape = (min(step, n) * ho * wo, width + (self.bias is not None))
                # Narrow rows are held column by column: each window offset's values, one
                # contiguous slab to copy (6x faster for 10-value rows than row by row).
                buf = np.empty(shape[::-1], xh.dtype).T if narrow else np.empty(shape, xh.dtype)
                buf[:, width:] = 1
            rows = buf[:(stop - start) * ho * wo]
            if narrow:
                rows.T[:width].reshape(kh, kw, c, -1, ho, wo)[...] = \
                    win[start:stop].transpose(4, 5, 3, 0, 1, 2)
            else:
                rows[:, :width].reshape(-1, ho, wo, kh, kw, c)[...] = \
                    win[start:stop].transpose(0, 1, 2, 4, 5, 3)
            yield start, stop, rows

    def _narrow(self) -> bool:
        """Whether a window's row (and its 1) is no wider than the output: see the class
        docstring."""
        kh, kw = self.kernel_size
        return kh * kw * self.in_channels + 1 <= self.out_channels

    def _images_per_chunk(self, ho: int, wo: int) -> int:
        if self._narrow():  # the whole batch at once
            return 2 ** 31
        kh, kw = self.kernel_size
        row_bytes = (kh * kw * self.in_channels + 1) * self.dtype.itemsize
        return max(1, _chunk_bytes() // (ho * wo * row_bytes))

    def _weight_rows(self) -> np.ndarray:
        """W as (O, kh·kw·C), matching the im2col rows."""
        return self.weight.data.transpose(0, 2, 3, 1).reshape(self.out_channels, -1)

    def _padded(self, xh: np.ndarray) -> np.ndarray:
        top, bottom, left, right = self._pads
        if not (top or bottom or left or right):
            return xh
        n, h, w, c = xh.shape
        out = np.zeros((n, h + top + bottom, w + left + right, c), xh.dtype)
        out[:, top:top + h, left:left + w] = xh
        return out

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else
                list(self.padding), "bias": self.bias is not None, "init": self.init,
                "dtype": self.dtype.name}
