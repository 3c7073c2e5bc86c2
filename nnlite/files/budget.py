"""What a loaded file may cost, beyond its arrays: the layer calls its architecture
expands to, and one probe through its recorded input shapes, both held to the probe
budget of ``nnlite.core.door`` (the file's array values, at least ``PROBE_FLOOR``).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.door import CALL, charge, left, probe

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
    calls, budget = size(model), left()
    if budget is not None and calls * CALL > budget:
        raise ValueError(f"its architecture, of {calls:,} layer calls, is too large to "
                         f"rebuild: about {calls * CALL:,} values of work, more than the "
                         f"file's budget of {budget:,}")
