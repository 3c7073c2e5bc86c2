"""What ``fit`` does when training goes wrong: roll back to finite weights, stop on Ctrl-C.

``Snapshot`` keeps copies of a model's weights and buffers and its optimizer's state at the
start of the last epoch whose weights were finite; ``InterruptFlag`` turns the first
Ctrl-C into a flag the batch loop reads after each batch.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

import numpy as np


class Snapshot:
    """Copies of the model's weights and buffers and the optimizer's state, to roll back to."""

    def __init__(self, model: Any, optimizer: Any):
        self.model, self.optimizer, self.epoch = model, optimizer, model.initial_epoch
        self.take()

    def take(self) -> bool:
        """Record the current state if every weight is finite; return whether it was."""
        params = [p.data.copy() for p in self.model.parameters()]
        if not all(np.isfinite(p).all() for p in params):
            return False
        self.params = params
        self.buffers = [b.copy() for _, b in self.model.named_buffers()]
        self.state = {k: v.copy() for k, v in self.optimizer.state.items()}
        self.steps = self.optimizer.steps
        self.lrs = [g["lr"] for g in self.optimizer.param_groups]
        return True

    def restore(self) -> None:
        for p, saved in zip(self.model.parameters(), self.params):
            p.data[...] = saved
        for (_, owner, attr), saved in zip(self.model._buffer_slots(), self.buffers):
            getattr(owner, attr)[...] = saved
        for k, v in self.state.items():
            self.optimizer.state[k][...] = v
        self.optimizer.steps = self.steps
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            group["lr"] = lr


class InterruptFlag:
    """While active, Ctrl-C sets ``raised`` instead of raising, so the current batch
    finishes; a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
