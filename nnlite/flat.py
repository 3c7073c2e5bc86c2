"""The flat store: one contiguous array of a parameter group's values, one of its gradients.

An optimizer's update reads per parameter (``Optimizer.update``); running it on each group's
flat arrays instead runs the same formula once, in a few whole-array operations, however
many layers there are. ``Parameter.data`` and ``.grad`` become views into the store.
Parameters stay the truth: if a user assigns a new array to ``param.data`` or
``param.grad``, or another optimizer takes the parameters over, ``sync`` copies the new
values in before the next step.
"""
from __future__ import annotations

from typing import Any

import numpy as np

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
            stale_data, stale_grad = p.data is not self.data_views[i], \
                p._grad is not self.grad_views[i]
            if stale_data or stale_grad:
                self._adopt(i, stale_data, stale_grad)
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
