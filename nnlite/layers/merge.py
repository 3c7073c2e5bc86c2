"""Merge layers: several inputs, one output (Add, Multiply, Concatenate).

A layer with several inputs takes a list in ``forward`` and returns a list of
gradients from ``backward``, one per input: y = f(x₁, …, xₖ) has one Jacobian
Jᵢ = ∂y/∂xᵢ per input, and the VJP for input i is g · Jᵢ.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..layer import Layer
from ..validate import check_number


class _Merge(Layer):
    """Shared by the merge layers: the door's check of two or more inputs of one shape."""

    def check_input(self, xs: Sequence[np.ndarray]) -> None:
        if not isinstance(xs, (list, tuple)) or len(xs) < 2:
            raise ValueError(f"{self!r} merges two or more inputs: call it on a list, "
                             f"e.g. {type(self).__name__}()([a, b]); got "
                             f"{'one input' if not isinstance(xs, (list, tuple)) else len(xs)}")
        self._check_shapes(xs)

    def _check_shapes(self, xs: Sequence[np.ndarray]) -> None:
        if any(np.shape(x) != np.shape(xs[0]) for x in xs):
            raise ValueError(f"{self!r} needs inputs of one shape, got "
                             f"{', '.join(str(np.shape(x)) for x in xs)}")


class Add(_Merge):
    """y = x₁ + x₂ + ⋯ + xₖ (same shapes).  Jᵢ = I, so the VJP hands g to every input."""

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        self._k = len(xs)
        return y

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        return [grad] * self._cached("_k")


class Multiply(_Merge):
    """y = x₁ ⊙ x₂ ⊙ ⋯ ⊙ xₖ (same shapes).  Jᵢ = diag(Πⱼ≠ᵢ xⱼ), so the VJP for input i
    is g ⊙ Πⱼ≠ᵢ xⱼ (computed from prefix and suffix products, no division)."""

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        self._xs = xs
        y = xs[0] * xs[1]
        for x in xs[2:]:
            y *= x
        return y

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        xs = self._cached("_xs")
        if len(xs) == 2:
            return [grad * xs[1], grad * xs[0]]
        grads, prefix = [], grad
        suffix = [None] * len(xs)  # suffix[i] = x_{i+1} ⊙ ⋯ ⊙ x_k
        acc = None
        for i in range(len(xs) - 1, 0, -1):
            acc = xs[i] if acc is None else acc * xs[i]
            suffix[i - 1] = acc
        for i, x in enumerate(xs):
            grads.append(prefix * suffix[i] if suffix[i] is not None else prefix.copy())
            prefix = prefix * x
        return grads


class Concatenate(_Merge):
    """y = [x₁, x₂, …, xₖ] joined along ``axis`` (other axes equal).  Each Jᵢ selects xᵢ's
    block of y, so the VJP for input i is g's slice along ``axis`` where xᵢ sits."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = check_number("Concatenate", "axis", axis, integer=True)

    def _check_shapes(self, xs: Sequence[np.ndarray]) -> None:
        shapes = [np.shape(x) for x in xs]
        axis = self.axis % len(shapes[0]) if shapes[0] else 0
        others = [s[:axis] + s[axis + 1:] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(o != others[0] for o in others):
            raise ValueError(f"{self!r} needs inputs whose shapes agree except along axis "
                             f"{self.axis}, got {', '.join(str(s) for s in shapes)}")

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        axis = self.axis % xs[0].ndim
        self._ends = np.cumsum([x.shape[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        return np.split(grad, self._cached("_ends"), axis=self.axis)
