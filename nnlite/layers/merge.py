"""Merge layers: several inputs, one output (Add, Multiply, Concatenate).

A layer with several inputs takes a list in ``forward`` and returns a list of
gradients from ``backward``, one per input: y = f(x₁, …, xₖ) has one Jacobian
Jᵢ = ∂y/∂xᵢ per input, and the VJP for input i is g · Jᵢ. The JVP takes one tangent
per input and sums the paths, Σᵢ Jᵢ · vᵢ; a None tangent is zero and adds nothing.
"""
from __future__ import annotations

import math
from functools import reduce
from typing import Any, Sequence

import numpy as np

from ..core.door import MAX_DIMS, check_number
from ..core.layer import Layer


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
    """y = x₁ + x₂ + ⋯ + xₖ (same shapes).  Jᵢ = I, so the VJP hands g to every input, and
    the JVP is Σᵢ vᵢ."""

    def lipschitz_merge(self, bounds: list[float]) -> float:
        """A bound for x₁ + ⋯ + xₖ from bounds of each input: their sum."""
        return sum(bounds)

    def to_onnx(self, g: Any, *inputs: str) -> str:
        return g.op("Sum", *inputs)

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
        self._k, self._like = len(xs), xs[0]
        return y

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        return [grad] * self._cached("_k")

    def jvp(self, tangents: Sequence[np.ndarray | None]) -> np.ndarray:
        given = [v for v in tangents if v is not None]
        if not given:
            return np.zeros_like(self._cached("_like"))
        return given[0] + sum(given[1:]) if len(given) > 1 else given[0].copy()


class Multiply(_Merge):
    """y = x₁ ⊙ x₂ ⊙ ⋯ ⊙ xₖ (same shapes).  Jᵢ = diag(Πⱼ≠ᵢ xⱼ), so the VJP for input i
    is g ⊙ Πⱼ≠ᵢ xⱼ (computed from prefix and suffix products, no division), and the JVP
    Σᵢ vᵢ ⊙ Πⱼ≠ᵢ xⱼ: the same products, summed."""

    def to_onnx(self, g: Any, *inputs: str) -> str:
        y = inputs[0]
        for x in inputs[1:]:
            y = g.op("Mul", y, x)
        return y

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

    def jvp(self, tangents: Sequence[np.ndarray | None]) -> np.ndarray:
        xs = list(self._cached("_xs"))
        total = np.zeros_like(xs[0])
        for i, v in enumerate(tangents):
            if v is not None:  # vᵢ ⊙ Πⱼ≠ᵢ xⱼ
                total = total + reduce(np.multiply, xs[:i] + xs[i + 1:], v)
        return total


class Concatenate(_Merge):
    """y = [x₁, x₂, …, xₖ] joined along ``axis`` (other axes equal).  Each Jᵢ selects xᵢ's
    block of y, so the VJP for input i is g's slice along ``axis`` where xᵢ sits, and the
    JVP joins the tangents as the forward joins the inputs (zeros for a None)."""

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = check_number("Concatenate", "axis", axis, integer=True, low=-MAX_DIMS,
                                 high=MAX_DIMS - 1)

    def _check_shapes(self, xs: Sequence[np.ndarray]) -> None:
        shapes = [np.shape(x) for x in xs]
        if not -len(shapes[0]) <= self.axis < len(shapes[0]):
            raise ValueError(f"{self!r}: axis {self.axis} is not an axis of inputs of shape "
                             f"{shapes[0]}")
        axis = self.axis % len(shapes[0])
        others = [s[:axis] + s[axis + 1:] for s in shapes]
        if any(len(s) != len(shapes[0]) for s in shapes) or any(o != others[0] for o in others):
            raise ValueError(f"{self!r} needs inputs whose shapes agree except along axis "
                             f"{self.axis}, got {', '.join(str(s) for s in shapes)}")

    def lipschitz_merge(self, bounds: list[float]) -> float:
        """A bound for [x₁, …, xₖ] from bounds of each input: √(Σ bᵢ²)."""
        return math.sqrt(sum(b * b for b in bounds))

    def to_onnx(self, g: Any, *inputs: str) -> str:
        return g.op("Concat", *inputs, axis=self.axis)

    def forward(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        self._shapes = [x.shape for x in xs]
        return np.concatenate(xs, axis=self.axis)

    def backward(self, grad: np.ndarray) -> list[np.ndarray]:
        ends = np.cumsum([s[self.axis] for s in self._cached("_shapes")])[:-1]
        return np.split(grad, ends, axis=self.axis)

    def jvp(self, tangents: Sequence[np.ndarray | None]) -> np.ndarray:
        dtype = next((v.dtype for v in tangents if v is not None), None)
        return np.concatenate([np.zeros(s, dtype) if v is None else v
                               for v, s in zip(tangents, self._cached("_shapes"))],
                              axis=self.axis)
