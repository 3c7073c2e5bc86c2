"""What a loaded file may cost: arrays held to the file's size, probes held to a budget.

``load`` builds a file's architecture inside ``allocation_budget``: the built-in layers make
their parameters and buffers with ``new_array``, so they may allocate no more than the
arrays the file holds. It then probes the model
once, on one sample of zeros of each recorded input shape, to find layers that no longer
fit together. The probe runs inside ``probe_budget``: every layer call is charged, before
it runs, an upper bound on the values it allocates and the steps it takes (``cost``), and a
call that would overdraw the budget is refused. The budget is the values of the file's
arrays, and at least ``PROBE_FLOOR``, so a model's own probe always fits.
"""
from __future__ import annotations

import contextvars
import math
import re
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np


#: The probe budget of a small model, in values (16 MiB of float32).
PROBE_FLOOR = 1 << 22
#: What one layer call costs beyond its arrays (its Python work), in values.
CALL = 1 << 8
#: What one time step of a recurrent layer costs beyond its arrays, in values.
STEP = 1 << 9

#: Bytes that layers may still allocate for parameters and buffers (None: no limit);
#: ``load`` sets it to what the file holds, so a file cannot declare a huge layer.
_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("budget",
                                                                          default=None)
_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("probe", default=None)


@contextmanager
def allocation_budget(nbytes: int) -> Iterator[None]:
    """While active, ``new_array`` refuses to allocate more than ``nbytes`` in all."""
    token = _budget.set([int(nbytes)])
    try:
        yield
    finally:
        _budget.reset(token)


def new_array(shape: tuple[int, ...], dtype: Any, fill: float = 0.0) -> np.ndarray:
    """An array for a parameter or buffer, filled with ``fill``; the built-in layers make
    theirs with it, so that a loaded file's architecture is held to the arrays it has."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    _take(_budget, nbytes, lambda left: f"it declares an array of shape {tuple(shape)} "
                                        f"({nbytes:,} bytes), more than the file holds")
    return np.full(shape, fill, dtype)


@contextmanager
def probe_budget(values: int) -> Iterator[None]:
    """While active, ``probe`` refuses calls whose cost would exceed ``values`` in all."""
    token = _left.set([max(int(values), PROBE_FLOOR)])
    try:
        yield
    finally:
        _left.reset(token)


def probe_model(model: Any, shapes: list[list[int]]) -> None:
    """Run the model once on zeros of the input shapes it was used with, within the file's
    probe budget: an architecture whose layers do not fit together fails here, at load,
    not later at predict."""
    dtypes = getattr(model, "input_dtypes", None)
    if dtypes is None or len(shapes) != len(dtypes):
        count = "no inputs" if dtypes is None else f"{len(dtypes)} input(s)"
        raise ValueError(f"it records {len(shapes)} input shapes for a model of {count}")
    for i, (v, s) in enumerate(zip(getattr(model, "inputs", ()), shapes)):
        if list(v.shape) != s:
            raise ValueError(f"it records input {i} of shape {tuple(s)}, but the model's Input "
                             f"takes {v.shape}")
    if hasattr(model, "inputs"):  # a graph Model: rebuilding it probed every node already
        return
    charge(sum(math.prod(s) for s in shapes), f"a probe of shape {', '.join(map(str, shapes))}")
    xs = [np.zeros((1, *s), d or model.dtype) for s, d in zip(shapes, dtypes)]
    with model.evaluating():
        probe(model, xs if len(xs) > 1 else xs[0])


def check_expansion(model: Any) -> None:
    """Hold the layer calls one forward of ``model`` makes, and the paths a walk of every
    path (a state dict) visits, to the probe budget (on an account of their own: the
    probe charges the calls it runs again): a layer counts at every place it is used, so a
    few nested layers that refer to each other cannot describe 2⁴⁰ calls. Counted in time
    linear in the distinct layers."""
    sizes: dict[int, int] = {}

    def size(layer: Any) -> int:
        if id(layer) not in sizes:
            sizes[id(layer)] = 1 + sum(size(child) for _, child in layer.named_children())
        return sizes[id(layer)]
    calls, left = size(model), _left.get()
    if left is not None and calls * CALL > left[0]:
        raise ValueError(f"its architecture, of {calls:,} layer calls, is too large to "
                         f"rebuild: about {calls * CALL:,} values of work, more than the "
                         f"file's budget of {left[0]:,}")


def probe(layer: Any, x: Any) -> Any:
    """``layer.forward(x)`` at the door: ``check_input`` first, and the call charged first
    while a budget is active; a Sequential's layers are run (checked and charged) one by
    one, an error naming the layer's position."""
    if getattr(layer, "chain", False):
        for i, inner in enumerate(layer.layers):
            try:
                x = probe(inner, x)
            except ValueError as e:
                raise ValueError(_within(i, inner, str(e))) from None
        return x
    if _left.get() is not None:
        shapes = [np.shape(v) for v in (x if isinstance(x, (list, tuple)) else [x])]
        charge(cost(layer, shapes), f"probing {type(layer).__name__} on inputs of shape "
                                    f"{', '.join(map(str, shapes))}")
    layer.check_input(x)
    return layer.forward(x)


