"""Checking tools: Jacobians built on request, and gradient checks by finite differences.

Training never builds a Jacobian: each backward is a vector-Jacobian product.
These tools build J both ways — from the layer's own VJPs, one output
coordinate at a time, and from central differences — so a layer's backward
can be compared with the truth.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .layer import Layer


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


def jacobian(layer: Layer, x: np.ndarray | Sequence[np.ndarray]
             ) -> np.ndarray | list[np.ndarray]:
    """∂y/∂x of shape (y.size, x.size), row i being the VJP eᵢ · J from ``layer.backward``.

    For a layer with several inputs, ``x`` is a list and the result one Jacobian per
    input, ∂y/∂xₖ; with several outputs, y is all of them flattened and joined.
    Parameter gradients are left as they were.
    """
    multi_in = isinstance(x, (list, tuple))
    saved = [p.grad.copy() for p in layer.parameters()]
    try:
        y = layer.forward(list(x) if multi_in else x)
        multi_out = isinstance(y, (list, tuple))
        outs = list(y) if multi_out else [y]
        rows: list[list[np.ndarray]] = [[] for _ in (x if multi_in else [x])]
        for k, out in enumerate(outs):
            for i in range(out.size):
                es = [np.zeros(o.shape, o.dtype) for o in outs]
                es[k].reshape(-1)[i] = 1
                dx = layer.backward(es if multi_out else es[0])
                for r, d in zip(rows, dx if multi_in else [dx]):
                    r.append(np.array(d).reshape(-1))
        sizes = [np.size(v) for v in (x if multi_in else [x])]
        jacobians = [np.stack(r) if r else np.zeros((0, n)) for r, n in zip(rows, sizes)]
        return jacobians if multi_in else jacobians[0]
    finally:
        for p, g in zip(layer.parameters(), saved):
            p.grad[...] = g


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
    same dL/dx and adds the same parameter gradients again. The layer itself
    is not touched: a float64 copy is checked. Random layers (dropout) draw
    the same numbers on every call.
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
    params = dict(layer.named_parameters())
    for p in params.values():
        p.grad[...] = 0
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

    def loss(inputs: list[np.ndarray]) -> float:
        return float(sum(np.vdot(g, y) for g, y in zip(gs, forward(inputs))))

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
    report.ok = not report.problems
    return report


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
        report.problems.append(f"{what} differs at {list(i)}: backward gives "
                               f"{analytic[i]:.6g}, finite differences {numeric[i]:.6g} "
                               f"({int(bad.sum())} of {bad.size} entries off)")
