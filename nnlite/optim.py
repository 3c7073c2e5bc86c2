"""Optimizers and gradient clipping (learning-rate schedules are in ``nnlite.schedules``,
re-exported here).

Update rules are those documented for ``torch.optim``: each optimizer's ``_update`` is its
formula on one array of parameters and its gradient, and each step runs it once per
parameter group on the group's flat store (``nnlite.flat``), so a step is a few
whole-array operations however many layers there are.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .flat import Group
from .kernels import replaceable
from .parameter import Parameter
from .schedules import (CosineAnnealingLR, LambdaLR, LRScheduler, StepLR,  # noqa: F401
                        WarmupCosineLR)
from .validate import check_flag, check_number


#: Adam updates the flat arrays in blocks of this many values (1 MiB of float32 each), so
#: that a model larger than the cache streams each array from memory once per step, not
#: once per pass. A smaller model is one block.
BLOCK = 1 << 18


class Optimizer:
    """Base class: ``step()`` updates parameters from their gradients; ``zero_grad()``.

    ``params`` is an iterable of Parameters, or of parameter groups as in torch.optim:
    dicts ``{"params": [...], "weight_decay": 0.0, ...}`` whose entries override the
    keyword arguments for that group. Each group is one flat store, updated in a few
    whole-array operations. ``max_grad_norm`` clips the global gradient norm (over every
    group) before each step.
    """

    def __init__(self, params: Iterable[Any], lr: float, weight_decay: float = 0.0,
                 max_grad_norm: float | None = None, **hyper: Any):
        name = type(self).__name__
        specs = list(params)
        if specs and all(isinstance(s, dict) for s in specs):
            specs = [dict(s) for s in specs]
        else:
            specs = [{"params": specs}]
        self.defaults = {"lr": lr, "weight_decay": weight_decay, **hyper}
        self._check_hyper(dict(self.defaults))
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for i, spec in enumerate(specs):
            if "params" not in spec:
                raise ValueError(f"{name}: parameter group {i} has no 'params'")
            unknown = set(spec) - set(self.defaults) - {"params", "initial_lr"}
            if unknown:
                raise ValueError(f"{name}: parameter group {i} has unknown settings "
                                 f"{sorted(unknown)}; {name} takes {sorted(self.defaults)}")
            group = {**self.defaults, **spec}
            group["params"] = list({id(p): p for p in group["params"]}.values())
            if not group["params"]:
                raise ValueError(f"{name}: got an empty parameter list")
            if not all(isinstance(p, Parameter) for p in group["params"]):
                raise ValueError(f"{name}: expects Parameters, e.g. model.parameters()")
            if any(id(p) in seen for p in group["params"]):
                raise ValueError(f"{name}: a parameter appears in more than one group")
            seen.update(id(p) for p in group["params"])
            self._check_hyper(group)
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        if max_grad_norm is not None:
            _positive(self, "max_grad_norm", max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.steps = 0
        self._groups = [Group(g) for g in self.param_groups]
        for group in self._groups:  # zeros until the first step, as torch's empty state
            for name in self.group_state_names(group.hyper):
                group.buffer(name)
        dtypes = {g.store.dtype for g in self._groups}
        if len(dtypes) > 1:
            raise ValueError(f"optimizer: parameter groups have different dtypes "
                             f"({', '.join(sorted(map(str, dtypes)))}); convert the model with "
                             f"model.astype(...) first")
        self.dtype = dtypes.pop()

    #: The state arrays each group keeps once a step is taken (torch.optim's names), and
    #: those of them that are never negative.
    state_names: tuple[str, ...] = ()
    nonnegative: tuple[str, ...] = ()

    def _check_hyper(self, group: dict[str, Any]) -> None:
        """Raise ValueError for a group's hyper-parameter out of range (subclasses add theirs)."""
        _positive(self, "lr", group["lr"])
        check_number(type(self).__name__, "weight_decay", group["weight_decay"], low=0)

    def group_state_names(self, hyper: dict[str, Any]) -> tuple[str, ...]:
        """The state arrays a group with these hyper-parameters keeps after a step."""
        return self.state_names

    @property
    def lr(self) -> float:
        """The learning rate of the first group; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = value

    @property
    def initial_lr(self) -> float:
        return self.param_groups[0]["initial_lr"]

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Every state array by name (``"i/name"`` for group i when there are several)."""
        if len(self._groups) == 1:
            return self._groups[0].state
        return {f"{i}/{k}": v for i, g in enumerate(self._groups) for k, v in g.state.items()}

    def zero_grad(self) -> None:
        """Mark every gradient as zero; the zeros are written lazily (see Parameter)."""
        for p in self.params:
            p.zero_grad()

    def step(self) -> None:
        grads = [group.store.gradient() for group in self._groups]
        if self.max_grad_norm is not None:
            norm = math.sqrt(sum(float(np.dot(g, g)) for g in grads))
            if norm > self.max_grad_norm:
                for g in grads:
                    g *= self.max_grad_norm / (norm + 1e-6)
        self.steps += 1
        for group, grad in zip(self._groups, grads):
            self._update(group, group.store.data, grad)

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def _decayed(self, group: Group, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """g + weight_decay · p (L2 coupled into the gradient), without touching .grad."""
        decay = group.hyper["weight_decay"]
        if not decay:
            return g
        out = group.buffer("_decayed_grad")
        np.multiply(p, decay, out=out)
        out += g
        return out

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this optimizer over the same parameters."""
        return {**self.defaults, "max_grad_norm": self.max_grad_norm}

    def group_settings(self) -> list[dict[str, Any]]:
        """Each group's hyper-parameters (without its parameters), for checkpoints."""
        return [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer's state, as flat arrays, for checkpoints."""
        return {k: v for k, v in self.state.items()
                if self.steps and not k.split("/")[-1].startswith("_")}

    def load_state(self, arrays: dict[str, np.ndarray], steps: int,
                   initial_lr: float | list[float] | None = None) -> None:
        """Take the state a checkpoint holds: after ``steps`` > 0 steps exactly the arrays
        ``group_state_names`` lists per group ("i/name" when there are several), each
        flat, of the optimizer's dtype, finite (and >= 0 where ``nonnegative``); after
        none, no arrays. Anything else is a ValueError naming the entry, before any
        change."""
        name = type(self).__name__
        steps = check_number(name, "steps", steps, integer=True, low=0, high=2 ** 53)
        expected = {}
        for i, group in enumerate(self._groups):
            prefix = f"{i}/" if len(self._groups) > 1 else ""
            for state in (self.group_state_names(group.hyper) if steps else ()):
                expected[prefix + state] = group, state
        for key in sorted(set(arrays) - set(expected)):
            raise ValueError(f"{name}: state {key!r} is not one {name} keeps" +
                             (" before its first step (steps is 0)" if not steps else ""))
        for key in sorted(set(expected) - set(arrays)):
            raise ValueError(f"{name}: state {key!r} is missing ({steps} steps taken)")
        for key, (group, state) in expected.items():
            value, size = arrays[key], group.store.data.size
            if value.shape != (size,) or value.dtype != self.dtype:
                raise ValueError(f"{name}: state {key!r} is {value.dtype} of shape "
                                 f"{value.shape}; its parameters need {self.dtype} of shape "
                                 f"({size},)")
            if not np.isfinite(value).all() or (state in self.nonnegative and
                                                (value < 0).any()):
                kind = "finite values >= 0" if state in self.nonnegative else "finite values"
                raise ValueError(f"{name}: state {key!r} must hold {kind}")
        for key, (group, state) in expected.items():
            group.buffer(state)[...] = arrays[key]
        self.steps = steps
        if initial_lr is not None:
            values = initial_lr if isinstance(initial_lr, list) else [initial_lr] * len(
                self.param_groups)
            for group, value in zip(self.param_groups, values):
                group["initial_lr"] = float(value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        groups = f", groups={len(self.param_groups)}" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}({args}{groups})"


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
        betas = group["betas"]
        if not (isinstance(betas, (list, tuple)) and len(betas) == 2):
            raise ValueError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got "
                             f"{betas!r}")
        group["betas"] = tuple(check_number(type(self).__name__, "betas", b, low=0, high=1,
                                            open_high=True) for b in betas)
        _positive(self, "eps", group["eps"])

    def _update(self, group: Group, p: np.ndarray, g: np.ndarray) -> None:
        h = group.hyper
        (b1, b2), lr, t = h["betas"], h["lr"], self.steps
        if h["weight_decay"]:  # AdamW decays the weights, Adam adds λθ to the gradient
            if self.decoupled:
                p *= 1 - lr * h["weight_decay"]
            else:
                g = self._decayed(group, p, g)
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
        _positive(self, "eps", group["eps"])

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


def clip_grad_norm_(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``;
    return the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``)."""
    params = list(params)
    norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    if norm > max_norm:
        for p in params:
            p.grad *= max_norm / (norm + 1e-6)
    return norm


def _positive(owner: object, name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and
            math.isfinite(value) and value > 0):
        raise ValueError(f"{type(owner).__name__}: {name} must be a positive number, "
                         f"got {value!r}")
