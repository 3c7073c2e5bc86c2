"""Sequential: a chain of layers.

Forward runs the layers in order; backward runs their vector-Jacobian
products in reverse, which is the chain rule: ∇ₓL = ∇_yL · J_L ⋯ J₂ J₁; jvp runs
their Jacobian-vector products in order: J · v = J_L ⋯ J₂ J₁ · v.
Training (fit/evaluate/predict) comes from ``nnlite.training``.
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np

from ..core.door import probe_rows, quote
from ..core.layer import Layer
from .container import Container


class Sequential(Container):
    """Layers applied in order; itself a Layer, so Sequentials nest.

    VJP: g · J = g · J_L ⋯ J₁, computed as each layer's backward in reverse. A layer
    placed at several positions shares its parameters between them (their gradients
    add up); each position keeps its own forward state.

    A layer whose ``commutes_with(previous)`` says so runs before the layer before it, to
    the same result: a MaxPool2D after a ReLU, whose windows tile, so the ReLU touches a
    quarter of the values. Only where neither layer is used at another position.
    """

    #: The probe at load runs (and charges) a Sequential's layers one by one.
    chain = True

    def __init__(self, *layers: Layer | Mapping[str, Layer]):
        """``Sequential(a, b, c)``, its layers named "0", "1", "2"; or, as
        ``torch.nn.Sequential`` takes them, ``Sequential(OrderedDict([("conv1", a), ...]))``,
        each layer named: ``model.conv1`` is it, and state dicts, files and ``summary``
        use the names (``model[0]`` is still the first layer)."""
        super().__init__()
        named = len(layers) == 1 and isinstance(layers[0], Mapping)
        pairs = list(layers[0].items()) if named else [(None, layer) for layer in layers]
        self.__dict__["layers"] = []  # registered one by one, as "0", "1", ... or named
        self.__dict__["names"] = []
        self._shared: set[int] = set()  # positions whose layers are used elsewhere too
        self._first_at: dict[int, int] = {}  # id of each layer inside -> its first position
        self._stop = 0  # backward runs the layers from the last down to this one
        self._order: list[int] = []  # positions in the order forward runs them
        self._swapped: set[int] = set()  # max-pools running before the ReLU before them
        for name, layer in pairs:
            self.append(layer, name)

    def append(self, layer: Layer, name: str | None = None) -> Sequential:
        """Add ``layer`` at the end, named ``name`` (its position by default)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes Layers, got {type(layer).__name__}")
        i = len(self.layers)
        name = str(i) if name is None else name
        if not isinstance(name, str) or not name or "." in name or name in self.names or \
                (hasattr(self, name) and not name.isdigit()):
            raise ValueError(f"Sequential: a layer's name must be a new string without a "
                             f"dot, not the name of an attribute; got {quote(name)}")
        self.__dict__.pop("_predicted", None)  # predict checks its inputs anew
        setattr(self, name, layer)
        self.names.append(name)
        self.layers.append(layer)
        self._order.append(i)
        for m in layer.modules():  # a layer met before: both positions keep call states
            first = self._first_at.setdefault(id(m), i)
            if first != i:
                self._shared.update((first, i))
                for pool in {first, first + 1} & self._swapped:  # run in order again
                    self._order[pool - 1:pool + 1] = [pool - 1, pool]
                    self._swapped.discard(pool)
        commutes = getattr(layer, "commutes_with", None)  # (MaxPool2D's, after a ReLU)
        if i and commutes is not None and commutes(self.layers[i - 1]) and \
                not {i - 1, i} & self._shared:
            self._order[i - 1:] = [i, i - 1]  # this layer first, to the same result
            self._swapped.add(i)
        return self

    @property
    def input_dtypes(self) -> list[np.dtype | None]:
        """Integer ids for a Sequential that starts with an Embedding, else floats."""
        first = self.layers[0] if self.layers else None
        if isinstance(first, Container):
            return first.input_dtypes
        return [np.dtype(np.int64)] if first is not None and first.integer_input else [None]

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"layers": list(self.layers)}
        if self.names != [str(i) for i in range(len(self.layers))]:
            config["names"] = list(self.names)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        names = config.get("names")
        if names is None:
            return cls(*config["layers"])
        if not isinstance(names, list) or len(names) != len(config["layers"]):
            raise ValueError("Sequential: its names must be a list of one name per layer")
        return cls(dict(zip(names, config["layers"])))

    def check_input(self, x: np.ndarray) -> None:
        """Each layer's ``check_input`` on the way of one row through the chain."""
        probe_rows(self, x)

    def forward(self, x: np.ndarray) -> np.ndarray:
        states = self._states = {}
        for i in self._order:
            x = self.layers[i].forward(x)
            if i in self._shared:
                states[i] = self.layers[i].call_state()
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        """dL/dx = g · J_L ⋯ J₁: each layer's backward, last to first; with ``input_grad``
        False, down to the first layer with trainable parameters only (whose dL/dx,
        skipped, is None)."""
        states = self._cached("_states")
        for i in reversed(self._order[self._stop:]):  # (no swapped pair straddles _stop)
            if i in states:
                self.layers[i].restore_call_state(states[i])
            grad = self.layers[i].backward(grad)
        return grad

    def jvp(self, tangent: Any) -> Any:
        """J · v = J_L ⋯ J₁ · v: each layer's jvp, in the order forward ran them."""
        states = self._cached("_states")
        for i in self._order:
            if i in states:
                self.layers[i].restore_call_state(states[i])
            tangent = self.layers[i].jvp(tangent)
        return tangent

    def to_onnx(self, g: Any, x: str) -> str:
        """Each layer's ONNX nodes in turn (``nnlite.files.onnx``)."""
        for layer in self.layers:
            x = g.layer(layer, [x])
        return x

    def _pass_input_grad(self, needed: bool) -> None:
        """Without dL/dx, backward stops at the first layer with trainable parameters (a
        frozen stem is not visited at all), which may skip its own dL/dx too, unless it
        also runs at another position."""
        first = next((i for i, layer in enumerate(self.layers)
                      if layer.trainable_parameters()), len(self.layers))
        self._stop = 0 if needed else first
        for i, layer in enumerate(self.layers):  # (the first may have moved: a layer unfrozen)
            if layer.skips_input_grad:
                layer.input_grad = needed or i != first or i in self._shared

    def _summary_rows(self, input_shape):
        """Output shapes need the input's shape without the batch axis: ``input_shape``,
        else the one the model last ran on, else a first layer's that is a Linear (in a
        Sequential first in this one, perhaps); without any, "?"."""
        if input_shape is None and self.__dict__.get("input_shapes"):
            input_shape = tuple(self.__dict__["input_shapes"][0])
        if input_shape is None:
            first = self.layers[0] if self.layers else None
            while isinstance(first, Sequential) and first.layers:
                first = first.layers[0]
            input_shape = (first.in_features,) if hasattr(first, "in_features") else None
        shapes = ["?"] * len(self.layers)
        if input_shape is not None:
            x = np.zeros((1, *input_shape), self.dtype)
            with self.evaluating():
                for i, layer in enumerate(self.layers):
                    x = layer.forward(x)
                    shapes[i] = str((None, *x.shape[1:]))
        return [(f"{name} {type(layer).__name__}", shape, sum(p.size for p in layer.parameters()),
                 "") for name, layer, shape in zip(self.names, self.layers, shapes)]
