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
        self.model, self.optimizer = model, optimizer
        self.take(model.initial_epoch)

    def _arrays(self) -> list[np.ndarray]:
        """Every array training changes in place: the weights first, then the buffers and
        the optimizer's state."""
        return [p.data for p in self.model.parameters()] + \
            [b for _, b in self.model.named_buffers()] + list(self.optimizer.state.values())

    def take(self, epoch: int) -> bool:
        """Record the current state as the start of ``epoch`` if every weight is finite;
        return whether it was."""
        arrays = [a.copy() for a in self._arrays()]
        if not all(np.isfinite(a).all() for a in arrays[:len(self.model.parameters())]):
            return False
        self.arrays, self.steps, self.epoch = arrays, self.optimizer.steps, epoch
        self.lrs = [g["lr"] for g in self.optimizer.param_groups]
        return True

    def restore(self) -> None:
        for array, saved in zip(self._arrays(), self.arrays):
            array[...] = saved
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
