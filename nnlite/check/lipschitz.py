"""Lipschitz constants: how far a model's output can move per unit its input moves (ℓ2).

Near a sample x that is the spectral norm ‖J(x)‖₂ of the Jacobian, its largest singular
value σ₁: ``lipschitz`` finds it by power iteration on JᵀJ, v ← Jᵀ(J·v)/‖Jᵀ(J·v)‖, one
``jvp`` (J·v) and one ``backward`` (uᵀJ) per step, all samples at once, never building J;
then σ₁ = ‖J·v‖. Everywhere at once, ``lipschitz_bound`` composes an upper bound layer by
layer (AutoLip, Scaman & Virmaux, NeurIPS 2018): ‖f∘g‖ ≤ ‖f‖·‖g‖ along a chain, Lₐ + L_b
where an Add meets two paths, √(Σ Lᵢ²) where a Concatenate joins them. Both look at the
model in eval mode (no dropout, BatchNorm's running statistics).
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from ..core.door import check_flag, check_number
from ..core.layer import Layer
from ..core.parameter import grads_kept
from .jacobians import in_mode


def lipschitz(model: Layer, x: np.ndarray, iters: int = 50, tol: float = 1e-6, *,
              return_vectors: bool = False, training: bool = False
              ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """‖J(xₙ)‖₂ for each sample xₙ of ``x``: shape (N,), the local Lipschitz constant of
    ``model`` (in eval mode, or with ``training`` in training mode, one forward's random
    masks throughout: ``in_mode``) at each sample. Power iteration stops after ``iters`` steps or
    once no sample's estimate moved by more than ``tol`` (relative). With
    ``return_vectors``, also the top right-singular vectors, shaped like ``x``: the input
    direction each sample's output is most sensitive to. A model containing a layer
    without ``jvp`` gets its per-sample Jacobians row by row, by reverse mode, instead.
    """
    iters = check_number("lipschitz", "iters", iters, integer=True, low=1)
    tol = check_number("lipschitz", "tol", tol, low=0)
    check_flag("lipschitz", "return_vectors", return_vectors)
    x = np.asarray(x)
    if len(getattr(model, "inputs", ())) > 1:  # a graph Model of several inputs
        raise ValueError("lipschitz: the model has several inputs; it takes one")
    if x.ndim < 2 or x.dtype.kind not in "fiub" or getattr(model, "integer_input", False) or \
            getattr(model, "input_dtypes", [None])[0] is not None:
        raise ValueError(f"lipschitz needs a batch (N, ...) of floating inputs to a model "
                         f"that takes them, got {x.dtype} of shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"lipschitz: x (shape {x.shape}) holds NaN or infinite values")
    params = model.parameters()
    x = x.astype(params[0].dtype if params else np.result_type(x.dtype, np.float32))
    model.check_input(x)
    with in_mode(model, training, "lipschitz"), grads_kept(model.parameters()):
        model.forward(x)
        try:
            sigma, v = _power_iteration(model, x, iters, tol)
        except NotImplementedError:  # a layer without jvp
            sigma, v = _by_rows(model, x)
    return (sigma, v) if return_vectors else sigma


def _norms(values: Any, n: int) -> np.ndarray:
    """The ℓ2 norm of each sample's part of one array or of a list of them, joined."""
    parts = values if isinstance(values, (list, tuple)) else [values]
    return np.sqrt(sum(np.square(p.reshape(n, -1), dtype=np.float64).sum(axis=1)
                       for p in parts))


