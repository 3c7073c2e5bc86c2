"""Optimizers and gradient clipping; the learning-rate schedules of
``nnlite.training.schedules`` (callbacks of the loop) are here too, loaded on first use.

Update rules are those documented for ``torch.optim``: each optimizer's ``_update`` is its
formula on one array of parameters and its gradient, and each step runs it once per
parameter group on the group's flat store (``nnlite.core.optimizer``), so a step is a few
whole-array operations however many layers there are.
May import: core, kernels, training.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .core import attach
from .core.door import check_flag, check_number, quote
from .core.optimizer import Group, Optimizer, positive
from .core.parameter import Parameter
from .kernels import replaceable

__getattr__, __dir__ = attach(__name__, {name: ".training.schedules" for name in (
    "LRScheduler", "StepLR", "CosineAnnealingLR", "ExponentialLR", "LambdaLR", "WarmupCosineLR",
    "OneCycleLR", "ReduceLROnPlateau")})


#: Adam updates the flat arrays in blocks of this many values (1 MiB of float32 each), so
#: that a model larger than the cache streams each array from memory once per step, not
#: once per pass. A smaller model is one block.
BLOCK = 1 << 18


class SGD(Optimizer):
    """g ← grad + λθ;  with momentum μ: b ← μb + g (b = g at the first step),
    g ← g + μb if nesterov else b;  θ ← θ − lr·g."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, momentum=momentum,
                         nesterov=nesterov)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        check_number("SGD", "momentum", group["momentum"], low=0)
        if check_flag("SGD", "nesterov", group["nesterov"]) and group["momentum"] <= 0:
            raise ValueError("SGD: nesterov momentum needs momentum > 0")

    def group_state_names(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if hyper["momentum"] else ()

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h = group.hyper
        sgd_update(p, self._decayed(group, p, g), group.state.get("momentum_buffer"),
                   group.scratch, h["lr"], h["momentum"], h["nesterov"], self.steps == 1)


@replaceable
def sgd_update(p: np.ndarray, g: np.ndarray, b: np.ndarray | None, scratch: np.ndarray,
               lr: float, momentum: float, nesterov: bool, first: bool) -> None:
    """One SGD step on flat arrays, in place: with momentum μ, b ← μb + g (b = g at the
    first step) and g ← g + μb if nesterov else b; then θ ← θ − lr·g."""
    if momentum:
        if first:
            b[...] = g
        else:
            b *= momentum
            b += g
        if nesterov:
            np.multiply(b, momentum, out=scratch)
            g = np.add(g, scratch, out=scratch)
        else:
            g = b
    p -= np.multiply(g, lr, out=scratch)


class Adam(Optimizer):
    """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  with t the step count,
    θ ← θ − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).  Weight decay is L2 (g ← g + λθ).
    The state holds torch's m (``exp_avg``) and v (``exp_avg_sq``).
    """

    decoupled = False
    state_names = ("exp_avg", "exp_avg_sq")
    nonnegative = ("exp_avg_sq",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, betas=betas, eps=eps)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        _check_betas(self, group)
        positive(self, "eps", group["eps"])

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h = group.hyper
        (b1, b2), lr, t = h["betas"], h["lr"], self.steps
        if h["weight_decay"]:  # AdamW decays the weights, Adam adds λθ to the gradient
            g = self._decayed(group, p, g, self.decoupled)
        # lr/(1-b1ᵗ)·m/(√v/√(1-b2ᵗ) + ε) = step · m/(√v + eps_hat), with
        step = lr / (1 - b1 ** t) * math.sqrt(1 - b2 ** t)
        eps_hat = h["eps"] * math.sqrt(1 - b2 ** t)
        m, v, tmp = group.state["exp_avg"], group.state["exp_avg_sq"], group.scratch
        adam_update(p, g, m, v, tmp, b1, b2, step, eps_hat)


@replaceable
def adam_update(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, tmp: np.ndarray,
                b1: float, b2: float, step: float, eps_hat: float) -> None:
    """One Adam step on flat arrays, in place: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g²,
    θ ← θ − step · m/(√v + eps_hat); ``tmp`` is scratch of the same size."""
    for i in range(0, p.size, BLOCK):  # a block at a time: its five arrays stay in cache
        pb, gb, mb, vb, tb = (a[i:i + BLOCK] for a in (p, g, m, v, tmp))
        mb *= b1                       # m ← β₁m + (1−β₁)g
        np.multiply(gb, 1 - b1, out=tb)
        mb += tb
        np.multiply(gb, gb, out=tb)    # v ← β₂v + (1−β₂)g²
        tb *= 1 - b2
        vb *= b2
        vb += tb
        np.sqrt(vb, out=tb)
        tb += eps_hat
        np.divide(mb, tb, out=tb)
        tb *= step
        pb -= tb


class AdamW(Adam):
    """Adam with decoupled weight decay: θ ← θ(1 − lr·λ) before the Adam step."""

    decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, max_grad_norm=max_grad_norm)


