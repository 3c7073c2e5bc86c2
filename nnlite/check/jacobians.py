"""Checking tools: Jacobians built on request, gradient checks, and Lipschitz constants.

Training never builds a Jacobian: each backward is a vector-Jacobian product uᵀJ,
each jvp a Jacobian-vector product J·v. These tools build J from either (a row per
VJP, a column per JVP) and from central differences, so a layer's backward and jvp
can be compared with the truth, and with each other: ⟨u, J·v⟩ = ⟨uᵀJ, v⟩ holds to
rounding (the adjoint test).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..core.door import check_flag
from ..core.layer import Layer
from ..core.parameter import grads_kept


def numerical_jacobian(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                       eps: float = 1e-6) -> np.ndarray:
    """J[i, j] ≈ (f(x + eps·eⱼ)ᵢ − f(x − eps·eⱼ)ᵢ) / 2eps, of shape (y.size, x.size).

    ``x`` is perturbed in a float64 copy; ``f`` must be deterministic.
    """
    x = np.array(x, dtype=np.float64)
    flat = x.reshape(-1)
    columns = []
    for j in range(flat.size):
        keep = flat[j]
        flat[j] = keep + eps
        plus = np.array(f(x), dtype=np.float64).reshape(-1)
        flat[j] = keep - eps
        minus = np.array(f(x), dtype=np.float64).reshape(-1)
        flat[j] = keep
        columns.append((plus - minus) / (2 * eps))
    if not columns:
        return np.zeros((np.size(f(x)), 0))
    return np.stack(columns, axis=1)


@contextmanager
def in_mode(layer: Layer, training: bool, what: str) -> Iterator[None]:
    """``layer`` in eval mode inside the block (no dropout, BatchNorm's running statistics),
    or with ``training`` in training mode; every layer's own mode as it was afterwards.
    In training mode a random layer draws its mask in each forward from nnlite's
    generator (``nnlite.set_seed``), and every backward or jvp after it uses that mask."""
    check_flag(what, "training", training)
    modes = [(m, m.training) for m in layer.modules()]
    layer.train(training)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def jvp(layer: Layer, x: Any, v: Any, *, training: bool = False) -> tuple[Any, Any]:
    """(y, J·v): ``layer.forward(x)``, then ``layer.jvp(v)``, as ``torch.func.jvp`` with
    arrays, in eval mode unless ``training`` (``in_mode``). For several inputs ``x`` and
    ``v`` are lists (a None tangent is zero). Parameters and their gradients are not
    touched."""
    with in_mode(layer, training, "jvp"):
        y = layer.forward(list(x) if isinstance(x, (list, tuple)) else x)
        return y, layer.jvp(list(v) if isinstance(v, (list, tuple)) else v)


def vjp(layer: Layer, x: Any, u: Any, *, training: bool = False) -> tuple[Any, Any]:
    """(y, uᵀJ): ``layer.forward(x)``, then ``layer.backward(u)``, as ``torch.func.vjp``
    with arrays (one array per input, a list for several), in eval mode unless
    ``training`` (``in_mode``). Parameter gradients are left as they were."""
    with in_mode(layer, training, "vjp"), grads_kept(layer.parameters()):
        y = layer.forward(list(x) if isinstance(x, (list, tuple)) else x)
        return y, layer.backward(list(u) if isinstance(u, (list, tuple)) else u)


def jacobian(layer: Layer, x: np.ndarray | Sequence[np.ndarray], mode: str = "auto", *,
             training: bool = False) -> np.ndarray | list[np.ndarray]:
    """∂y/∂x of shape (y.size, x.size): built row by row from VJPs eᵢᵀJ (``"reverse"``),
    or column by column from JVPs J·eⱼ (``"forward"``); ``"auto"`` takes the one with
    fewer passes (forward when x has fewer entries than y). The same matrix either way.
    A layer without ``jvp`` is built in reverse mode.

    The model runs in eval mode (no dropout, BatchNorm's running statistics), whatever
    mode ``fit`` left it in, and its modes are restored after; with ``training=True`` in
    training mode, one forward drawing the random masks every row or column then uses,
    from nnlite's generator: after ``nnlite.set_seed(s)`` both modes give one matrix.

    For a layer with several inputs, ``x`` is a list and the result one Jacobian per
    input, ∂y/∂xₖ; with several outputs, y is all of them flattened and joined. Integer
    inputs (token ids) have no columns. Parameter gradients are left as they were.
    """
    if mode not in ("auto", "forward", "reverse"):
        raise ValueError(f"jacobian: mode must be 'auto', 'forward' or 'reverse', got {mode!r}")
    multi_in = isinstance(x, (list, tuple))
    xs = list(x) if multi_in else [x]
    with in_mode(layer, training, "jacobian"), grads_kept(layer.parameters()):
        outs = layer.forward(xs if multi_in else xs[0])
        return jacobian_at(layer, x, outs, mode)


def jacobian_at(layer: Layer, x: Any, out: Any, mode: str = "auto"
                ) -> np.ndarray | list[np.ndarray]:
    """``jacobian`` of ``layer`` at ``x``, whose forward just returned ``out``: built from
    that forward's cached state, without running it again."""
    multi_in = isinstance(x, (list, tuple))
    xs, outs = list(x) if multi_in else [x], _as_list(out)
    n_in, n_out = sum(_size(v) for v in xs), sum(o.size for o in outs)
    if mode == "forward" or (mode == "auto" and n_in < n_out):
        try:
            jacobians = _columns(layer, xs, outs, multi_in)
            return jacobians if multi_in else jacobians[0]
        except NotImplementedError:
            pass  # no jvp: reverse mode
    jacobians = _rows(layer, xs, outs, multi_in)
    return jacobians if multi_in else jacobians[0]


def _size(x: np.ndarray) -> int:
    """How many differentiable entries ``x`` has (none for integer ids)."""
    return 0 if np.asarray(x).dtype.kind in "iu" else np.size(x)


def _as_list(y: Any) -> list[np.ndarray]:
    return list(y) if isinstance(y, (list, tuple)) else [y]


def _rows(layer: Layer, xs: list[np.ndarray], outs: list[np.ndarray], multi_in: bool
          ) -> list[np.ndarray]:
    """One VJP eᵢᵀJ per output coordinate i: the rows of each input's Jacobian."""
    rows: list[list[np.ndarray]] = [[] for _ in xs]
    for k, out in enumerate(outs):
        for i in range(out.size):
            es = [np.zeros(o.shape, o.dtype) for o in outs]
            es[k].reshape(-1)[i] = 1
            dx = layer.backward(es if len(outs) > 1 else es[0])
            for r, d, v in zip(rows, dx if multi_in else [dx], xs):
                r.append(np.zeros(0) if _size(v) == 0 else np.asarray(d).reshape(-1))
    return [np.stack(r) if r else np.zeros((0, _size(v))) for r, v in zip(rows, xs)]


def _columns(layer: Layer, xs: list[np.ndarray], outs: list[np.ndarray], multi_in: bool
             ) -> list[np.ndarray]:
    """One JVP J·eⱼ per input coordinate j: the columns of each input's Jacobian."""
    n_out = sum(o.size for o in outs)
    jacobians = []
    for k, x in enumerate(xs):
        columns = []
        for j in range(_size(x)):
            e = np.zeros(np.shape(x), np.result_type(x, np.float32))
            e.reshape(-1)[j] = 1
            tangents = [e if i == k else None for i in range(len(xs))]
            jv = _as_list(layer.jvp(tangents if multi_in else tangents[0]))
            columns.append(np.concatenate([np.asarray(t).reshape(-1) for t in jv]))
        jacobians.append(np.stack(columns, axis=1) if columns else np.zeros((n_out, 0)))
    return jacobians


@dataclass
class GradCheckReport:
    """What ``check_layer`` found: ``ok``, the worst errors and where they were."""

    layer: str
    ok: bool = True
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    where: str = ""
    problems: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        head = f"check_layer({self.layer}): {'OK' if self.ok else 'FAILED'}"
        worst = (f"worst abs error {self.max_abs_error:.3g}, worst rel error "
                 f"{self.max_rel_error:.3g}" + (f" at {self.where}" if self.where else ""))
        return "\n  ".join([head, worst, *self.problems])


def check_layer(layer: Layer, x: np.ndarray | Sequence[np.ndarray], *, eps: float = 1e-6,
                atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> GradCheckReport:
    """Compare ``layer``'s backward with finite differences, in float64.

    With a fixed random upstream gradient g, L(x, θ) = ⟨g, f(x; θ)⟩; the layer's
    backward(g) must equal ∂L/∂x and add ∂L/∂θ into every parameter's grad.
    For a layer with several inputs, ``x`` is a list and every ∂L/∂xᵢ is checked
    (with several outputs, g has one part per output and L sums over them); integer
    inputs (token ids) are passed through and not differentiated.
    Also checked: backward leaves its inputs alone, a second backward gives the
    same dL/dx and adds the same parameter gradients again. For a layer with ``jvp``,
    for each input i and a random tangent vᵢ: J·vᵢ against the central difference
    (f(x + ε vᵢ) − f(x − ε vᵢ))/2ε, and the adjoint test ⟨g, J·vᵢ⟩ = ⟨gᵀJ, vᵢ⟩, exact to
    rounding (relative to Σ|gⱼ (J·vᵢ)ⱼ|, at most 1e-10), which needs no finite differences:
    a transpose, a sign or a dropped term in backward or jvp breaks it.
    The layer itself is not touched: a float64 copy is checked. Random layers (dropout)
    draw the same numbers on every call.
    """
    layer = copy.deepcopy(layer).astype(np.float64)
    multi_in = isinstance(x, (list, tuple))
    xs = [np.array(v) for v in (x if multi_in else [x])]
    xs = [v if v.dtype.kind in "iu" else v.astype(np.float64) for v in xs]
    report = GradCheckReport(layer=repr(layer))

    def forward(inputs: list[np.ndarray]) -> list[np.ndarray]:
        for m in layer.modules():
            m.rng = np.random.default_rng(seed)
        y = layer.forward(inputs if multi_in else inputs[0])
        return list(y) if isinstance(y, (list, tuple)) else [y]

    ys = forward(xs)
    multi_out = len(ys) > 1  # forward returned a list (of one output, it is taken as bare)
    rng = np.random.default_rng(seed + 1)
    gs = [rng.standard_normal(y.shape) for y in ys]
    params = {name: p for name, p in layer.named_parameters() if p.requires_grad}  # not frozen
    for p in params.values():
        p.grad[...] = 0
    dxs, grads = _check_backward(report, layer, xs, gs, params, multi_in, multi_out)

    def loss(inputs: list[np.ndarray]) -> float:
        return float(sum(np.vdot(g, y) for g, y in zip(gs, forward(inputs))))

    _check_gradients(report, loss, xs, dxs, params, grads, multi_in, eps, atol, rtol)
    _check_jvp(report, layer, forward, xs, multi_in, gs, dxs, eps, atol, rtol, seed)
    report.ok = not report.problems
    return report


def _check_backward(report: GradCheckReport, layer: Layer, xs: list[np.ndarray],
                    gs: list[np.ndarray], params: dict, multi_in: bool, multi_out: bool
                    ) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """backward(g) twice: it must leave its inputs alone, give the same dL/dx and add the
    same parameter gradients again; (dL/dx per input, each parameter's gradient)."""
    before = [v.copy() for v in xs + gs]

    def backward() -> list[np.ndarray]:
        dx = layer.backward(gs if multi_out else gs[0])
        return list(dx) if multi_in else [dx]

    dxs = backward()
    grads = {name: p.grad.copy() for name, p in params.items()}
    if not all(np.array_equal(a, b) for a, b in zip(xs + gs, before)):
        report.problems.append("backward modified its input or the upstream gradient")
    for v, dx2, dx in zip(xs, backward(), dxs):
        if v.dtype.kind not in "iu" and not np.allclose(dx2, dx, rtol=1e-12, atol=0):
            report.problems.append("a second backward gave a different dL/dx")
    for name, p in params.items():
        if not np.allclose(p.grad, 2 * grads[name], rtol=1e-10, atol=1e-12):
            report.problems.append(f"a second backward did not add the same gradient to "
                                   f"{name!r} (backward must accumulate into .grad)")
        p.grad[...] = 0
    return dxs, grads


def _check_gradients(report: GradCheckReport, loss: Callable, xs: list[np.ndarray],
                     dxs: list[np.ndarray], params: dict, grads: dict, multi_in: bool,
                     eps: float, atol: float, rtol: float) -> None:
    """Each dL/dxᵢ (integer inputs aside) and each dL/dθ against central differences of
    ``loss``."""
    for i, (v, dx) in enumerate(zip(xs, dxs)):
        if v.dtype.kind in "iu":
            continue
        def loss_of_x(value: np.ndarray, i=i) -> float:
            return loss(xs[:i] + [value] + xs[i + 1:])
        what = f"dL/dx[{i}]" if multi_in else "dL/dx"
        _compare(report, what, np.asarray(dx), _numerical_grad(loss_of_x, v, eps), atol, rtol)
    for name, p in params.items():
        def loss_of_p(value: np.ndarray, p=p) -> float:
            keep = p.data
            p.data = value
            try:
                return loss(xs)
            finally:
                p.data = keep
        _compare(report, f"dL/d{name}", grads[name], _numerical_grad(loss_of_p, p.data, eps),
                 atol, rtol)


def _check_jvp(report: GradCheckReport, layer: Layer, forward: Callable, xs: list[np.ndarray],
               multi_in: bool, gs: list[np.ndarray], dxs: list[np.ndarray], eps: float,
               atol: float, rtol: float, seed: int) -> None:
    """``layer.jvp`` against finite differences, and the adjoint test against the
    ``dxs = gᵀJ`` that backward gave for the upstream gradients ``gs``."""
    rng = np.random.default_rng(seed + 2)
    for i, (x, dx) in enumerate(zip(xs, dxs)):
        if x.dtype.kind in "iu":
            continue
        v = rng.standard_normal(x.shape)
        tangents = [v if j == i else None for j in range(len(xs))]
        forward(xs)
        try:
            jv = _as_list(layer.jvp(tangents if multi_in else v))
        except NotImplementedError:
            return  # no forward mode: only backward is checked
        what = f"[{i}]" if multi_in else ""
        lhs = sum(float(np.vdot(g, t)) for g, t in zip(gs, jv))
        rhs = float(np.vdot(dx, v))
        scale = max(sum(float(np.abs(g * t).sum()) for g, t in zip(gs, jv)),
                    float(np.abs(dx * v).sum()), np.finfo(np.float64).tiny)
        if abs(lhs - rhs) > 1e-10 * scale:
            report.problems.append(
                f"adjoint test failed for input{what}: ⟨g, J·v⟩ = {lhs:.12g} but ⟨gᵀJ, v⟩ = "
                f"{rhs:.12g} (relative error {abs(lhs - rhs) / scale:.3g}): backward and jvp "
                f"disagree")
        plus = forward(xs[:i] + [x + eps * v] + xs[i + 1:])
        minus = forward(xs[:i] + [x - eps * v] + xs[i + 1:])
        for k, (t, p, m) in enumerate(zip(jv, plus, minus)):
            out = f"[{k}]" if len(jv) > 1 else ""
            _compare(report, f"J·v{what}{out}", np.asarray(t), (p - m) / (2 * eps), atol, rtol)


def _numerical_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float) -> np.ndarray:
    return numerical_jacobian(lambda v: np.array([f(v)]), x, eps).reshape(np.shape(x))


def _compare(report: GradCheckReport, what: str, analytic: np.ndarray, numeric: np.ndarray,
             atol: float, rtol: float) -> None:
    if analytic.shape != numeric.shape:
        report.problems.append(f"{what} has shape {analytic.shape}, expected {numeric.shape}")
        return
    if analytic.size == 0:
        return
    abs_err = np.abs(analytic - numeric)
    rel_err = abs_err / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), atol)
    worst = int(np.argmax(abs_err))
    index = np.unravel_index(worst, analytic.shape)
    if abs_err.flat[worst] > report.max_abs_error:
        report.max_abs_error = float(abs_err.flat[worst])
        report.where = f"{what}{[int(i) for i in index]}"
    report.max_rel_error = max(report.max_rel_error, float(rel_err.max()))
    bad = abs_err > atol + rtol * np.abs(numeric)
    if bad.any():
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), analytic.shape))
        report.problems.append(f"{what} differs at {list(i)}: the layer gives "
                               f"{analytic[i]:.6g}, finite differences {numeric[i]:.6g} "
                               f"({int(bad.sum())} of {bad.size} entries off)")
