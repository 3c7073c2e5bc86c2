"""Dense layers: Linear and Flatten."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.door import check_flag, check_number, new_array, quote
from ..core.layer import Layer, default_rng
from ..core.parameter import Parameter, resolve_dtype


def initial(owner: str, init: str, shape: tuple[int, ...], fan_in: int, fan_out: int,
            bias: bool, dtype: np.dtype, rng: np.random.Generator | None
            ) -> tuple[Parameter, Parameter | None]:
    """A weight of ``shape`` and a bias (or None), drawn as ``init`` says (Linear's
    docstring): "he", "glorot" (zero biases) or "torch" (PyTorch's default)."""
    if init not in ("he", "glorot", "torch"):
        raise ValueError(f"{owner}: init must be 'he', 'glorot' or 'torch', got {quote(init)}")
    rng = rng or default_rng()
    limit = 1 / np.sqrt(fan_in) if init == "torch" else \
        np.sqrt(6.0 / (fan_in if init == "he" else fan_in + fan_out))
    w = new_array(shape, dtype)
    w[...] = rng.uniform(-limit, limit, shape)
    b = new_array((shape[0],), dtype) if bias else None
    if b is not None and init == "torch":
        b[...] = rng.uniform(-limit, limit, b.shape)
    return Parameter(w, dtype), None if b is None else Parameter(b, dtype)


class Linear(Layer):
    """y = x @ Wᵀ + b, with W of shape (out_features, in_features), as ``torch.nn.Linear``.

    VJP: dL/dx = g @ W;  dL/dW += gᵀ @ x;  dL/db += Σₙ gₙ
    (the Jacobian ∂y/∂x is W for every row, so g · J = g @ W).  JVP: J · v = v @ Wᵀ.

    ``init="he"`` draws W from U(±√(6/fan_in)), right for ReLU networks;
    ``init="glorot"`` from U(±√(6/(fan_in+fan_out))), for tanh and sigmoid; both start the
    biases at zero. ``init="torch"`` is PyTorch's default: W and b from U(±1/√fan_in)
    (kaiming-uniform with a = √5). Draws come from ``rng``, else nnlite's generator.
    Parameters are of ``dtype``, by default nnlite's default dtype (float32).
    """

    skips_input_grad = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 init: str = "he", dtype: Any = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.in_features = check_number("Linear", "in_features", in_features, integer=True,
                                        low=1)
        self.out_features = check_number("Linear", "out_features", out_features, integer=True,
                                         low=1)
        self.init, self.dtype = init, resolve_dtype(dtype)
        self.weight, self.bias = initial("Linear", init, (self.out_features, self.in_features),
                                         self.in_features, self.out_features,
                                         check_flag("Linear", "bias", bias), self.dtype, rng)
        self._x = None

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self!r} expects input of shape (N, {self.in_features}), "
                             f"got {x.shape}")

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call (``nnlite.core.door``): the input and
        two outputs' worth of values."""
        size = math.prod(shapes[0])
        return size + 2 * size // max(shapes[0][-1], 1) * self.out_features

    def lipschitz_bound(self) -> float:
        """‖W‖₂ = σ_max(W): how far y moves per unit x moves (``nnlite.check``)."""
        return float(np.linalg.norm(self.weight.data.astype(np.float64), 2))

    def to_onnx(self, g: Any, x: str) -> str:
        """x Wᵀ + b as ONNX's MatMul and Add."""
        y = g.op("MatMul", x, g.constant(self.weight.data.T))
        return g.op("Add", y, g.constant(self.bias.data)) if self.bias is not None else y

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        x = self._cached("_x")
        x2, g2 = (x, grad) if x.ndim == 2 else (x.reshape(-1, self.in_features),
                                                grad.reshape(-1, self.out_features))
        if self._trainable:  # dL/dθ only for a layer fit may change
            self.weight.add_matmul(g2.T, x2)
            if self.bias is not None:  # the column sums of g, as 1ᵀg
                self.bias.add_matmul(self._filled((len(g2),), g2.dtype, 1), g2)
        return grad @ self.weight.data if self.input_grad else None

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return tangent @ self.weight.data.T

    def get_config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features,
                "bias": self.bias is not None, "init": self.init, "dtype": self.dtype.name}


class Flatten(Layer):
    """y = x.reshape(N, -1): keeps the batch axis, flattens the rest.

    VJP: dL/dx = g.reshape(x.shape) (J is the identity, re-indexed).  JVP: v.reshape(N, -1).
    """

    def lipschitz_bound(self) -> float:
        return 1.0  # it moves nothing further than it moved

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Flatten", x, axis=1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self._cached("_shape"))

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return tangent.reshape(tangent.shape[0], -1)


class Reshape(Layer):
    """y = x.reshape(N, *shape): each sample to ``shape`` (one sample's shape, ``-1`` at
    most once, for the size left), as Keras's ``Reshape`` and torch's ``Unflatten``.

    VJP: dL/dx = g.reshape(x.shape) (J is the identity, re-indexed).  JVP: v reshaped as x.
    """

    def __init__(self, shape: tuple[int, ...] | list[int]):
        super().__init__()
        if not isinstance(shape, (list, tuple)) or not shape:
            raise ValueError(f"Reshape: shape must be one sample's shape, such as (1, 28, 28), "
                             f"got {quote(shape)}")
        dims = [check_number("Reshape", "shape", d, integer=True, low=-1) for d in shape]
        if 0 in dims or dims.count(-1) > 1:
            raise ValueError(f"Reshape: shape's sizes must be positive, with -1 at most once, "
                             f"got {quote(shape)}")
        self.shape = tuple(dims)

    def check_input(self, x: np.ndarray) -> None:
        size, known = math.prod(np.shape(x)[1:]), math.prod(d for d in self.shape if d != -1)
        if np.ndim(x) < 1 or (size != known if -1 not in self.shape else size % known):
            raise ValueError(f"{self!r} cannot reshape samples of shape {np.shape(x)[1:]} "
                             f"({size} values) to {self.shape}")

    def lipschitz_bound(self) -> float:
        return 1.0  # it moves nothing further than it moved

    def to_onnx(self, g: Any, x: str) -> str:
        return g.op("Reshape", x, g.constant([0, *self.shape], np.int64))  # 0: N, as it is

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad.reshape(self._cached("_shape"))

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return tangent.reshape(tangent.shape[0], *self.shape)

    def get_config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}
