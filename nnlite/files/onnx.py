"""ONNX export: a trained model as a file onnxruntime (and other tools) run.

Each layer class has an export rule, a function ``rule(layer, graph, *inputs)`` that
adds the layer's inference computation to an ONNX graph and returns the name of its
output (a list of names for several). The rules for nnlite's layers are below; a user
registers one for their own layer with ``@export_rule(MyLayer)``. The ``onnx`` package
(the ``onnx`` extra) is needed only here, and imported only when exporting.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from ..core.door import probe_rows
from ..core.layer import Layer
from .archive import atomic_write

OPSET = 17
_RULES: dict[type, Callable[..., Any]] = {}


def export_rule(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``rule(layer, graph, *input_names) -> output name(s)`` as how instances of
    ``cls`` (exactly that class) export to ONNX; a layer can instead say it itself, by a
    method ``to_onnx(graph, *input_names)``."""
    def register(rule: Callable[..., Any]) -> Callable[..., Any]:
        _RULES[cls] = rule
        return rule
    return register


class OnnxGraph:
    """The ONNX graph being written: ``op`` adds a node, ``constant`` an initializer."""

    def __init__(self, onnx: Any, dtype: np.dtype):
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def constant(self, array: Any, dtype: Any = None) -> str:
        """An initializer holding ``array`` (in the model's dtype unless told otherwise)."""
        name = self.fresh("const")
        value = np.asarray(array, dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        """Add one node of ``op_type`` reading ``inputs``; its output's name."""
        out = self.fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out],
                                                     **attributes))
        return out

    def layer(self, layer: Layer, inputs: Sequence[str]) -> str | list[str]:
        """Export ``layer``: by a rule registered for its class, else by its own
        ``to_onnx(graph, *inputs)`` method (every built-in layer's, but MultiHeadAttention's,
        LSTM's and GRU's)."""
        rule = _RULES.get(type(layer))
        if rule is not None:
            return rule(layer, self, *inputs)
        if hasattr(layer, "to_onnx"):
            return layer.to_onnx(self, *inputs)
        raise ValueError(f"{layer!r} has no ONNX export rule: give it a to_onnx method or "
                         f"register one with @nnlite.onnx.export_rule({type(layer).__name__}) "
                         f"(see docs/custom-layers.md, 'Export to ONNX')")


def export_onnx(model: Layer, path: str | os.PathLike,
                input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> None:
    """Write ``model`` (in eval mode: dropout off, BatchNorm's running statistics) to ``path``
    as an ONNX model with a dynamic batch axis. ``input_shape`` (without the batch axis; a
    list of shapes for several inputs) is needed only where nnlite cannot infer it: a graph
    Model knows its inputs, and a model that was trained or run knows the shapes it saw.

    MultiHeadAttention (and so TransformerBlock), LSTM and GRU have no export rule: a model
    holding one is refused,
    naming it. A float64 model's exact GELU computes erf in float32 (onnxruntime has no
    float64 Erf), so its outputs are within about 1e-6 of ``predict``'s."""
    try:
        import onnx
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "nnlite[onnx]"') \
            from None
    shapes = _input_shapes(model, input_shape)
    dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    dtype = dtype.newbyteorder("=")  # initializers are written little-endian, as ONNX's
    kind = onnx.helper.np_dtype_to_tensor_dtype(dtype)
    in_dtypes = [d or dtype for d in getattr(model, "input_dtypes", [None] * len(shapes))]
    probe = _probe(model, [np.zeros((1, *s), d) for s, d in zip(shapes, in_dtypes)])
    graph = OnnxGraph(onnx, dtype)
    names = ["input"] if len(shapes) == 1 else [f"input_{i}" for i in range(len(shapes))]
    outs = graph.layer(model, names)
    outs = outs if isinstance(outs, list) else [outs]
    out_names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
    for name, out in zip(out_names, outs):
        graph.nodes.append(onnx.helper.make_node("Identity", [out], [name]))
    onnx_graph = onnx.helper.make_graph(
        graph.nodes, type(model).__name__,
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(d), ["N", *s])
         for n, s, d in zip(names, shapes, in_dtypes)],
        [onnx.helper.make_tensor_value_info(n, kind, ["N", *p.shape[1:]])
         for n, p in zip(out_names, probe)],
        graph.initializers)
    onnx_model = onnx.helper.make_model(onnx_graph, producer_name="nnlite",
                                        opset_imports=[onnx.helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(onnx_model)
    atomic_write(path, lambda f: f.write(onnx_model.SerializeToString()))


def _input_shapes(model: Layer, given: Any) -> list[tuple[int, ...]]:
    if given is not None:
        listed = len(given) > 0 and isinstance(given[0], (list, tuple))
        return [tuple(s) for s in given] if listed else [tuple(given)]
    if hasattr(model, "inputs"):  # a graph Model
        return [v.shape for v in model.inputs]
    if model.__dict__.get("input_shapes"):
        return [tuple(s) for s in model.__dict__["input_shapes"]]
    first = next((m for m in model.modules() if not hasattr(m, "layers")), None)
    if hasattr(first, "in_features"):  # a Linear first
        return [(first.in_features,)]
    raise ValueError(f"export_onnx: cannot tell the input shape of {type(model).__name__}; "
                     f"pass input_shape (without the batch axis), e.g. (1, 28, 28)")


def _probe(model: Layer, xs: list[np.ndarray]) -> list[np.ndarray]:
    """The model's outputs for one sample of each input shape, through the checks at the
    door: a shape the model does not take is a ValueError naming the layer and shapes."""
    try:
        out = probe_rows(model, xs if len(xs) > 1 else xs[0])
    except ValueError as e:
        shapes = ", ".join(str(x.shape[1:]) for x in xs)
        raise ValueError(f"export_onnx: input_shape {shapes}: {e}") from None
    return out if isinstance(out, list) else [out]
