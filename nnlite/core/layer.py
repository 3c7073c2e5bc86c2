"""The layer contract: a Layer, and nnlite's random generator that layers draw from.

A layer is a function y = f(x). ``forward`` computes y and caches what
``backward`` needs; ``backward(g)`` receives g = dL/dy and returns the
vector-Jacobian product g · J with J = ∂y/∂x, adding dL/dθ into each
parameter's ``.grad`` as it goes. Chaining layers chains these products.
A layer with several inputs takes a list in ``forward`` and returns a list of
gradients, one per input, from ``backward``.

Read forwards, the same chain rule is forward mode: ``jvp(v)`` returns the
Jacobian-vector product J · v for a tangent v shaped like x, from the same
cached state, and touches no parameter or gradient. With several inputs it takes
a list of tangents and returns Σᵢ Jᵢ · vᵢ (a None tangent is zero): where paths
meet, their products add, as df/dt = ∂f/∂x · dx/dt + ∂f/∂y · dy/dt.
"""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from .parameter import Parameter, resolve_dtype

_generator = np.random.default_rng()


def set_seed(seed: int | None) -> None:
    """Seed nnlite's own generator (initialisation, and dropout outside ``fit``)."""
    global _generator
    _generator = np.random.default_rng(seed)


def default_rng() -> np.random.Generator:
    """The generator layers draw from when nothing more specific is set."""
    return _generator


def memory_order(x: np.ndarray) -> tuple[int, ...]:
    """The axes of ``x`` from the one that strides furthest in memory to the innermost:
    (0, 1, 2, 3) for C order, (0, 2, 3, 1) for an NCHW view of NHWC memory."""
    return tuple(sorted(range(x.ndim), key=lambda a: -abs(x.strides[a])))


