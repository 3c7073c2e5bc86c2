"""Optimizers, learning-rate schedules and gradient clipping.

Update rules are those documented for ``torch.optim``. An optimizer keeps all
its parameters in one contiguous array (``Parameter.data`` and ``.grad``
become views into it), so a step is a few whole-array operations however
many layers there are. Parameters stay the truth: if a user assigns a new
array to ``param.data`` or ``param.grad``, or another optimizer takes the
parameters over, the next step copies the new values in first.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .callbacks import Callback
from .layer import Parameter


#: Adam updates the flat arrays in blocks of this many values (1 MiB of float32 each), so
#: that a model larger than the cache streams each array from memory once per step, not
#: once per pass. A smaller model is one block.
BLOCK = 1 << 18


class _FlatStore:
    """One contiguous data array and one grad array with a view per parameter."""

    def __init__(self, params: list[Parameter]):
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(f"optimizer: parameters have different dtypes "
                             f"({', '.join(sorted(map(str, dtypes)))}); convert the model with "
                             f"model.astype(...) first")
        self.params = params
        self.dtype = dtypes.pop()
        self.shapes = [p.data.shape for p in params]
        total = sum(p.data.size for p in params)
        self.data = np.empty(total, self.dtype)
        self.grad = np.empty(total, self.dtype)
        self.data_views, self.grad_views = [], []
        offset = 0
        for p, shape in zip(params, self.shapes):
            n = p.data.size
            self.data_views.append(self.data[offset:offset + n].reshape(shape))
            self.grad_views.append(self.grad[offset:offset + n].reshape(shape))
            offset += n
        for i in range(len(params)):
            self._adopt(i, data=True, grad=True)

    def _adopt(self, i: int, data: bool, grad: bool) -> None:
        p, shape = self.params[i], self.shapes[i]
        for wanted, name, view in ((data, "data", self.data_views[i]),
                                   (grad, "grad", self.grad_views[i])):
            if not wanted:
                continue
            value = getattr(p, name)
            if np.shape(value) != shape:
                raise ValueError(f"optimizer: parameter {i} changed shape from {shape} to "
                                 f"{np.shape(value)}; build a new optimizer for the new model")
            if np.asarray(value).dtype != self.dtype:
                raise ValueError(f"optimizer: parameter {i} changed dtype from {self.dtype} to "
                                 f"{np.asarray(value).dtype} (model.astype?); build a new "
                                 f"optimizer for the converted model")
            view[...] = value
            setattr(p, name, view)

    def sync(self) -> None:
        """Copy in any array a user (or another optimizer) put on a parameter."""
        for i, p in enumerate(self.params):
            stale_data = p.data is not self.data_views[i]
            stale_grad = p._grad is not self.grad_views[i]
            if stale_data or stale_grad:
                self._adopt(i, stale_data, stale_grad)

    def zero_grad(self) -> None:
        """Mark every gradient as zero; the zeros are written lazily (see Parameter)."""
        for p in self.params:
            p.zero_grad()

    def grads(self) -> np.ndarray:
        """The flat gradient array, with any pending zeros written."""
        for p in self.params:
            if p._zero_pending:  # a parameter backward did not reach
                p.write_pending_zeros()
        return self.grad


class Optimizer:
    """Base class: ``step()`` updates parameters from their gradients; ``zero_grad()``.

    ``max_grad_norm`` clips the global gradient norm before every step.
    """

    def __init__(self, params: Iterable[Parameter], lr: float, weight_decay: float = 0.0,
                 max_grad_norm: float | None = None):
        unique = list({id(p): p for p in params}.values())
        if not unique:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not all(isinstance(p, Parameter) for p in unique):
            raise ValueError(f"{type(self).__name__}: expects Parameters, e.g. "
                             f"model.parameters()")
        _positive(self, "lr", lr)
        if weight_decay < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got "
                             f"{weight_decay}")
        if max_grad_norm is not None:
            _positive(self, "max_grad_norm", max_grad_norm)
        self.params = unique
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.max_grad_norm = max_grad_norm
        self.initial_lr = self.lr
        self.steps = 0
        self._store = _FlatStore(unique)
        self.state: dict[str, np.ndarray] = {}
        self._scratch = np.empty_like(self._store.data)

    def zero_grad(self) -> None:
        self._store.zero_grad()

    def __getstate__(self) -> dict[str, Any]:
        # Views into the flat store do not survive pickling or deepcopy: rebuild them.
        return {k: v for k, v in self.__dict__.items() if k not in ("_store", "_scratch")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._store = _FlatStore(self.params)
        self._scratch = np.empty_like(self._store.data)

    def step(self) -> None:
        store = self._store
        store.sync()
        grad = store.grads()
        if self.max_grad_norm is not None:
            norm = math.sqrt(float(np.dot(grad, grad)))
            if norm > self.max_grad_norm:
                grad *= self.max_grad_norm / (norm + 1e-6)
        self.steps += 1
        self._update(store.data, grad)

    def _update(self, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def _buffer(self, name: str) -> np.ndarray:
        if name not in self.state:
            self.state[name] = np.zeros_like(self._store.data)
        return self.state[name]

    def _decayed(self, p: np.ndarray, g: np.ndarray) -> np.ndarray:
        """g + weight_decay · p (L2 coupled into the gradient), without touching .grad."""
        if not self.weight_decay:
            return g
        out = self._buffer("_decayed_grad")
        np.multiply(p, self.weight_decay, out=out)
        out += g
        return out

    def get_config(self) -> dict[str, Any]:
        """Hyper-parameters that rebuild this optimizer over the same parameters."""
        return {"lr": self.lr, "weight_decay": self.weight_decay,
                "max_grad_norm": self.max_grad_norm}

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The optimizer's state, as flat arrays, for checkpoints."""
        return {k: v for k, v in self.state.items() if not k.startswith("_")}

    def load_state(self, arrays: dict[str, np.ndarray], steps: int,
                   initial_lr: float | None = None) -> None:
        for name, value in arrays.items():
            if value.shape != self._store.data.shape:
                raise ValueError(f"{type(self).__name__}: state {name!r} has {value.size} "
                                 f"values, the parameters have {self._store.data.size}")
            self._buffer(name)[...] = value
        self.steps = int(steps)
        if initial_lr is not None:
            self.initial_lr = float(initial_lr)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """g ← grad + λθ;  with momentum μ: b ← μb + g (b = g at the first step),
    g ← g + μb if nesterov else b;  θ ← θ − lr·g."""

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm)
        if momentum < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {momentum}")
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)

    def _update(self, p: np.ndarray, g: np.ndarray) -> None:
        g = self._decayed(p, g)
        if self.momentum:
            b = self._buffer("momentum_buffer")
            if self.steps == 1:
                b[...] = g
            else:
                b *= self.momentum
                b += g
            if self.nesterov:
                np.multiply(b, self.momentum, out=self._scratch)
                g = np.add(g, self._scratch, out=self._scratch)
            else:
                g = b
        p -= np.multiply(g, self.lr, out=self._scratch)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  with t the step count,
    θ ← θ − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).  Weight decay is L2 (g ← g + λθ).

    The state holds m/(1−β₁) and v/(1−β₂), which update in fewer passes over memory
    (m' ← β₁m' + g); the constants are folded into the step, so the result is the same.
    """

    decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {betas}")
        self.betas, self.eps = (float(betas[0]), float(betas[1])), float(eps)

    def _update(self, p: np.ndarray, g: np.ndarray) -> None:
        b1, b2 = self.betas
        t = self.steps
        if self.decoupled:
            if self.weight_decay:
                p *= 1 - self.lr * self.weight_decay
        else:
            g = self._decayed(p, g)
        m, v, tmp = self._buffer("exp_avg"), self._buffer("exp_avg_sq"), self._scratch
        # lr/(1-b1ᵗ)·m_torch/(√v_torch/√(1-b2ᵗ) + ε) = step · m/(√v + eps_hat), with
        step = self.lr * (1 - b1) / (1 - b1 ** t) * math.sqrt((1 - b2 ** t) / (1 - b2))
        eps_hat = self.eps * math.sqrt((1 - b2 ** t) / (1 - b2))
        for i in range(0, p.size, BLOCK):
            pb, gb, mb, vb, tb = (a[i:i + BLOCK] for a in (p, g, m, v, tmp))
            mb *= b1                       # m = m_torch / (1 - b1)
            mb += gb
            np.multiply(gb, gb, out=tb)    # v = v_torch / (1 - b2)
            vb *= b2
            vb += tb
            np.sqrt(vb, out=tb)
            tb += eps_hat
            np.divide(mb, tb, out=tb)
            tb *= step
            pb -= tb

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "betas": list(self.betas), "eps": self.eps}


class AdamW(Adam):
    """Adam with decoupled weight decay: θ ← θ(1 − lr·λ) before the Adam step."""

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, max_grad_norm: float | None = None):
        super().__init__(params, lr, betas, eps, weight_decay, max_grad_norm=max_grad_norm)


class RMSprop(Optimizer):
    """v ← αv + (1−α)g²;  with momentum μ: b ← μb + g/(√v + ε), θ ← θ − lr·b;
    else θ ← θ − lr·g/(√v + ε).  Weight decay is L2 (g ← g + λθ)."""

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, momentum: float = 0.0, weight_decay: float = 0.0, *,
                 max_grad_norm: float | None = None):
        super().__init__(params, lr, weight_decay, max_grad_norm)
        if not 0 <= alpha < 1:
            raise ValueError(f"RMSprop: alpha must lie in [0, 1), got {alpha}")
        self.alpha, self.eps, self.momentum = float(alpha), float(eps), float(momentum)

    def _update(self, p: np.ndarray, g: np.ndarray) -> None:
        g = self._decayed(p, g)
        v, tmp = self._buffer("square_avg"), self._scratch
        np.multiply(g, g, out=tmp)
        tmp *= 1 - self.alpha
        v *= self.alpha
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(g, tmp, out=tmp)  # the step g / (√v + ε)
        if self.momentum:
            b = self._buffer("momentum_buffer")
            b *= self.momentum
            b += tmp
            np.multiply(b, self.lr, out=tmp)
        else:
            tmp *= self.lr
        p -= tmp

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha": self.alpha, "eps": self.eps,
                "momentum": self.momentum}


def clip_grad_norm_(params: Iterable[Parameter], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``;
    return the norm before clipping (as ``torch.nn.utils.clip_grad_norm_``)."""
    params = list(params)
    norm = math.sqrt(sum(float(np.vdot(p.grad, p.grad)) for p in params))
    if norm > max_norm:
        for p in params:
            p.grad *= max_norm / (norm + 1e-6)
    return norm


class LRScheduler(Callback):
    """Sets ``optimizer.lr`` from the epoch count; ``step()`` once per epoch.

    It is also a Callback: pass it to ``fit(callbacks=[...])`` and it steps itself.
    """

    def __init__(self, optimizer: Optimizer):
        super().__init__()
        self.optimizer = optimizer
        self.base_lr = optimizer.initial_lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> None:
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.last_epoch = self.model.initial_epoch if self.model is not None else 0
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.step()


class StepLR(LRScheduler):
    """lr = base_lr · γ^⌊epoch / step_size⌋."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        self.step_size, self.gamma = int(step_size), float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = η_min + ½(base_lr − η_min)(1 + cos(π · epoch / T_max))."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        self.T_max, self.eta_min = int(T_max), float(eta_min)

    def lr_at(self, epoch: int) -> float:
        return self.eta_min + 0.5 * (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * epoch / self.T_max))


def _positive(owner: object, name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and value > 0):
        raise ValueError(f"{type(owner).__name__}: {name} must be a positive number, "
                         f"got {value!r}")
