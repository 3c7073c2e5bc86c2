"""The layer contract: a Parameter, a Layer, and nnlite's random generator.

A layer is a function y = f(x). ``forward`` computes y and caches what
``backward`` needs; ``backward(g)`` receives g = dL/dy and returns the
vector-Jacobian product g · J with J = ∂y/∂x, adding dL/dθ into each
parameter's ``.grad`` as it goes. Chaining layers chains these products.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import numpy as np

_generator = np.random.default_rng()

#: Every Layer subclass by class name, so ``load`` can rebuild saved models
#: without importing (or executing) anything named in a file.
LAYER_CLASSES: dict[str, type] = {}


def set_seed(seed: int | None) -> None:
    """Seed nnlite's own generator (initialisation, and dropout outside ``fit``)."""
    global _generator
    _generator = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    """The generator layers draw from when nothing more specific is set."""
    return _generator


class Parameter:
    """A trainable array: ``.data`` and its gradient ``.grad`` (same shape and dtype).

    ``backward`` adds into ``.grad``; optimizers and ``zero_grad`` reset it. The reset
    is lazy: the zeros are written when ``.grad`` is next read, or not at all when
    ``add_matmul`` can write its product straight into the gradient.
    """

    def __init__(self, data: Any):
        self.data = np.asarray(data)
        if not np.issubdtype(self.data.dtype, np.floating):
            self.data = self.data.astype(np.float32)
        self._grad = np.zeros_like(self.data)
        self._zero_pending = False

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


class Layer:
    """Base class of every layer; subclasses write ``forward`` and ``backward``.

    Parameters, buffers and sub-layers assigned as attributes register
    themselves in assignment order, as in PyTorch.
    """

    training: bool = True
    #: When False, ``backward`` may return None instead of computing dL/dx.
    #: The training loop sets it on a model's first layer, whose input
    #: gradient nobody uses.
    input_grad: bool = True
    #: The generator dropout-like layers draw from; ``fit`` sets it per epoch.
    rng: np.random.Generator | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        LAYER_CLASSES[cls.__name__] = cls

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if isinstance(value, (Parameter, Layer)):
            d.setdefault("_params", {})
            d.setdefault("_children", {})
            d.setdefault("_buffers", {})
            (d["_params"] if isinstance(value, Parameter) else d["_children"])[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep a non-trainable array (running statistics) that saves with the model."""
        self.__dict__.setdefault("_buffers", {})[name] = None
        object.__setattr__(self, name, array)

    # -- the contract -----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define forward(x)")

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define backward(grad)")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    # -- structure ----------------------------------------------------------------
    def children(self) -> list[Layer]:
        return list(self.__dict__.get("_children", {}).values())

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, own parameters first, each once."""
        seen: set[int] = set()
        for name, p in self._named("_params", prefix):
            if id(p) not in seen:
                seen.add(id(p))
                yield name, p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, owner, attr in self._buffer_slots(prefix):
            yield name, getattr(owner, attr)

    def _buffer_slots(self, prefix: str = "") -> Iterator[tuple[str, Layer, str]]:
        for attr in self.__dict__.get("_buffers", {}):
            yield prefix + attr, self, attr
        for cname, child in self.__dict__.get("_children", {}).items():
            yield from child._buffer_slots(f"{prefix}{cname}.")

    def _named(self, kind: str, prefix: str) -> Iterator[tuple[str, Any]]:
        for name, value in self.__dict__.get(kind, {}).items():
            yield prefix + name, value
        for cname, child in self.__dict__.get("_children", {}).items():
            yield from child._named(kind, f"{prefix}{cname}.")

    def modules(self) -> Iterator[Layer]:
        """This layer and every layer inside it, depth first."""
        yield self
        for child in self.children():
            yield from child.modules()

    # -- modes and state ----------------------------------------------------------
    def train(self, mode: bool = True) -> Layer:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def astype(self, dtype: Any) -> Layer:
        """Convert every parameter and floating buffer to ``dtype``, in place."""
        dtype = np.dtype(dtype)
        for m in self.modules():
            if "dtype" in m.__dict__:
                m.dtype = dtype
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        for _, owner, attr in self._buffer_slots():
            value = getattr(owner, attr)
            if np.issubdtype(value.dtype, np.floating):
                setattr(owner, attr, value.astype(dtype))
        return self

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (for ``save``/``load``).

        By default each argument of ``__init__`` is read from the attribute
        of the same name, as scikit-learn does; override when that fails.
        """
        config = {}
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if not hasattr(self, name):
                raise NotImplementedError(
                    f"{type(self).__name__}: cannot save argument {name!r}; store it as "
                    f"self.{name} or define get_config()")
            value = getattr(self, name)
            config[name] = value.name if isinstance(value, np.dtype) else value
        return config

    def extra_repr(self) -> str:
        try:
            config = self.get_config()
        except NotImplementedError:
            return ""
        return ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "dtype")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _filled(self, shape: tuple[int, ...], dtype: np.dtype, value: float) -> np.ndarray:
        """A read-only array of ``value``, kept between calls and remade when the shape
        or dtype changes (the ones of a column sum, the zeros of ReLU's max)."""
        key = f"_filled_{value}"
        array = self.__dict__.get(key)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = np.zeros(shape, dtype)  # large zeros stay unwritten pages of the OS
            if value:
                array[...] = value
            array.flags.writeable = False
            self.__dict__[key] = array
        return array

    def _cached(self, name: str) -> Any:
        """An attribute set by forward, with a clear error if forward has not run."""
        value = self.__dict__.get(name)
        if value is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return value
