"""Element-wise activations and Softmax.

For an element-wise y = f(x) the Jacobian is diagonal, J = diag(f'(x)), so
the vector-Jacobian product is the element-wise product g · J = g ⊙ f'(x). A diagonal
J is symmetric, so the JVP is the same product: J · v = v ⊙ f'(x), and ``jvp`` is
``backward`` (these layers have no parameters). Softmax's J is symmetric too.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.door import MAX_DIMS, check_number, quote
from ..core.layer import Layer
from ..core.losses import sigmoid
from ..kernels import replaceable


class _Symmetric(Layer):
    """A layer whose Jacobian is symmetric and which has no parameters: J · v = vᵀ · J."""

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return self.backward(tangent)


class ReLU(_Symmetric):
    """y = max(x, 0).  VJP: g ⊙ [x > 0];  JVP: v ⊙ [x > 0]."""

    def lipschitz_bound(self) -> float:
        return 1.0  # the largest |slope|: its Lipschitz bound (nnlite.check)

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Relu", x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        # Against an array of zeros in x's layout NumPy's maximum runs several times
        # faster than against the scalar 0.
        return np.maximum(x, self._filled(x.shape, x.dtype, 0, like=x))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return relu_vjp(grad, self._cached("_x"))


@replaceable
def relu_vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """g ⊙ [x > 0]. (dtype= makes NumPy cast the mask inside a float loop, faster than
    bool · float.)"""
    return np.multiply(g, x > 0, dtype=g.dtype)


class LeakyReLU(_Symmetric):
    """y = x if x > 0 else a·x.  VJP: g ⊙ (1 if x > 0 else a);  JVP: the same with v."""

    def __init__(self, negative_slope: float = 0.01):
        super().__init__()
        self.negative_slope = check_number("LeakyReLU", "negative_slope", negative_slope)

    def lipschitz_bound(self) -> float:
        return max(1.0, abs(self.negative_slope))

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("LeakyRelu", x, alpha=self.negative_slope)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return np.where(self._positive, x, x * x.dtype.type(self.negative_slope))

    def backward(self, grad: np.ndarray) -> np.ndarray:
        positive = self._cached("_positive")
        return np.where(positive, grad, grad * grad.dtype.type(self.negative_slope))


class Sigmoid(_Symmetric):
    """y = 1 / (1 + e⁻ˣ), without overflow.  VJP: g ⊙ y(1 − y);  JVP: v ⊙ y(1 − y)."""

    def lipschitz_bound(self) -> float:
        return 0.25  # σ'(0)

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Sigmoid", x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = sigmoid(x)
        return self._y.copy()  # backward needs y intact, whatever the caller writes into it

    def backward(self, grad: np.ndarray) -> np.ndarray:
        y = self._cached("_y")
        return grad * y * (1 - y)


class Tanh(_Symmetric):
    """y = tanh(x).  VJP: g ⊙ (1 − y²);  JVP: v ⊙ (1 − y²)."""

    def lipschitz_bound(self) -> float:
        return 1.0  # the largest |slope|

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Tanh", x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = np.tanh(x)
        return self._y.copy()  # backward needs y intact, whatever the caller writes into it

    def backward(self, grad: np.ndarray) -> np.ndarray:
        y = self._cached("_y")
        return grad * (1 - y * y)


class GELU(_Symmetric):
    """GELU, as ``torch.nn.GELU(approximate=...)``.

    ``approximate="none"`` (the default): y = x·Φ(x) with Φ(x) = ½(1 + erf(x/√2)), the
    normal CDF. VJP: g ⊙ (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π). In float32, erf is
    Abramowitz and Stegun's 7.1.26 (error below 1.5e-7, float32's precision), a few
    whole-array operations, several times faster than scipy's; in float64 it is scipy's.
    ``approximate="tanh"``: y = ½x(1 + t) with t = tanh(u), u = √(2/π)(x + 0.044715x³).
    VJP: g ⊙ [½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)].
    JVP (both forms): the same slope times v.
    Exported to ONNX, a float64 exact GELU computes erf in float32 (onnxruntime has no
    float64 Erf): its outputs are within about 1e-6 of ``predict``'s.
    """

    _C = float(np.sqrt(2.0 / np.pi))

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {quote(approximate)}")
        self.approximate = approximate

    def lipschitz_bound(self) -> float:
        """The largest slope: Φ(x) + x·φ(x) at x = √2; the tanh form's maximum, found
        numerically, rounded up."""
        if self.approximate == "tanh":
            return 1.128994
        return 0.5 * (1 + math.erf(1)) + math.sqrt(2) * math.exp(-1) / math.sqrt(2 * math.pi)

    def to_onnx(self, g: Any, x: str) -> str:
        """½x(1 + erf(x/√2)), or ½x(1 + tanh(√(2/π)(x + 0.044715x³))), in opset 17."""
        if self.approximate == "none":
            inner = g.op("Mul", x, g.constant(1 / np.sqrt(2)))
            if g.dtype == np.float64:  # onnxruntime has no float64 Erf: erf in float32
                tensor = g.onnx.TensorProto  # between casts (within about 1e-6 of predict)
                inner = g.op("Cast", g.op("Erf", g.op("Cast", inner, to=tensor.FLOAT)),
                             to=tensor.DOUBLE)
            else:
                inner = g.op("Erf", inner)
        else:
            cube = g.op("Mul", g.op("Mul", x, x), x)
            inner = g.op("Tanh", g.op("Mul", g.op("Add", x, g.op("Mul", cube,
                                                                 g.constant(0.044715))),
                                      g.constant(self._C)))
        one_plus = g.op("Add", inner, g.constant(1.0))
        return g.op("Mul", g.op("Mul", x, one_plus), g.constant(0.5))

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        if self.approximate == "tanh":
            t = np.tanh(self._C * (x + 0.044715 * x ** 3))
            self._t = t
            return 0.5 * x * (1 + t)
        self._cdf, self._gauss = normal_cdf(x)
        return x * self._cdf

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x = self._cached("_x")
        if self.approximate == "tanh":
            t = self._t
            du = self._C * (1 + 3 * 0.044715 * x * x)
            return grad * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        slope = x * self._gauss  # d/dx[x·Φ(x)] = Φ(x) + x·φ(x), φ(x) = e^(−x²/2)/√(2π)
        slope *= slope.dtype.type(1 / np.sqrt(2 * np.pi))
        slope += self._cdf
        return np.multiply(grad, slope, out=slope)


def normal_cdf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Φ(x) = ½(1 + erf(x/√2)) and e^(−x²/2) (which Φ' needs). Below float64, erf from
    Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7): for z = |x|/√2,
    1 − erf(z) ≈ t(a₁ + t(a₂ + t(a₃ + t(a₄ + t·a₅))))·e^(−z²), t = 1/(1 + p·z);
    then Φ(x) = ½ + sign(x)·(½ − ½(1 − erf(z))). In place, a dozen passes."""
    if x.dtype == np.float64:
        from scipy.special import erf
        return 0.5 * (1 + erf(x * (1 / np.sqrt(2)))), np.exp(-0.5 * x * x)
    f = x.dtype.type
    z = np.abs(x)
    z *= f(1 / np.sqrt(2))
    t = z * f(0.3275911)
    t += f(1)
    np.reciprocal(t, out=t)
    e = np.multiply(z, z, out=z)
    np.negative(e, out=e)
    np.exp(e, out=e)                         # e^(−z²) = e^(−x²/2)
    cdf = t * f(1.061405429)
    for a in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        cdf += f(a)
        cdf *= t
    cdf *= e
    np.subtract(f(0.5), cdf * f(0.5), out=cdf)   # ½ − Φ(−|x|)
    np.copysign(cdf, x, out=cdf)
    cdf += f(0.5)
    return cdf, e


class Softmax(_Symmetric):
    """y = eˣ / Σ eˣ along ``axis`` (shifted by the max, so it never overflows).

    J = diag(y) − y yᵀ, so the VJP needs no matrix: g · J = y ⊙ (g − ⟨g, y⟩); J is
    symmetric, so the JVP is J · v = y ⊙ (v − ⟨v, y⟩).
    """

    def __init__(self, axis: int = -1):
        super().__init__()
        self.axis = check_number("Softmax", "axis", axis, integer=True, low=-MAX_DIMS,
                                 high=MAX_DIMS - 1)

    def check_input(self, x: np.ndarray) -> None:
        if not -np.ndim(x) <= self.axis < np.ndim(x):
            raise ValueError(f"{self!r}: axis {self.axis} is not an axis of an input of shape "
                             f"{np.shape(x)}")

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Softmax", x, axis=self.axis)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._y = softmax(x, self.axis)
        return self._y.copy()  # backward needs y intact, whatever the caller writes into it

    def backward(self, grad: np.ndarray) -> np.ndarray:
        y = self._cached("_y")
        return y * (grad - np.sum(grad * y, axis=self.axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis``, shifted by the maximum for stability."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e
