"""The optimizer contract: parameter groups over flat stores, the state a checkpoint keeps,
and the step that runs an update rule once per group (the rules are in ``nnlite.optim``).

A group's flat store is one contiguous array of its parameters' values and one of their
gradients; ``Parameter.data`` and ``.grad`` become views into it. An update rule
(``Optimizer._update``) reads as if for one parameter, and runs once per group on the
flat arrays: a few whole-array operations however many layers there are. Parameters stay
the truth: before each step ``FlatStore.gradient`` visits each parameter once, copying in
an array a user (or another optimizer) put on it and writing the lazy zeros of a gradient
backward did not reach.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Iterator

import numpy as np

from .door import check_number, quote
from .parameter import Parameter


class FlatStore:
    """One contiguous data array and one grad array with a view per parameter."""

    def __init__(self, params: list[Parameter], dtype: np.dtype):
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(f"optimizer: parameters have different dtypes "
                             f"({', '.join(sorted(map(str, dtypes)))}); convert the model with "
                             f"model.astype(...) first")
        self.params = params
        self.dtype = dtypes.pop() if dtypes else dtype
        self.shapes = [p.data.shape for p in params]
        total = sum(p.data.size for p in params)
        self.data = np.empty(total, self.dtype)
        self.grad = np.empty(total, self.dtype)
        self.data_views, self.grad_views = [], []
        self.where: dict[int, slice] = {}  # id of each parameter -> its slice of the store
        offset = 0
        for p, shape in zip(params, self.shapes):
            n = p.data.size
            self.where[id(p)] = slice(offset, offset + n)
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

    def gradient(self) -> np.ndarray:
        """The flat gradient, after copying in any array a user (or another optimizer) put
        on a parameter, and writing the zeros of any gradient backward did not reach."""
        for i, p in enumerate(self.params):
            if p.data is not self.data_views[i] or p._grad is not self.grad_views[i]:
                self._adopt(i, data=p.data is not self.data_views[i],
                            grad=p._grad is not self.grad_views[i])
            if p._zero_pending:  # a gradient backward did not reach
                p.write_pending_zeros()
        return self.grad


class Group:
    """One parameter group: its hyper-parameters (the dict in ``param_groups``), one flat
    store of its trainable parameters (``requires_grad``), its state arrays and a scratch
    array of the same size. Built again when a layer is frozen or unfrozen, it keeps the
    state of the parameters that stay (``previous``); a parameter that joins starts from
    zeros, as a parameter's state does in torch.optim when it first has a gradient."""

    def __init__(self, hyper: dict[str, Any], previous: Group | None = None):
        self.hyper = hyper
        self.store = FlatStore([p for p in hyper["params"] if p.requires_grad],
                               hyper["params"][0].data.dtype)
        self.state: dict[str, np.ndarray] = {}
        self.scratch = np.empty_like(self.store.data)
        for name, old in (previous.state.items() if previous is not None else ()):
            new = self.buffer(name)
            for p in self.store.params:
                if id(p) in previous.store.where:
                    new[self.store.where[id(p)]] = old[previous.store.where[id(p)]]

    def buffer(self, name: str) -> np.ndarray:
        if name not in self.state:
            self.state[name] = np.zeros_like(self.store.data)
        return self.state[name]

    def __getstate__(self) -> dict[str, Any]:
        # Views into the flat store do not survive pickling or deepcopy: rebuild them.
        return {"hyper": self.hyper, "state": self.state}

    def __setstate__(self, saved: dict[str, Any]) -> None:
        self.__init__(saved["hyper"])
        self.state = saved["state"]


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
            group = _group(name, i, spec, self.defaults, seen)
            self._check_hyper(group)
            group.setdefault("initial_lr", group["lr"])
            self.param_groups.append(group)
        if max_grad_norm is not None:
            positive(self, "max_grad_norm", max_grad_norm)
        self.max_grad_norm = max_grad_norm
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.steps = 0
        self._freeze_count = Parameter.freeze_count
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
        positive(self, "lr", group["lr"])
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

    def gradients(self) -> list[np.ndarray]:
        """Each group's flat gradient, as ``step`` applies it (``fit(comm=...)`` sums them
        across ranks before the step)."""
        if Parameter.freeze_count != self._freeze_count:  # a layer was frozen or unfrozen
            self._regroup()
        return [group.store.gradient() for group in self._groups]

    def step(self) -> None:
        grads = self.gradients()
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

    def _regroup(self) -> None:
        """The flat stores again, over the parameters now trainable: a frozen one is left
        out (never updated), the state of those that stay is kept."""
        self._freeze_count = Parameter.freeze_count
        self._groups = [Group(g.hyper, previous=g) for g in self._groups]

    def _decayed(self, group: Group, p: np.ndarray, g: np.ndarray, decoupled: bool = False
                 ) -> np.ndarray:
        """g + weight_decay · p (L2 coupled into the gradient), without touching .grad; or,
        ``decoupled`` (AdamW's way), θ ← θ(1 − lr · weight_decay) and g unchanged."""
        decay = group.hyper["weight_decay"]
        if not decay:
            return g
        if decoupled:
            p *= 1 - group.hyper["lr"] * decay
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

    def state_arrays(self, names: dict[int, str]) -> dict[str, np.ndarray]:
        """The optimizer's state per parameter, for checkpoints: ``"{name}/{state}"`` (the
        parameter's name in ``names``, by ``id``) -> an array of the parameter's shape."""
        return {f"{names[id(p)]}/{state}": array
                for p, state, array in self._param_states()} if self.steps else {}

    def _param_states(self) -> Iterator[tuple[Parameter, str, np.ndarray]]:
        """(parameter, state name, the parameter's view of that state) of every state
        array kept after a step, for each parameter the optimizer updates."""
        for group in self._groups:
            for p in group.store.params:
                where = group.store.where[id(p)]
                for state in self.group_state_names(group.hyper):
                    yield p, state, group.buffer(state)[where].reshape(p.shape)

    def load_state(self, arrays: dict[str, np.ndarray], steps: int, names: dict[int, str],
                   initial_lr: float | list[float] | None = None) -> None:
        """Take the state a checkpoint holds, per parameter: after ``steps`` > 0 steps
        exactly the arrays ``group_state_names`` lists for each parameter it updates, as
        ``"{name}/{state}"`` (its name in ``names``, by ``id``), each of the parameter's
        shape and the optimizer's dtype, finite (and >= 0 where ``nonnegative``); after
        none, no arrays. Anything else is a ValueError naming the entry, before any
        change."""
        name = type(self).__name__
        steps = check_number(name, "steps", steps, integer=True, low=0, high=2 ** 53)
        expected = {f"{names[id(p)]}/{state}": (p, state, view)
                    for p, state, view in self._param_states()} if steps else {}
        for key in sorted(set(arrays) - set(expected)):
            raise ValueError(f"{name}: state {key!r} is not one {name} keeps" +
                             (" before its first step (steps is 0)" if not steps else ""))
        for key in sorted(set(expected) - set(arrays)):
            raise ValueError(f"{name}: state {key!r} is missing ({steps} steps taken)")
        for key, (p, state, _) in expected.items():
            value = arrays[key]
            if value.shape != p.shape or value.dtype != self.dtype:
                raise ValueError(f"{name}: state {key!r} is {value.dtype} of shape "
                                 f"{value.shape}; its parameter is {self.dtype} of shape "
                                 f"{p.shape}")
            if not np.isfinite(value).all() or (state in self.nonnegative and
                                                (value < 0).any()):
                kind = "finite values >= 0" if state in self.nonnegative else "finite values"
                raise ValueError(f"{name}: state {key!r} must hold {kind}")
        for key, (_, _, view) in expected.items():
            view[...] = arrays[key]
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