def _power_iteration(model: Layer, x: np.ndarray, iters: int, tol: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    n = len(x)
    v = np.random.default_rng(0).standard_normal(x.shape).astype(x.dtype)
    v /= _norms(v, n).reshape(n, *[1] * (x.ndim - 1))
    sigma = np.zeros(n)
    for _ in range(iters):
        jv = model.jvp(v)
        new = _norms(jv, n)                       # ‖J·v‖ for a unit v
        w = model.backward(jv)                    # Jᵀ(J·v)
        size = _norms(w, n)
        moving = size > 0                         # J·v = 0: v stays (σ is 0 along it)
        v[moving] = w[moving] / size[moving].reshape(-1, *[1] * (x.ndim - 1))
        done = np.all(np.abs(new - sigma) <= tol * new)
        sigma = new
        if done:
            break
    return _norms(model.jvp(v), n), v


def _by_rows(model: Layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's Jacobian, one reverse pass per output coordinate (samples are
    independent in eval mode), and its largest singular value and right vector."""
    outs = model.forward(x)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    n, rows = len(x), []
    for k, out in enumerate(outs):
        for i in range(out[0].size):
            es = [np.zeros(o.shape, o.dtype) for o in outs]
            es[k].reshape(n, -1)[:, i] = 1
            rows.append(model.backward(es if len(outs) > 1 else es[0]).reshape(n, -1))
    _, s, vt = np.linalg.svd(np.stack(rows, axis=1).astype(np.float64))
    return s[:, 0], vt[:, 0].reshape(x.shape).astype(x.dtype)


# -- the global bound -------------------------------------------------------------------

def lipschitz_bound(model: Layer, input_shape: tuple[int, ...] | None = None) -> float:
    """An upper bound on the ℓ2 Lipschitz constant of ``model`` (eval mode) everywhere,
    composed layer by layer (see the module's docstring). Each layer says its own: a
    ``lipschitz_bound()`` method (the largest slope of an activation, σ_max(W) of a Linear,
    max |γ|/√(running_var + ε) of BatchNorm, 1 for Flatten and Dropout, ...), or
    ``lipschitz_linear = True`` for a linear layer whose exact operator norm this module
    finds by Lanczos iteration on its own ``jvp`` and ``backward`` (Conv2D's is that of the
    convolution, padding included, not of its kernel matrix); a layer that merges paths
    says how bounds combine (``lipschitz_merge``: Add's sum, Concatenate's root of the sum
    of squares). A user's layer gives its bound the same way. Linear layers of images
    (Conv2D, AvgPool2D) need the input's shape (one sample): a ``Model`` knows it, a
    Sequential after ``fit`` or ``predict``, else pass ``input_shape``. A layer with no
    known bound (attention, recurrent, Softmax, Multiply, Embedding) raises a ValueError
    naming it.
    """
    if input_shape is None:
        input_shape = (model.__dict__.get("input_shapes") or [None])[0]
    elif not isinstance(input_shape, (list, tuple)):
        raise ValueError(f"lipschitz_bound: input_shape is one sample's shape, a tuple such "
                         f"as (1, 28, 28), got {input_shape!r}")
    else:
        input_shape = [check_number("lipschitz_bound", "input_shape", d, integer=True, low=1)
                       for d in input_shape]
    state = model.call_state()  # the shapes are found by running the layers on zeros
    try:
        with model.evaluating():
            shape = None if input_shape is None else tuple(input_shape)
            return _bound(model, shape, "model")[0]
    finally:
        model.restore_call_state(state)


def _bound(layer: Layer, shape: tuple[int, ...] | None, name: str
           ) -> tuple[float, tuple[int, ...] | None]:
    """(a bound for ``layer``, its output's shape) for inputs of ``shape`` (or None)."""
    if getattr(layer, "chain", False):  # a Sequential: the product along the chain
        total = 1.0
        for i, inner in enumerate(layer.layers):
            bound, shape = _bound(inner, shape, f"{name}.{i}")
            total *= bound
        return total, shape
    if hasattr(layer, "outputs"):  # a graph Model
        out = layer.outputs[0].shape if len(layer.outputs) == 1 else None
        return _graph_bound(layer, name), out
    bound = _layer_bound(layer, shape, name)
    return bound, None if shape is None else layer.forward(np.zeros((1, *shape))).shape[1:]


def _layer_bound(layer: Layer, shape: tuple[int, ...] | None, name: str) -> float:
    """What ``layer`` says of its own bound: ``lipschitz_bound()``, or, linear, its operator
    norm for inputs of ``shape``."""
    if hasattr(layer, "lipschitz_bound"):
        return float(layer.lipschitz_bound())
    if getattr(layer, "lipschitz_linear", False):
        if shape is None:
            raise ValueError(f"lipschitz_bound: {name} ({type(layer).__name__})'s bound depends "
                             f"on its input's shape; pass input_shape=(C, H, W) of the "
                             f"model's input, or fit or predict first")
        return operator_norm(layer, shape)
    raise ValueError(f"lipschitz_bound: {name} ({layer!r}) has no known Lipschitz bound; a "
                     f"layer of your own can give one by a lipschitz_bound() method")


def _graph_bound(model: Any, name: str) -> float:
    """Bounds relative to the model's input, value by value: each Input 1 (it moves no
    further than all inputs together), a layer's output its bound times its input's, a
    merging layer's as it says (``lipschitz_merge``); the outputs joined."""
    bounds = [0.0] * model._n_values
    for s in model._in_slots:
        bounds[s] = 1.0
    for node, step in zip(model._nodes, model._steps):
        ins = [bounds[s] for s in step.ins]
        where = f"{name}.{step.name}"
        merge = getattr(step.layer, "lipschitz_merge", None)
        if step.multi_in and merge is not None:
            out = merge(ins)
        elif step.multi_in or step.multi_out:
            raise ValueError(f"lipschitz_bound: {where} ({step.layer!r}) has several inputs "
                             f"or outputs, and no lipschitz_merge to compose their bounds")
        else:
            out = _bound(step.layer, node.inputs[0].shape, where)[0] * ins[0]
        for s in step.outs:
            bounds[s] = out
    return math.sqrt(sum(bounds[s] ** 2 for s in model._out_slots))


def operator_norm(layer: Layer, shape: tuple[int, ...]) -> float:
    """‖J‖₂ of a linear ``layer`` on inputs of ``shape`` (one sample), to rounding: Lanczos
    iteration (scipy's ``svds``, ARPACK) on J with the layer's ``jvp`` and ``backward``, in
    a float64 copy (the layer is not touched). Plain power iteration crawls where the top
    singular values cluster, as a convolution's do, and stops below σ₁: no bound."""
    from scipy.sparse.linalg import LinearOperator, svds  # (scipy, loaded on first use)

    layer = copy.deepcopy(layer).astype(np.float64)
    x = np.zeros((1, *shape))
    y = layer.forward(x)
    op = LinearOperator((y.size, x.size), dtype=np.float64,
                        matvec=lambda v: layer.jvp(v.reshape(x.shape)).reshape(-1),
                        rmatvec=lambda u: layer.backward(u.reshape(y.shape)).reshape(-1))
    if min(op.shape) < 3:  # too small for ARPACK: the matrix itself
        return float(np.linalg.norm(op.matmat(np.eye(x.size)), 2))
    start = np.random.default_rng(0).standard_normal(min(op.shape))
    return float(svds(op, k=1, v0=start, return_singular_vectors=False)[0])