class RMSprop(Optimizer):
    """v ← αv + (1−α)g²;  with momentum μ: b ← μb + g/(√v + ε), θ ← θ − lr·b;
    else θ ← θ − lr·g/(√v + ε).  Weight decay is L2 (g ← g + λθ)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, momentum: float = 0.0, weight_decay: float = 0.0, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, alpha=alpha, eps=eps,
                         momentum=momentum)

    nonnegative = ("square_avg",)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        check_number("RMSprop", "alpha", group["alpha"], low=0, high=1, open_high=True)
        check_number("RMSprop", "momentum", group["momentum"], low=0)
        positive(self, "eps", group["eps"])

    def group_state_names(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        return ("square_avg",) + (("momentum_buffer",) if hyper["momentum"] else ())

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h = group.hyper
        rmsprop_update(p, self._decayed(group, p, g), group.state["square_avg"],
                       group.state.get("momentum_buffer"), group.scratch, h["lr"],
                       h["alpha"], h["eps"], h["momentum"])


@replaceable
def rmsprop_update(p: np.ndarray, g: np.ndarray, v: np.ndarray, b: np.ndarray | None,
                   tmp: np.ndarray, lr: float, alpha: float, eps: float,
                   momentum: float) -> None:
    """One RMSprop step on flat arrays, in place: v ← αv + (1−α)g²; with momentum μ,
    b ← μb + g/(√v + ε) and θ ← θ − lr·b, else θ ← θ − lr·g/(√v + ε)."""
    np.multiply(g, g, out=tmp)
    tmp *= 1 - alpha
    v *= alpha
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)  # the step g / (√v + ε)
    if momentum:
        b *= momentum
        b += tmp
        np.multiply(b, lr, out=tmp)
    else:
        tmp *= lr
    p -= tmp


class Adagrad(Optimizer):
    """g ← grad + λθ;  s ← s + g² (s starts at ``initial_accumulator_value``);
    θ ← θ − lr/(1 + (t − 1)·lr_decay) · g/(√s + ε), t the step count."""

    state_names = ("sum",)
    nonnegative = ("sum",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, lr_decay=lr_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)
        for group in self._groups:
            group.state["sum"][...] = group.hyper["initial_accumulator_value"]

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        check_number("Adagrad", "lr_decay", group["lr_decay"], low=0)
        check_number("Adagrad", "initial_accumulator_value",
                     group["initial_accumulator_value"], low=0)
        positive(self, "eps", group["eps"])

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h, s, step = group.hyper, group.state["sum"], group.scratch
        g = self._decayed(group, p, g)
        clr = h["lr"] / (1 + (self.steps - 1) * h["lr_decay"])
        s += g * g                                  # s ← s + g²
        np.sqrt(s, out=step)
        step += h["eps"]
        np.divide(g, step, out=step)                # g/(√s + ε)
        step *= clr
        p -= step


class Adadelta(Optimizer):
    """g ← grad + λθ;  v ← ρv + (1−ρ)g²;  Δ ← √(u + ε)/√(v + ε) · g;  u ← ρu + (1−ρ)Δ²;
    θ ← θ − lr·Δ.  The state holds torch's v (``square_avg``) and u (``acc_delta``)."""

    state_names = ("square_avg", "acc_delta")
    nonnegative = ("square_avg", "acc_delta")

    def __init__(self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9,
                 eps: float = 1e-6, weight_decay: float = 0.0, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, rho=rho, eps=eps)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        check_number("Adadelta", "rho", group["rho"], low=0, high=1)
        positive(self, "eps", group["eps"])

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h, delta = group.hyper, group.scratch
        rho, eps = h["rho"], h["eps"]
        v, u = group.state["square_avg"], group.state["acc_delta"]
        g = self._decayed(group, p, g)
        v *= rho                                    # v ← ρv + (1−ρ)g²
        v += (1 - rho) * (g * g)
        np.add(u, eps, out=delta)                   # Δ ← √(u + ε)/√(v + ε) · g
        np.sqrt(delta, out=delta)
        delta /= np.sqrt(v + eps)
        delta *= g
        u *= rho                                    # u ← ρu + (1−ρ)Δ²
        u += (1 - rho) * (delta * delta)
        delta *= h["lr"]
        p -= delta


