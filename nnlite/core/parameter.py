"""A Parameter, a trainable array, and the floating dtype new parameters get by default.

Parameters live in layers (``nnlite.core.layer``) and are what optimizers update
(``nnlite.optim``); their ``.grad`` is where a layer's ``backward`` adds dL/dθ.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np

from .door import quote

_default_dtype = np.dtype(np.float32)


def set_default_dtype(dtype: Any) -> None:
    """Set the floating dtype that Parameter and the built-in layers use unless given
    ``dtype=`` (float32 to begin with), as ``torch.set_default_dtype``."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"set_default_dtype: the default must be a floating dtype, got {dtype}")
    _default_dtype = dtype


def get_default_dtype() -> np.dtype:
    """The floating dtype new parameters get unless told otherwise."""
    return _default_dtype


def resolve_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a floating NumPy dtype, the default floating dtype when it is None."""
    if dtype is None:
        return _default_dtype
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved is None or not np.issubdtype(resolved, np.floating):
        raise ValueError(f"parameters need a floating dtype such as 'float32', got {quote(dtype)}")
    return resolved.newbyteorder("=")  # ">f4" is float32: arithmetic and files are native


class Parameter:
    """A trainable array: ``.data`` and its gradient ``.grad`` (same shape and dtype).

    ``data`` is converted to ``dtype``, by default nnlite's default dtype (float32), so
    ``Parameter(np.ones(3))`` trains beside the built-in layers.

    ``backward`` adds into ``.grad``; optimizers and ``zero_grad`` reset it. The reset
    is lazy: the zeros are written when ``.grad`` is next read, or not at all when
    ``add_matmul`` can write its product straight into the gradient.
    """

    #: Bumped whenever any parameter's ``requires_grad`` changes, so an optimizer sees with
    #: one comparison per step that it must regroup (``Optimizer.step``).
    freeze_count = 0
    _requires_grad = True

    def __init__(self, data: Any, dtype: Any = None):
        self.data = np.asarray(data, dtype=resolve_dtype(dtype))
        self._grad = np.zeros_like(self.data)
        self._zero_pending = False

    @property
    def requires_grad(self) -> bool:
        """Whether optimizers update it (PyTorch's name); ``layer.trainable`` sets it."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value is not self._requires_grad:
            self._requires_grad = bool(value)
            Parameter.freeze_count += 1

    @property
    def grad(self) -> np.ndarray:
        self.write_pending_zeros()
        return self._grad

    @grad.setter
    def grad(self, value: np.ndarray) -> None:
        self._grad = value
        self._zero_pending = False

    def zero_grad(self) -> None:
        self._zero_pending = True

    def write_pending_zeros(self) -> None:
        """Carry out a lazy ``zero_grad`` now (before reading the storage directly)."""
        if self._zero_pending:
            self._grad[...] = 0
            self._zero_pending = False

    def add_matmul(self, a: np.ndarray, b: np.ndarray) -> None:
        """grad += a @ b, computed into the gradient itself when it was just zeroed."""
        if self._zero_pending:
            np.matmul(a, b, out=self._grad)
            self._zero_pending = False
        else:
            self._grad += a @ b

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


@contextmanager
def grads_kept(params: Iterable[Parameter]) -> Iterator[None]:
    """Every gradient of ``params`` as it was, on leaving the block: the checking tools
    run ``backward`` for its input gradient only."""
    saved = [(p, p.grad.copy()) for p in params]
    try:
        yield
    finally:
        for p, g in saved:
            p.grad[...] = g
