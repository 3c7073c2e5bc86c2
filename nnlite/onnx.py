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

from . import layers as L
from .graph import Model
from .archive import atomic_write
from .budget import probe_rows
from .layer import Layer
from .sequential import Sequential

OPSET = 17
_RULES: dict[type, Callable[..., Any]] = {}


def export_rule(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``rule(layer, graph, *input_names) -> output name(s)`` as how instances of
    ``cls`` (exactly that class) export to ONNX."""
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
        """Export ``layer`` by its class's rule."""
        rule = _RULES.get(type(layer))
        if rule is None:
            raise ValueError(f"{layer!r} has no ONNX export rule: register one with "
                             f"@nnlite.onnx.export_rule({type(layer).__name__}) "
                             f"(see docs/custom-layers.md, 'Export to ONNX')")
        return rule(layer, self, *inputs)


def export_onnx(model: Layer, path: str | os.PathLike,
                input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> None:
    """Write ``model`` (in eval mode: dropout off, BatchNorm's running statistics) to ``path``
    as an ONNX model with a dynamic batch axis. ``input_shape`` (without the batch axis; a
    list of shapes for several inputs) is needed only where nnlite cannot infer it: a graph
    Model knows its inputs, and a model that was trained or run knows the shapes it saw.

    MultiHeadAttention, LSTM and GRU have no export rule: a model holding one is refused,
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
    if isinstance(model, Model):
        return [v.shape for v in model.inputs]
    if model.__dict__.get("input_shapes"):
        return [tuple(s) for s in model.__dict__["input_shapes"]]
    first = next((m for m in model.modules() if not isinstance(m, (Sequential, Model))), None)
    if isinstance(first, L.Linear):
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


# -- the rules for nnlite's layers -----------------------------------------------------------
@export_rule(Sequential)
def _sequential(layer: Sequential, g: OnnxGraph, x: str) -> str:
    for child in layer.layers:
        x = g.layer(child, [x])
    return x


@export_rule(Model)
def _model(model: Model, g: OnnxGraph, *inputs: str) -> str | list[str]:
    names: dict[int, str] = {id(v): n for v, n in zip(model.inputs, inputs)}
    for node in model._nodes:
        out = g.layer(node.layer, [names[id(v)] for v in node.inputs])
        for v, name in zip(node.outputs, out if node.multi_out else [out]):
            names[id(v)] = name
    outs = [names[id(v)] for v in model.outputs]
    return outs if len(outs) > 1 else outs[0]


@export_rule(L.Linear)
def _linear(layer: L.Linear, g: OnnxGraph, x: str) -> str:
    y = g.op("MatMul", x, g.constant(layer.weight.data.T))
    return g.op("Add", y, g.constant(layer.bias.data)) if layer.bias is not None else y


@export_rule(L.Conv2D)
def _conv(layer: L.Conv2D, g: OnnxGraph, x: str) -> str:
    ph, pw = layer.padding
    inputs = [x, g.constant(layer.weight.data)]
    if layer.bias is not None:
        inputs.append(g.constant(layer.bias.data))
    return g.op("Conv", *inputs, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride), pads=[ph, pw, ph, pw])


@export_rule(L.MaxPool2D)
def _max_pool(layer: L.MaxPool2D, g: OnnxGraph, x: str) -> str:
    return g.op("MaxPool", x, kernel_shape=list(layer.kernel_size), strides=list(layer.stride))


@export_rule(L.AvgPool2D)
def _avg_pool(layer: L.AvgPool2D, g: OnnxGraph, x: str) -> str:
    return g.op("AveragePool", x, kernel_shape=list(layer.kernel_size),
                strides=list(layer.stride))


@export_rule(L.BatchNorm)
def _batch_norm(layer: L.BatchNorm, g: OnnxGraph, x: str) -> str:
    return g.op("BatchNormalization", x, g.constant(layer.weight.data),
                g.constant(layer.bias.data), g.constant(layer.running_mean),
                g.constant(layer.running_var), epsilon=layer.eps)


@export_rule(L.Embedding)
def _embedding(layer: L.Embedding, g: OnnxGraph, ids: str) -> str:
    return g.op("Gather", g.constant(layer.weight.data), ids, axis=0)


@export_rule(L.PositionalEmbedding)
def _positions(layer: L.PositionalEmbedding, g: OnnxGraph, x: str) -> str:
    # x + P[:T], T read off x's shape at run time
    t = g.op("Slice", g.op("Shape", x), g.constant([1], np.int64), g.constant([2], np.int64))
    table = g.op("Slice", g.constant(layer.weight.data), g.constant([0], np.int64), t)
    return g.op("Add", x, table)


@export_rule(L.LayerNorm)
def _layer_norm(layer: L.LayerNorm, g: OnnxGraph, x: str) -> str:
    shape = layer.normalized_shape
    scale = layer.weight.data if layer.weight is not None else np.ones(shape)
    bias = layer.bias.data if layer.bias is not None else np.zeros(shape)
    return g.op("LayerNormalization", x, g.constant(scale), g.constant(bias),
                axis=-len(shape), epsilon=layer.eps)


@export_rule(L.GELU)
def _gelu(layer: L.GELU, g: OnnxGraph, x: str) -> str:
    """½x(1 + erf(x/√2)), or ½x(1 + tanh(√(2/π)(x + 0.044715x³))), in opset-17 operators."""
    if layer.approximate == "none":
        inner = g.op("Mul", x, g.constant(1 / np.sqrt(2)))
        if g.dtype == np.float64:  # onnxruntime has no float64 Erf: erf in float32 between
            tensor = g.onnx.TensorProto   # casts (within about 1e-6 of nnlite's float64 GELU)
            inner = g.op("Cast", g.op("Erf", g.op("Cast", inner, to=tensor.FLOAT)),
                         to=tensor.DOUBLE)
        else:
            inner = g.op("Erf", inner)
    else:
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Tanh", g.op("Mul", g.op("Add", x, g.op("Mul", cube, g.constant(0.044715))),
                                  g.constant(L.GELU._C)))
    one_plus = g.op("Add", inner, g.constant(1.0))
    return g.op("Mul", g.op("Mul", x, one_plus), g.constant(0.5))


def _simple(cls: type, op_type: str, **attributes: Callable[[Any], Any]) -> None:
    """A layer that is one ONNX operator, with attributes read off the layer."""
    @export_rule(cls)
    def rule(layer: Layer, g: OnnxGraph, *inputs: str) -> str:
        return g.op(op_type, *inputs, **{k: f(layer) for k, f in attributes.items()})


_simple(L.ReLU, "Relu")
_simple(L.Sigmoid, "Sigmoid")
_simple(L.Tanh, "Tanh")
_simple(L.LeakyReLU, "LeakyRelu", alpha=lambda layer: layer.negative_slope)
_simple(L.Softmax, "Softmax", axis=lambda layer: layer.axis)
_simple(L.Flatten, "Flatten", axis=lambda layer: 1)
_simple(L.Dropout, "Identity")                     # identity at inference
_simple(L.RandomShift, "Identity")
_simple(L.RandomHorizontalFlip, "Identity")
_simple(L.Add, "Sum")
_simple(L.Concatenate, "Concat", axis=lambda layer: layer.axis)


@export_rule(L.Multiply)
def _multiply(layer: L.Multiply, g: OnnxGraph, *inputs: str) -> str:
    y = inputs[0]
    for x in inputs[1:]:
        y = g.op("Mul", y, x)
    return y