def _within(i: int, layer: Any, message: str) -> str:
    """``message`` from layer ``i`` of a Sequential, its path said once, innermost layer
    named: "layer 2.0.1 (Linear): ...", however deep the containers nest."""
    inner = re.match(r"layer ([\d.]+) \((\w+)\): ", message)
    if inner:
        return f"layer {i}.{inner[1]} ({inner[2]}): {message[inner.end():]}"
    return f"layer {i} ({type(layer).__name__}): {message}"


def probe_rows(layer: Any, x: Any) -> Any:
    """``probe`` on the first row of ``x`` (an array, or a list of one per input), in eval
    mode: the checks at the door, as cheap as one sample. An error's shapes are the
    probe's, batch axis 1: it says ``x``'s batch size instead."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    rows = [v[:1] for v in xs]
    try:
        with layer.evaluating():
            return probe(layer, rows if isinstance(x, (list, tuple)) else rows[0])
    except ValueError as e:
        raise ValueError(re.sub(r"\(1,", f"({len(xs[0])},", str(e))) from None


def charge(values: int, what: str) -> None:
    """Take ``values`` from the active budget (if any), or raise a ValueError saying
    ``what`` would have cost them."""
    _take(_left, values, lambda left: f"{what} is too large to rebuild: about {values:,} "
                                      f"values of work, more than the file's budget of {left:,}")


def _take(budget: contextvars.ContextVar, amount: int, refusal: Any) -> None:
    """Take ``amount`` from ``budget`` when one is active, else raise the ValueError
    ``refusal(what is left)`` says."""
    left = budget.get()
    if left is not None:
        if amount > left[0]:
            raise ValueError(refusal(left[0]))
        left[0] -= amount


def cost(layer: Any, shapes: list[tuple[int, ...]]) -> int:
    """An upper bound, in values, on what one forward call of a built-in layer allocates
    (and, for recurrent layers, the steps it takes); for other layers, a few times its
    inputs. nnlite's layers are told by name (this module sits below them)."""
    size = sum(math.prod(s) for s in shapes)
    shape = shapes[0]
    kind = type(layer).__name__ if type(layer).__module__.startswith("nnlite.layers.") else ""
    if kind == "Linear":
        return CALL + size + 2 * size // max(shape[-1], 1) * layer.out_features
    if kind == "Conv2D" and len(shape) == 4:
        (n, c, h, w), (ph, pw), (kh, kw) = shape, layer.padding, layer.kernel_size
        padded = n * (h + 2 * ph) * (w + 2 * pw)  # the padded input, its rows, the output
        return CALL + size + padded * (c * (kh * kw + 2) + layer.out_channels)
    if kind == "MultiHeadAttention" and len(shape) == 3:
        n, t, e = shape
        return CALL + 8 * size + 3 * n * layer.num_heads * t * t
    if kind in ("LSTM", "GRU") and len(shape) == 3:
        n, t, _ = shape
        return CALL + size + t * (STEP + 8 * n * layer.hidden_size)
    if kind == "Embedding":
        return CALL + size * (1 + layer.embedding_dim)
    return CALL + 4 * size
