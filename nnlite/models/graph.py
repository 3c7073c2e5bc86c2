"""Graph models: Keras's functional API over any directed acyclic graph of layers.

``Model(inputs, outputs)`` turns a graph of symbolic values (``nnlite.models.symbolic``:
``Input``, and layers called on them) into a layer. Forward runs the nodes in
topological order, precomputed once. Backward runs their VJPs in reverse, and where a
value feeds several nodes its gradient is the sum of what comes back along each path —
the chain rule for f(x(t), y(t)): df/dt = ∂f/∂x · dx/dt + ∂f/∂y · dy/dt. ``jvp`` reads
that rule forwards: a tangent goes along every path a value feeds, and a node that
merges paths sums their products.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from ..core.door import probe
from ..core.layer import Layer, shared_positions
from .container import Container
from .symbolic import Input, Symbol, symbols_of, topological


class _Step(NamedTuple):
    """A node as the model runs it: slots index the model's list of values."""

    layer: Layer
    name: str               # the layer's name in the model ("3")
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    multi_in: bool
    multi_out: bool
    shared: bool            # the layer runs at other steps too: keep this call's state
    trainable: bool         # the layer has trainable parameters
    flows: tuple[bool, ...]  # per input: does a trainable parameter lie upstream of it?


class Model(Container):
    """A graph of layers from ``inputs`` to ``outputs`` (one symbolic value or a list).

    ``forward`` takes one array per input (a list when there are several) and returns one
    per output (likewise); ``backward`` takes one gradient per output and returns one per
    input.
    Each distinct layer is registered once, named by its position in the order of first
    use ("0", "1", ...), so a layer called at several nodes shares its parameters, and
    their gradient is the sum over its uses.
    """

    def __init__(self, inputs: Symbol | Sequence[Symbol], outputs: Symbol | Sequence[Symbol]):
        super().__init__()
        ins, outs = symbols_of(inputs, "inputs"), symbols_of(outputs, "outputs")
        self._multi_in, self._multi_out = len(ins) > 1, len(outs) > 1
        for i, v in enumerate(ins):
            if v.node.layer is not None:
                raise ValueError(f"Model: inputs[{i}] is the output of {v.node.layer!r}, not an "
                                 f"nnlite.Input(...)")
        if len({id(v) for v in ins}) != len(ins):
            raise ValueError("Model: the same Input is given twice in inputs")
        nodes = topological(ins, outs)
        used = {id(v) for node in nodes for v in node.inputs} | {id(v) for v in outs}
        for i, v in enumerate(ins):
            if id(v) not in used:
                raise ValueError(f"Model: no output depends on inputs[{i}] "
                                 f"(shape {(None, *v.shape)}); leave it out of inputs")
        self.inputs, self.outputs, self._nodes = ins, outs, nodes
        layers = list({id(node.layer): node.layer for node in nodes}.values())
        self.__dict__["layers"] = layers
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)
        self._steps, self._n_values, self._in_slots, self._out_slots = _plan(self)

    # -- what the training loop needs ------------------------------------------------------
    @property
    def input_dtypes(self) -> list[np.dtype | None]:
        return [v.dtype for v in self.inputs]

    @property
    def n_outputs(self) -> int:
        return len(self.outputs)

    def _check_data(self, xs, ys, checks, what, outs=None) -> list[np.ndarray]:
        """Training data has exactly the Inputs' shapes (a model may run on others)."""
        for i, (v, x) in enumerate(zip(self.inputs, xs)):
            if x.shape[1:] != v.shape:
                where = f"input {i}" if len(xs) > 1 else "x"
                raise ValueError(f"{what}: {where} has shape {x.shape}, but the model's "
                                 f"Input takes {(None, *v.shape)}")
        return super()._check_data(xs, ys, checks, what, outs)

    def check_input(self, x: Any) -> None:
        """One array per Input (a list when there are several), then each node's
        ``check_input`` on one row through the graph, in eval mode."""
        n = len(self.inputs)
        if self._multi_in and (not isinstance(x, (list, tuple)) or len(x) != n):
            got = f"{len(x)}" if isinstance(x, (list, tuple)) else "one array"
            raise ValueError(f"Model.forward: the model has {n} inputs; give a list of {n} "
                             f"arrays, got {got}")
        xs = list(x) if self._multi_in else [x]
        with self.evaluating():
            self._run([v[:1] for v in xs], probe)

    # -- the layer contract ------------------------------------------------------------------
    def forward(self, x: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        return self._run(x if self._multi_in else [x], _forward)  # check_input counted them

    def _run(self, xs: list[np.ndarray], call: Any) -> Any:
        """The nodes in topological order, each layer run by ``call(layer, its inputs)``."""
        values: list[Any] = [None] * self._n_values
        for s, v in zip(self._in_slots, xs):
            values[s] = v
        states = self._states = {}
        for k, step in enumerate(self._steps):
            args = [values[s] for s in step.ins]
            try:
                out = call(step.layer, args if step.multi_in else args[0])
            except ValueError as e:
                raise ValueError(f"layer {step.name} ({type(step.layer).__name__}): {e}") \
                    from None
            if step.shared:
                states[k] = step.layer.call_state()
            if step.multi_out:
                for s, o in zip(step.outs, out):
                    values[s] = o
                states[k, "shapes"] = [(o.shape, o.dtype) for o in out]
            else:
                values[step.outs[0]] = out
        outs = [values[s] for s in self._out_slots]
        self._out_like = [(o.shape, o.dtype) for o in outs]
        return outs if self._multi_out else outs[0]

    def jvp(self, tangent: Any) -> Any:
        """J · v, one tangent per input (None: zero): each node's jvp in topological order.
        A zero tangent stays None until a merge adds it or an output needs its zeros."""
        states = self._cached("_states")
        tangents: list[Any] = [None] * self._n_values
        for s, v in zip(self._in_slots, tangent if self._multi_in else [tangent]):
            tangents[s] = v
        for k, step in enumerate(self._steps):
            args = [tangents[s] for s in step.ins]
            if all(v is None for v in args):
                continue                               # J · 0 = 0
            if step.shared:
                step.layer.restore_call_state(states[k])
            out = step.layer.jvp(args if step.multi_in else args[0])
            for s, o in zip(step.outs, out if step.multi_out else [out]):
                tangents[s] = o
        outs = [np.zeros(*like) if tangents[s] is None else tangents[s]
                for s, like in zip(self._out_slots, self._out_like)]
        return outs if self._multi_out else outs[0]

    def backward(self, grad: np.ndarray | Sequence[np.ndarray]
                 ) -> np.ndarray | list[np.ndarray] | None:
        """dL/d(each input), summing the VJPs of every path; with ``input_grad`` False,
        only the parameter gradients (returns None): nodes with no parameter upstream or
        inside are not visited, and those with parameters but none upstream do not pass a
        gradient on (``_pass_input_grad`` told their layers they may skip it)."""
        states = self._cached("_states")
        grads: list[Any] = [None] * self._n_values
        owned = [False] * self._n_values  # grads[s] is an array of ours, safe to add into
        for s, g in zip(self._out_slots, grad if self._multi_out else [grad]):
            _accumulate(grads, owned, s, g, "the output gradient")
        everything = self.input_grad
        for k in range(len(self._steps) - 1, -1, -1):
            step = self._steps[k]
            if step.multi_out:
                if all(grads[s] is None for s in step.outs):
                    continue
                g = [np.zeros(*shape) if grads[s] is None else grads[s]
                     for s, shape in zip(step.outs, states[k, "shapes"])]
            else:
                g = grads[step.outs[0]]
                if g is None:  # nothing downstream of this node reached a loss
                    continue
            needed = everything or any(step.flows)
            if not needed and not step.trainable:
                continue
            if step.shared:
                step.layer.restore_call_state(states[k])
            result = step.layer.backward(g)
            if not needed:
                continue
            results = result if step.multi_in else [result]
            if not isinstance(results, (list, tuple)) or len(results) != len(step.ins):
                raise ValueError(f"layer {step.name} ({type(step.layer).__name__}): backward "
                                 f"must return a list of {len(step.ins)} gradients, one per "
                                 f"input, got {type(result).__name__}")
            for s, r, flows in zip(step.ins, results, step.flows):
                if everything or flows:
                    _accumulate(grads, owned, s, r, f"layer {step.name} "
                                                    f"({type(step.layer).__name__})")
        if not everything:
            return None
        dx = [grads[s] for s in self._in_slots]
        return dx if self._multi_in else dx[0]

    def to_onnx(self, g: Any, *inputs: str) -> str | list[str]:
        """Each node's ONNX nodes, in topological order (``nnlite.files.onnx``)."""
        names: dict[int, str] = {id(v): n for v, n in zip(self.inputs, inputs)}
        for node in self._nodes:
            out = g.layer(node.layer, [names[id(v)] for v in node.inputs])
            for v, name in zip(node.outputs, out if node.multi_out else [out]):
                names[id(v)] = name
        outs = [names[id(v)] for v in self.outputs]
        return outs if len(outs) > 1 else outs[0]

    def _pass_input_grad(self, needed: bool) -> None:
        """A layer whose every node has no trainable parameter upstream may skip its dL/dx
        (the plan first sees which layers are frozen now)."""
        self._steps, self._n_values, self._in_slots, self._out_slots = _plan(self)
        upstream: dict[int, bool] = {}
        for step in self._steps:
            upstream[id(step.layer)] = upstream.get(id(step.layer), False) or any(step.flows)
        for step in self._steps:
            if step.layer.skips_input_grad:
                step.layer.input_grad = needed or upstream[id(step.layer)]

    # -- description and files -----------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The graph: its distinct layers, and each node as [layer, its inputs], where a
        value is [node, output] (node -1 being the model's inputs)."""
        return _config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """Rebuild the graph by calling the (already rebuilt) layers on new Inputs (each
        call probes one sample)."""
        inputs, outputs = _rebuilt(config)
        return cls(inputs, outputs)

    def _summary_rows(self, input_shape: Any) -> list[tuple[str, str, int, str]]:
        return _summary_rows(self)


def _accumulate(grads: list[Any], owned: list[bool], slot: int, g: Any, source: str) -> None:
    """grads[slot] += g: the first gradient is kept as given, the second is added into a
    new array, and later ones into that array."""
    current = grads[slot]
    if current is None:
        grads[slot] = g
        return
    if np.shape(g) != np.shape(current):
        raise ValueError(f"{source}: backward returned a gradient of shape {np.shape(g)} for a "
                         f"value of shape {np.shape(current)}")
    if owned[slot]:
        current += g
    else:
        grads[slot] = current + g
        owned[slot] = True


def _forward(layer: Layer, x: Any) -> Any:
    return layer.forward(x)


def _plan(model: Model) -> tuple[list[_Step], int, tuple[int, ...], tuple[int, ...]]:
    """Every value numbered, and the steps of forward and backward precomputed: (steps,
    how many values, the inputs' numbers, the outputs' numbers)."""
    slot: dict[int, int] = {id(v): i for i, v in enumerate(model.inputs)}
    for node in model._nodes:
        for v in node.outputs:
            slot[id(v)] = len(slot)
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    shared = shared_positions([node.layer for node in model._nodes])
    upstream = [False] * len(slot)  # does a trainable parameter lie upstream of it?
    steps = []
    for k, node in enumerate(model._nodes):
        ins = tuple(slot[id(v)] for v in node.inputs)
        outs = tuple(slot[id(v)] for v in node.outputs)
        trainable = bool(node.layer.trainable_parameters())
        flows = tuple(upstream[s] for s in ins)
        for s in outs:
            upstream[s] = trainable or any(flows)
        steps.append(_Step(node.layer, str(index[id(node.layer)]), ins, outs,
                           node.multi_in, node.multi_out, k in shared, trainable, flows))
    return (steps, len(slot), tuple(slot[id(v)] for v in model.inputs),
            tuple(slot[id(v)] for v in model.outputs))


def _summary_rows(model: Model) -> list[tuple[str, str, int, str]]:
    """``summary``'s rows: each Input, then each node: its layer (a shared one's call
    numbered), output shapes, parameters (at its first call) and the values it reads."""
    names = {id(v): f"input_{i}" for i, v in enumerate(model.inputs)}
    rows = [(f"input_{i} (Input)", str((None, *v.shape)), 0, "")
            for i, v in enumerate(model.inputs)]
    calls: dict[int, int] = {}
    for node, step in zip(model._nodes, model._steps):
        call = calls[id(node.layer)] = calls.get(id(node.layer), -1) + 1
        name = step.name + (f"[{call}]" if step.shared else "")
        for i, v in enumerate(node.outputs):
            names[id(v)] = name + (f".{i}" if node.multi_out else "")
        count = 0 if call else sum(p.size for p in node.layer.parameters())
        shapes = ", ".join(str((None, *v.shape)) for v in node.outputs)
        rows.append((f"{name} {type(node.layer).__name__}", shapes, count,
                     ", ".join(names[id(v)] for v in node.inputs)))
    return rows


def _config(model: Model) -> dict[str, Any]:
    """``Model.get_config``."""
    where = {id(v): [-1, i] for i, v in enumerate(model.inputs)}
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    nodes = []
    for k, node in enumerate(model._nodes):
        nodes.append({"layer": index[id(node.layer)],
                      "inputs": [where[id(v)] for v in node.inputs],
                      "list": node.multi_in})
        for i, v in enumerate(node.outputs):
            where[id(v)] = [k, i]
    return {"layers": list(model.layers),
            "inputs": [{"shape": list(v.shape), "dtype": v.dtype and v.dtype.name}
                       for v in model.inputs],
            "nodes": nodes, "outputs": [where[id(v)] for v in model.outputs]}


def _rebuilt(config: dict[str, Any]) -> tuple[list[Symbol], list[Symbol]]:
    """``Model.from_config``'s inputs and outputs: the layers called on new Inputs."""
    inputs = [Input(tuple(spec["shape"]), spec["dtype"]) for spec in config["inputs"]]
    made: list[list[Symbol]] = []

    def value(ref: list[int]) -> Symbol:
        node, i = ref
        return inputs[i] if node == -1 else made[node][i]

    for spec in config["nodes"]:
        args = [value(ref) for ref in spec["inputs"]]
        out = config["layers"][spec["layer"]](args if spec["list"] else args[0])
        made.append(out if isinstance(out, list) else [out])
    outputs = [value(ref) for ref in config["outputs"]]
    return inputs, outputs