class Tree:
    """What a layer holds, walked: its sub-layers, parameters and buffers in registration
    order under PyTorch's dotted names, each once however often it is shared; its modes
    (training or eval, trainable or frozen) set for every layer inside; its state dict.
    ``Layer`` inherits it; the walks read the registry ``Layer.__setattr__`` fills."""

    training: bool = True
    #: What ``trainable`` reads; a layer's ``backward`` adds dL/dθ only while it is True.
    _trainable: bool = True

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        """(name, layer) of each sub-layer; the layers of a list attribute as ``name.i``."""
        for name, child in self.__dict__.get("_children", {}).items():
            if isinstance(child, Layer):
                yield name, child
            else:
                for i, item in enumerate(child):
                    if isinstance(item, Layer):
                        yield f"{name}.{i}", item

    def _walk(self, prefix: str = "", every_path: bool = False) -> Iterator[tuple[str, Layer]]:
        """(dotted path, layer) of this layer and every layer inside it, depth first: each
        layer once, on the first path to it, so the walk is linear in the layers however
        often they are shared; with ``every_path``, under every path to it (a state dict
        names a shared layer's parameters under each)."""
        seen: set[int] = set()
        todo = [(prefix, self)]
        while todo:
            path, layer = todo.pop()
            if every_path or id(layer) not in seen:
                seen.add(id(layer))
                yield path, layer
                todo.extend(reversed([(f"{path}{name}.", child)
                                      for name, child in layer.named_children()]))

    def _slots(self, kind: str, prefix: str = "", every_path: bool = False
               ) -> Iterator[tuple[str, Layer, str]]:
        """(dotted name, owning layer, attribute) of every parameter (``kind="_params"``) or
        buffer (``"_buffers"``), own ones first."""
        return ((path + attr, layer, attr) for path, layer in self._walk(prefix, every_path)
                for attr in layer.__dict__.get(kind, {}))

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, own parameters first; each Parameter once unless
        ``remove_duplicate=False`` (then a shared or tied one under every name)."""
        seen: set[int] = set()
        for path, layer in self._walk(prefix, not remove_duplicate):
            for name, p in layer.__dict__.get("_params", {}).items():
                if not remove_duplicate or id(p) not in seen:
                    seen.add(id(p))
                    yield path + name, p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        return ((name, getattr(owner, attr)) for name, owner, attr in self._slots("_buffers",
                                                                                   prefix))

    def modules(self) -> Iterator[Layer]:
        """This layer and every layer inside it, depth first, each once."""
        return (layer for _, layer in self._walk())

    def call_state(self) -> list[dict[str, Any]]:
        """What this layer (and the layers inside it) cached in ``forward``: a shallow copy
        of their attributes. A container calling one layer at several places keeps each
        call's state and puts it back before that call's ``backward``."""
        return [dict(m.__dict__) for m in self.modules()]

    def restore_call_state(self, state: list[dict[str, Any]]) -> None:
        for m, saved in zip(self.modules(), state):
            m.__dict__.update(saved)

    def train(self, mode: bool = True) -> Layer:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Layer:
        return self.train(False)

    @contextmanager
    def evaluating(self) -> Iterator[Layer]:
        """Eval mode inside the block; afterwards every layer's own mode, as it was."""
        modes = [(m, m.training) for m in self.modules()]
        self.train(False)
        try:
            yield self
        finally:
            for m, mode in modes:
                m.training = mode

    @property
    def trainable(self) -> bool:
        """Whether ``fit`` may change this layer's parameters (Keras's name). Setting it sets
        it for every layer inside too: a frozen layer's parameters stay as they are
        (optimizers skip them), its ``backward`` computes no dL/dθ, and a frozen BatchNorm
        normalises with its running statistics and keeps them, as Keras's does."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{type(self).__name__}: trainable must be True or False, got "
                             f"{value!r}")
        for m in self.modules():
            m._set_own_trainable(bool(value))

    def _set_own_trainable(self, value: bool) -> None:
        """This layer's flag and its own parameters' ``requires_grad``, not those inside
        (``load`` restores each layer's own)."""
        self.__dict__["_trainable"] = value
        for p in self.__dict__.get("_params", {}).values():
            p.requires_grad = value

    def trainable_parameters(self) -> list[Parameter]:
        """The parameters of trainable layers: what an optimizer should hold."""
        return [p for p in self.parameters() if p.requires_grad]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as ``{name: array}``, with the names and layouts
        PyTorch gives the same architecture (see ``nnlite.core.state``)."""
        from .state import state_dict  # (loaded on first use)
        return state_dict(self)

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> Any:
        """Copy a state dict (PyTorch's names and layouts) in; returns
        ``(missing_keys, unexpected_keys)`` as torch does."""
        from .state import load_state_dict
        return load_state_dict(self, state, strict)

    def astype(self, dtype: Any) -> Layer:
        """Convert every parameter and floating buffer to ``dtype``, in place."""
        dtype = resolve_dtype(dtype)
        for m in self.modules():
            if "dtype" in m.__dict__:
                m.dtype = dtype
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        for _, owner, attr in self._slots("_buffers"):
            value = getattr(owner, attr)
            if np.issubdtype(value.dtype, np.floating):
                setattr(owner, attr, value.astype(dtype))
        return self


class Layer(Tree):
    """Base class of every layer; subclasses write ``forward`` and ``backward``.

    Parameters, buffers and sub-layers assigned as attributes register
    themselves in assignment order, as in PyTorch.
    """

    #: When False, ``backward`` may skip dL/dx and return None. ``fit`` sets it on the
    #: model (nobody uses dL/dx of the data), and a container passes it on to the layers
    #: whose input gradient nobody uses (the first one with parameters, unless it is also
    #: used elsewhere), where ``skips_input_grad`` says the layer honours it.
    input_grad: bool = True
    #: Whether ``backward`` looks at ``input_grad`` (Linear, Conv2D and the containers).
    skips_input_grad: bool = False
    #: Whether the layer takes integer ids (Embedding): a model starting with it passes
    #: integer inputs through uncast.
    integer_input: bool = False
    #: The generator dropout-like layers draw from; ``fit`` sets it per epoch.
    rng: np.random.Generator | None = None
    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Parameter, Layer, list, tuple)) or name in self.__dict__.get(
                "_params", ()) or name in self.__dict__.get("_children", ()):
            self._register(name, value)  # forward's plain arrays skip the registry
        object.__setattr__(self, name, value)

    def _register(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_params" not in d:
            d["_params"], d["_children"], d["_buffers"] = {}, {}, {}
        params, children = d["_params"], d["_children"]
        params.pop(name, None)
        children.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Layer) or (isinstance(value, (list, tuple)) and
                                          _layer_list(value)):
            children[name] = value  # a list or tuple stays live: later appends register

    def register_buffer(self, name: str, array: np.ndarray) -> None:
        """Keep a non-trainable array (running statistics) that saves with the model."""
        self.__dict__.setdefault("_buffers", {})[name] = None
        object.__setattr__(self, name, array)

    # -- the contract -----------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define forward(x)")

    def backward(self, grad: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must define backward(grad)")

    def jvp(self, tangent: Any) -> Any:
        """J · v for the input of the last ``forward``: forward mode (see the module's
        docstring). A user's layer writes its own (docs/custom-layers.md)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no jvp(tangent), the forward-mode product J·v; "
            f"docs/custom-layers.md shows how to write one (the Jacobian tools use reverse "
            f"mode without it)")

    def check_input(self, x: Any) -> None:
        """Raise a ValueError naming this layer and the shapes if ``forward`` cannot take
        ``x``. It runs once, at the door (calling a layer, building a model, the one-row
        probe of ``fit``, ``evaluate`` and ``predict``, ``load``), never per batch, so
        ``forward`` holds only the formula. The default accepts anything."""

    def __call__(self, x: Any) -> Any:
        """``forward(x)`` after ``check_input`` (a Sequential's checks its layers'); on
        symbolic values (``nnlite.Input``), a new node of a graph, whose output is symbolic
        too: a symbolic value knows how a layer is called on it (``call_layer``, see
        ``nnlite.models.symbolic``), so the contract knows no graphs."""
        for v in x if isinstance(x, (list, tuple)) else (x,):
            if hasattr(v, "call_layer"):
                return v.call_layer(self, x)
        self.check_input(x)
        return self.forward(x)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (for ``save``/``load``).

        By default each argument of ``__init__`` is read from the attribute
        of the same name, as scikit-learn does; override when that fails.
        Values are JSON values or layers (or lists of layers): ``save`` describes
        those in turn, a layer used twice once.
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

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Layer:
        """The layer ``get_config`` describes (layers inside it already rebuilt)."""
        return cls(**config)

    def extra_repr(self) -> str:
        try:
            config = self.get_config()
        except NotImplementedError:
            return ""
        return ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "dtype")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def _filled(self, shape: tuple[int, ...], dtype: np.dtype, value: float,
                like: np.ndarray | None = None) -> np.ndarray:
        """A read-only array of ``value``, kept between calls and remade when the shape,
        dtype or layout changes (the ones of a column sum, the zeros of ReLU's max).

        With ``like``, the array has that array's memory layout: element-wise work that
        mixes layouts (an NCHW view of NHWC memory against C-ordered zeros) runs several
        times slower than work that walks both in one order."""
        key, wanted = f"_filled_{value}", (shape, dtype, None if like is None else like.strides)
        array, made_for = self.__dict__.get(key, (None, None))
        if made_for != wanted:
            axes = tuple(range(len(shape))) if like is None else memory_order(like)
            # large zeros stay unwritten pages of the OS, which every read finds in cache
            array = np.zeros([shape[a] for a in axes], dtype).transpose(np.argsort(axes))
            if value:
                array[...] = value
            array.flags.writeable = False
            self.__dict__[key] = array, wanted
        return array

    def _cached(self, name: str) -> Any:
        """An attribute set by forward, with a clear error if forward has not run."""
        value = self.__dict__.get(name)
        if value is None:
            raise RuntimeError(f"{self!r}: backward called before forward (it needs a forward "
                               f"first: one backward per forward; so does jvp)")
        return value


def _layer_list(value: Any) -> bool:
    """Whether ``value`` (a list or tuple) holds layers, or is empty, to be filled."""
    kinds = {isinstance(v, Layer) for v in value}
    if kinds == {True, False}:
        raise TypeError("a list attribute of a layer holds layers and other values; keep the "
                        "layers in a list of their own, so that they register")
    return kinds != {False}


def shared_positions(layers: list[Layer]) -> set[int]:
    """The positions in ``layers`` whose layer (or a layer inside it) is also used at another
    position: a container must keep each call's state for these (see ``call_state``)."""
    owners: dict[int, set[int]] = {}
    for i, layer in enumerate(layers):
        for m in layer.modules():
            owners.setdefault(id(m), set()).add(i)
    return {i for used_at in owners.values() if len(used_at) > 1 for i in used_at}