def _group(name: str, i: int, spec: dict[str, Any], defaults: dict[str, Any], seen: set[int]
           ) -> dict[str, Any]:
    """Parameter group ``i`` of optimizer ``name``: ``spec`` over the defaults, checked;
    ``seen`` holds the ids of the parameters of the groups before it, and then of its own."""
    if "params" not in spec:
        raise ValueError(f"{name}: parameter group {i} has no 'params'")
    unknown = set(spec) - set(defaults) - {"params", "initial_lr"}
    if unknown:
        raise ValueError(f"{name}: parameter group {i} has unknown settings "
                         f"{sorted(unknown)}; {name} takes {sorted(defaults)}")
    group = {**defaults, **spec}
    group["params"] = list({id(p): p for p in group["params"]}.values())
    if not group["params"]:
        raise ValueError(f"{name}: got an empty parameter list")
    if not all(isinstance(p, Parameter) for p in group["params"]):
        raise ValueError(f"{name}: expects Parameters, e.g. model.parameters()")
    if any(id(p) in seen for p in group["params"]):
        raise ValueError(f"{name}: a parameter appears in more than one group")
    seen.update(id(p) for p in group["params"])
    return group


def positive(owner: object, name: str, value: float) -> None:
    if not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and
            math.isfinite(value) and value > 0):
        raise ValueError(f"{type(owner).__name__}: {name} must be a positive number, "
                         f"got {quote(value)}")
