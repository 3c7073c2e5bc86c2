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
    normal CDF. VJP: g ⊙ (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π).
    ``approximate="tanh"``: y = ½x(1 + t) with t = tanh(u), u = √(2/π)(x + 0.044715x³).
    VJP: g ⊙ [½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²)].
    JVP (both forms): the same slope times v. ``forward`` computes y and the slope (``gelu``);
    below float64, in float64, rounded once, with erf a rational function within 0.54 ulp of
    float32 and ½(1 + t) as σ(2u), which does not cancel where t → −1.
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
        y, self._slope = gelu(x, self.approximate == "tanh")
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return np.multiply(grad, self._cached("_slope"), dtype=grad.dtype)


#: erf(z) ≈ z·P(z²)/Q(z²) for |z| ≤ 4 (beyond, erf rounds to ±1 in float32): relative
#: error below 6e-9, fitted to scipy's erf; evaluated in float64 and rounded to float32,
#: within 0.54 ulp of the true erf (tests/test_layers.py sweeps the float32 line).
ERF_P = (1.1283791678789563, 0.18533691457630014, 0.05428027067331551,
         0.003848084737826445, 0.0003773458790224658, 4.620789448503415e-06,
         -1.2878918015379881e-08)
ERF_Q = (1.0, 0.4975839503527622, 0.11396555219434325, 0.015451035598281537,
         0.001304230969589708, 6.250640506762738e-05)
_SQRT_HALF, _INV_SQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)


def erf_rational(z: np.ndarray) -> np.ndarray:
    """erf(z) = z·P(z²)/Q(z²) on float64 z clipped to [−4, 4], by Horner's rule."""
    z = np.clip(z, -4.0, 4.0)
    t = z * z
    p, q = np.full_like(t, ERF_P[-1]), np.full_like(t, ERF_Q[-1])
    for a in ERF_P[-2::-1]:
        p *= t
        p += a
    for b in ERF_Q[-2::-1]:
        q *= t
        q += b
    p /= q
    p *= z
    return p


@replaceable
def gelu(x: np.ndarray, tanh: bool) -> tuple[np.ndarray, np.ndarray]:
    """y = x·p and the slope dy/dx (``gelu_block``), a block of values at a time: the
    float64 temporaries of a block stay in cache (2.4 times as fast as whole arrays for
    the GPT's 393,216 values)."""
    y, slope = np.empty(x.shape, x.dtype), np.empty(x.shape, x.dtype)
    values, ys, slopes = x.reshape(-1), y.reshape(-1), slope.reshape(-1)
    for i in range(0, values.size, _BLOCK):
        ys[i:i + _BLOCK], slopes[i:i + _BLOCK] = gelu_block(values[i:i + _BLOCK], tanh)
    return y, slope


_BLOCK = 32768


def gelu_block(x: np.ndarray, tanh: bool) -> tuple[np.ndarray, np.ndarray]:
    """y = x·p and the slope dy/dx, in x's dtype, computed in float64 and rounded once:
    exact, p = Φ(x) = ½(1 + erf(x/√2)), slope = p + x·φ(x), φ(x) = e^(−x²/2)/√(2π);
    tanh form, p = ½(1 + tanh u) = 1/(1 + e^(−2u)), slope = p + 2x·p(1 − p)·u' (as
    ½x(1 − tanh²u) = 2x·p(1 − p)), u' = √(2/π)(1 + 3·0.044715x²). The exponential runs on
    its argument rounded to x's dtype, NumPy's vector exp, which the compiled twin calls too.
    Below float64, erf is ``erf_rational``; float64's is scipy's."""
    w = x.astype(np.float64)
    if tanh:
        exponent = -2 * (GELU._C * (w + 0.044715 * w * w * w))
    else:
        exponent = -0.5 * w * w
    with np.errstate(over="ignore"):  # e^(−2u) = inf: p = 0, as it should be
        e = np.exp(exponent.astype(x.dtype, copy=False)).astype(np.float64)
    if tanh:
        p = 1 / (1 + e)
        slope = 2 * w * p * (1 - p) * (GELU._C * (1 + 3 * 0.044715 * w * w))
    elif x.dtype == np.float64:
        from scipy.special import erf
        p = 0.5 * (1 + erf(w * _SQRT_HALF))
        slope = e * _INV_SQRT_2PI * w
    else:
        p = 0.5 * (1 + erf_rational(w * _SQRT_HALF))
        slope = e * _INV_SQRT_2PI * w
    slope += p
    return (w * p).astype(x.dtype, copy=False), slope.astype(x.dtype, copy=False)


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