class NAdam(Optimizer):
    """Adam with Nesterov momentum, as ``torch.optim.NAdam``: with t the step count,
    μₜ = β₁(1 − ½·0.96^(t·ψ)) (ψ = ``momentum_decay``) and Πₜ = μ₁⋯μₜ;
    m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  d = √(v/(1−β₂ᵗ)) + ε;
    θ ← θ − lr(1 − μₜ)/(1 − Πₜ) · g/d − lr·μₜ₊₁/(1 − Πₜμₜ₊₁) · m/d.
    Weight decay is L2, or decoupled (θ ← θ(1 − lr·λ)) with ``decoupled_weight_decay``."""

    state_names = ("exp_avg", "exp_avg_sq")
    nonnegative = ("exp_avg_sq",)

    def __init__(self, params: Iterable[Any], lr: float = 2e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, betas=betas, eps=eps,
                         momentum_decay=momentum_decay,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        _check_betas(self, group)
        positive(self, "eps", group["eps"])
        check_number("NAdam", "momentum_decay", group["momentum_decay"], low=0)
        check_flag("NAdam", "decoupled_weight_decay", group["decoupled_weight_decay"])

    def _mu(self, group: Group, t: int) -> float:
        return group.hyper["betas"][0] * (1 - 0.5 * 0.96 ** (t * group.hyper["momentum_decay"]))

    def _product(self, group: Group, t: int) -> float:
        """Πₜ = μ₁⋯μₜ, carried from step to step (recomputed once after a resume)."""
        last, value = getattr(group, "mu_product", (0, 1.0))
        if last != t - 1:
            value = math.prod(self._mu(group, k) for k in range(1, t))
        group.mu_product = (t, value * self._mu(group, t))
        return group.mu_product[1]

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h, t, d = group.hyper, self.steps, group.scratch
        (b1, b2), lr = h["betas"], h["lr"]
        g = self._decayed(group, p, g, h["decoupled_weight_decay"])
        mu, mu_next = self._mu(group, t), self._mu(group, t + 1)
        product = self._product(group, t)
        m, v = group.state["exp_avg"], group.state["exp_avg_sq"]
        m += (1 - b1) * (g - m)                     # m ← β₁m + (1−β₁)g, as torch's lerp
        v *= b2
        v += (1 - b2) * (g * g)
        np.divide(v, 1 - b2 ** t, out=d)            # d = √(v/(1−β₂ᵗ)) + ε
        np.sqrt(d, out=d)
        d += h["eps"]
        p += (-lr * (1 - mu) / (1 - product)) * g / d
        p += (-lr * mu_next / (1 - product * mu_next)) * m / d


class RAdam(Optimizer):
    """Rectified Adam, as ``torch.optim.RAdam``: m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    ρ∞ = 2/(1−β₂) − 1, ρₜ = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ);  m̂ = m/(1−β₁ᵗ).  While ρₜ ≤ 5,
    θ ← θ − lr·m̂; then, with r = √((ρₜ−4)(ρₜ−2)ρ∞/((ρ∞−4)(ρ∞−2)ρₜ)),
    θ ← θ − lr·m̂ · √(1−β₂ᵗ)/(√v + ε) · r.  Weight decay as NAdam's."""

    state_names = ("exp_avg", "exp_avg_sq")
    nonnegative = ("exp_avg_sq",)

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm, betas=betas, eps=eps,
                         decoupled_weight_decay=decoupled_weight_decay)

    def _check_hyper(self, group: dict[str, Any]) -> None:
        super()._check_hyper(group)
        _check_betas(self, group)
        positive(self, "eps", group["eps"])
        check_flag("RAdam", "decoupled_weight_decay", group["decoupled_weight_decay"])

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h, t, step = group.hyper, self.steps, group.scratch
        (b1, b2), lr = h["betas"], h["lr"]
        g = self._decayed(group, p, g, h["decoupled_weight_decay"])
        m, v = group.state["exp_avg"], group.state["exp_avg_sq"]
        m += (1 - b1) * (g - m)                     # as torch's lerp
        v *= b2
        v += (1 - b2) * (g * g)
        np.divide(m, 1 - b1 ** t, out=step)         # m̂
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        step *= lr
        if rho_t > 5:                               # the variance is tractable: rectify
            r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf /
                          ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            step *= math.sqrt(1 - b2 ** t) / (np.sqrt(v) + h["eps"])
            step *= r
        p -= step


def _check_betas(owner: Optimizer, group: dict[str, Any]) -> None:
    """Two numbers in [0, 1), stored as a tuple."""
    name, betas = type(owner).__name__, group["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
        raise ValueError(f"{name}: betas must be two numbers in [0, 1), got {quote(betas)}")
    group["betas"] = tuple(check_number(name, "betas", b, low=0, high=1, open_high=True)
                           for b in betas)


def clip_grad_norm_(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``;
    return the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``)."""
    params = list(params)
    norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    if norm > max_norm:
        for p in params:
            p.grad *= max_norm / (norm + 1e-6)
    return norm
