"""Symbolic values: Keras's functional API, the graph a ``Model`` is built from.

``Input(shape)`` makes a symbolic value; calling a layer on symbolic values adds a
node to a graph (``connect``) and returns its symbolic output. ``nnlite.models.graph.Model``
turns such a graph into a layer.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..core.door import charge, probe
from ..core.layer import Layer
from ..core.parameter import get_default_dtype


class Node:
    """One call of a layer in a graph: which values went in, which came out."""

    def __init__(self, layer: Layer | None, inputs: list[Symbol], multi_in: bool):
        self.layer, self.inputs, self.multi_in = layer, inputs, multi_in
        self.outputs: list[Symbol] = []
        self.multi_out = False


class Symbol:
    """A symbolic value: the output of ``Input`` or of a layer called on symbolic values.

    ``shape`` leaves out the batch axis; ``dtype`` is None for floating values (the
    model's dtype) or the integer dtype of token ids.
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | None, node: Node):
        self.shape, self.dtype, self.node = tuple(shape), dtype, node

    def call_layer(self, layer: Layer, x: Symbol | Sequence[Symbol]) -> Any:
        """What ``layer(x)`` means on symbolic values: a new node (``connect``)."""
        return connect(layer, x)

    def __repr__(self) -> str:
        source = "Input" if self.node.layer is None else type(self.node.layer).__name__
        return f"<Symbol shape={(None, *self.shape)} from {source}>"


def Input(shape: int | Sequence[int], dtype: Any = None) -> Symbol:
    """A symbolic input of ``shape`` (without the batch axis), floating unless ``dtype``
    names an integer type (token ids)."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"Input: shape must be positive whole numbers, got {shape}")
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in "iu":
            dtype = None  # floating inputs take the model's dtype
    node = Node(None, [], False)
    node.outputs = [Symbol(shape, dtype, node)]
    return node.outputs[0]


def connect(layer: Layer, x: Symbol | Sequence[Symbol]) -> Symbol | list[Symbol]:
    """Call ``layer`` on symbolic values: a new node, and its symbolic output(s).

    The output shapes come from running the layer once, in eval mode, on one sample of
    zeros, so a call that cannot work fails here, when the model is built (while ``load``
    rebuilds a file, within its probe budget: see ``nnlite.core.door``).
    """
    multi_in = isinstance(x, (list, tuple))
    inputs = list(x) if multi_in else [x]
    if not all(isinstance(v, Symbol) for v in inputs):
        raise ValueError(f"{layer!r} was called on a mix of symbolic values and arrays; "
                         f"call it on nnlite.Input(...) values and what layers made of them")
    if layer.integer_input:  # an Input feeding an Embedding holds integer ids
        for v in inputs:
            if v.dtype is None and v.node.layer is None:
                v.dtype = np.dtype(np.int64)
    charge(sum(math.prod(v.shape) for v in inputs),
           f"a probe of shape {', '.join(str(v.shape) for v in inputs)}")
    probes = [np.zeros((1, *v.shape), v.dtype or get_default_dtype()) for v in inputs]
    try:
        with layer.evaluating():
            out = probe(layer, probes if multi_in else probes[0])
    except ValueError as e:
        shapes = ", ".join(str((None, *v.shape)) for v in inputs)
        raise ValueError(f"{layer!r} cannot be called on inputs of shape {shapes}: {e}") \
            from None
    node = Node(layer, inputs, multi_in)
    node.multi_out = isinstance(out, (list, tuple))
    for o in (out if node.multi_out else [out]):
        o = np.asarray(o)
        node.outputs.append(Symbol(o.shape[1:], o.dtype if o.dtype.kind in "iu" else None,
                                   node))
    return list(node.outputs) if node.multi_out else node.outputs[0]


def symbols_of(value: Any, what: str) -> list[Symbol]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"Model: {what} is empty")
    for i, v in enumerate(values):
        if not isinstance(v, Symbol):
            raise ValueError(f"Model: {what} must be symbolic values (nnlite.Input(...) and "
                             f"layers called on them), got {type(v).__name__} at {i}; to run a "
                             f"model on arrays, build it first and call model.predict(x)")
    return values


def topological(inputs: list[Symbol], outputs: list[Symbol]) -> list[Node]:
    """The nodes that lead from ``inputs`` to ``outputs``, each after those it reads."""
    allowed = {id(v.node) for v in inputs}
    order: list[Node] = []
    state: dict[int, int] = {}  # 1: being visited, 2: done
    for out in outputs:
        stack = [(out.node, False)]
        while stack:
            node, children_done = stack.pop()
            if children_done:
                state[id(node)] = 2
                order.append(node)
                continue
            if state.get(id(node)) == 2:
                continue
            if state.get(id(node)) == 1:
                raise ValueError(f"Model: the graph has a cycle through {node.layer!r}")
            if node.layer is None:
                if id(node) not in allowed:
                    raise ValueError(f"Model: an output depends on an Input of shape "
                                     f"{(None, *node.outputs[0].shape)} that is not among "
                                     f"the model's inputs")
                state[id(node)] = 2
                continue
            state[id(node)] = 1
            stack.append((node, True))
            for v in reversed(node.inputs):
                if state.get(id(v.node)) != 2:
                    stack.append((v.node, False))
    return order
