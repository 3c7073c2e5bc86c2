"""Sequential: a chain of layers.

Forward runs the layers in order; backward runs their vector-Jacobian
products in reverse, which is the chain rule: ∇ₓL = ∇_yL · J_L ⋯ J₂ J₁.
Training (fit/evaluate/predict) comes from ``nnlite.training``.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from .layer import Layer, backward_without_input_grad
from .training import Trainable


class Sequential(Trainable):
    """Layers applied in order; itself a Layer, so Sequentials nest.

    VJP: g · J = g · J_L ⋯ J₁, computed as each layer's backward in reverse. A layer
    placed at several positions shares its parameters between them (their gradients
    add up); each position keeps its own forward state.
    """

    #: The probe at load runs (and charges) a Sequential's layers one by one.
    chain = True

    def __init__(self, *layers: Layer):
        super().__init__()
        self.__dict__["layers"] = []  # registered one by one, as "0", "1", ...
        self._shared: set[int] = set()  # positions whose layers are used elsewhere too
        self._first_at: dict[int, int] = {}  # id of each layer inside -> its first position
        for layer in layers:
            self.append(layer)

    def append(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes Layers, got {type(layer).__name__}")
        i = len(self.layers)
        setattr(self, str(i), layer)
        self.layers.append(layer)
        for m in layer.modules():  # a layer met before: both positions keep call states
            first = self._first_at.setdefault(id(m), i)
            if first != i:
                self._shared.update((first, i))
        return self

    @property
    def input_dtypes(self) -> list[np.dtype | None]:
        """Integer ids for a Sequential that starts with an Embedding, else floats."""
        first = self.layers[0] if self.layers else None
        if isinstance(first, Trainable):
            return first.input_dtypes
        return [np.dtype(np.int64)] if first is not None and first.integer_input else [None]

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def get_config(self) -> dict[str, Any]:
        return {"layers": list(self.layers)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        return cls(*config["layers"])

    def forward(self, x: np.ndarray) -> np.ndarray:
        states = self._states = {}
        for i, layer in enumerate(self.layers):
            try:
                x = layer.forward(x)
            except ValueError as e:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {e}") from None
            if i in self._shared:
                states[i] = layer.call_state()
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        """dL/dx; with ``input_grad`` False, only the parameter gradients (returns None):
        the layers before the first one with parameters are not visited at all."""
        states = self._cached("_states")
        last = 0 if self.input_grad else self._first_trainable()
        for i in range(len(self.layers) - 1, last - 1, -1):
            layer = self.layers[i]
            if i in states:
                layer.restore_call_state(states[i])
            if i == last and not self.input_grad:
                backward_without_input_grad(layer, grad)
                return None
            grad = layer.backward(grad)
        return grad if self.input_grad else None

    def _first_trainable(self) -> int:
        """The position of the first layer with parameters (len(layers) if none has)."""
        key = len(self.layers)
        if self.__dict__.get("_first_key") != key:
            self._first = next((i for i, layer in enumerate(self.layers)
                                if layer.parameters()), key)
            self._first_key = key
        return self._first

    def _summary_rows(self, input_shape):
        """Output shapes need the input's shape without the batch axis; it is inferred from
        a first Linear layer when not given."""
        if input_shape is None:
            first = next((m for m in self.modules() if hasattr(m, "in_features")), None)
            input_shape = (first.in_features,) if first is not None else None
        shapes = ["?"] * len(self.layers)
        if input_shape is not None:
            x = np.zeros((1, *input_shape), self.dtype)
            was_training = self.training
            self.eval()
            try:
                for i, layer in enumerate(self.layers):
                    x = layer.forward(x)
                    shapes[i] = str((None, *x.shape[1:]))
            finally:
                self.train(was_training)
        return [(f"{i} {type(layer).__name__}", shape, sum(p.size for p in layer.parameters()),
                 "") for i, (layer, shape) in enumerate(zip(self.layers, shapes))]
