"""Checking tools: Jacobians built on request, and gradient checks by finite differences.

Training never builds a Jacobian: each backward is a vector-Jacobian product.
These tools build J both ways — from the layer's own VJPs, one output
coordinate at a time, and from central differences — so a layer's backward
can be compared with the truth.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

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


def jacobian(layer: Layer, x: np.ndarray) -> np.ndarray:
    """∂y/∂x of shape (y.size, x.size), row i being the VJP eᵢ · J from ``layer.backward``.

    Parameter gradients are left as they were.
    """
    saved = [p.grad.copy() for p in layer.parameters()]
    try:
        y = layer.forward(x)
        rows = []
        for i in range(y.size):
            e = np.zeros(y.size, y.dtype)
            e[i] = 1
            rows.append(np.array(layer.backward(e.reshape(y.shape))).reshape(-1))
        return np.stack(rows) if rows else np.zeros((0, np.size(x)))
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


def check_layer(layer: Layer, x: np.ndarray, *, eps: float = 1e-6, atol: float = 1e-5,
                rtol: float = 1e-4, seed: int = 0) -> GradCheckReport:
    """Compare ``layer``'s backward with finite differences, in float64.

    With a fixed random upstream gradient g, L(x, θ) = ⟨g, f(x; θ)⟩; the layer's
    backward(g) must equal ∂L/∂x and add ∂L/∂θ into every parameter's grad.
    Also checked: backward leaves its inputs alone, a second backward gives the
    same dL/dx and adds the same parameter gradients again. The layer itself
    is not touched: a float64 copy is checked. Random layers (dropout) draw
    the same numbers on every call.
    """
    layer = copy.deepcopy(layer).astype(np.float64)
    x = np.array(x, dtype=np.float64)
    report = GradCheckReport(layer=repr(layer))

    def forward(inp: np.ndarray) -> np.ndarray:
        for m in layer.modules():
            m.rng = np.random.default_rng(seed)
        return layer.forward(inp)

    y = forward(x)
    g = np.random.default_rng(seed + 1).standard_normal(y.shape)
    params = dict(layer.named_parameters())
    for p in params.values():
        p.grad[...] = 0
    x_before, g_before = x.copy(), g.copy()
    dx = layer.backward(g)
    grads = {name: p.grad.copy() for name, p in params.items()}
    if not np.array_equal(x, x_before) or not np.array_equal(g, g_before):
        report.problems.append("backward modified its input or the upstream gradient")
    dx2 = layer.backward(g)
    if not np.allclose(dx2, dx, rtol=1e-12, atol=0):
        report.problems.append("a second backward gave a different dL/dx")
    for name, p in params.items():
        if not np.allclose(p.grad, 2 * grads[name], rtol=1e-10, atol=1e-12):
            report.problems.append(f"a second backward did not add the same gradient to "
                                   f"{name!r} (backward must accumulate into .grad)")
        p.grad[...] = 0

    def loss_of_x(inp: np.ndarray) -> float:
        return float(np.vdot(g, forward(inp)))

    _compare(report, "dL/dx", np.asarray(dx), _numerical_grad(loss_of_x, x, eps), atol, rtol)
    for name, p in params.items():
        def loss_of_p(value: np.ndarray, p=p) -> float:
            keep = p.data
            p.data = value
            try:
                return float(np.vdot(g, forward(x)))
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
