"""The epochs ``fit`` runs: each batch is one training step (forward, the loss, backward,
the optimizer's step); around it, the callbacks, Ctrl-C, and a rollback when training
diverges.

``Snapshot`` keeps copies of a model's weights and buffers and its optimizer's state at the
start of the last epoch whose weights were finite; ``InterruptFlag`` turns the first
Ctrl-C into a flag the batch loop reads after each batch.
"""
from __future__ import annotations

import math
import signal
import threading
import warnings
from typing import Any, Callable, Iterable

import numpy as np

from ..core.parameter import Parameter
from .callbacks import Callback, CallbackList, EpochLine, History, ProgressBar, interactive


def train(model: Any, epoch_data: Callable[[np.random.Generator, int], Iterable], objective: Any,
          optimizer: Any, callbacks: list[Callback], epochs: int, seed: int, threads: int,
          validate: Callable[[], dict[str, float]] | None, comm: Any = None) -> History:
    """Epochs ``model.initial_epoch`` .. ``epochs - 1`` of ``epoch_data(rng, epoch)``'s
    batches, run by ``_runner``; ``validate()`` after each epoch (None: no validation
    data); the History."""
    interrupted = InterruptFlag()
    net, seed = _runner(model, optimizer, threads, comm, seed, interrupted)
    history = History()
    if comm is not None and comm.rank:  # what writes, writes once: on rank 0
        callbacks = [c for c in callbacks if not c.writes]
    cbs = CallbackList([*callbacks, history], model, optimizer)
    model.train()
    try:
        cbs.call("on_train_begin")
        snapshot = Snapshot(model, optimizer)
        with interrupted:
            for epoch in range(model.initial_epoch, epochs):
                rng = np.random.default_rng([seed, epoch])  # the epoch's draws: seed, epoch
                for m in model.modules():
                    m.rng = rng
                cbs.call("on_epoch_begin", epoch)
                logs = _epoch(model, epoch_data(rng, epoch), objective, optimizer, cbs,
                              interrupted, net, snapshot, epoch)
                if interrupted.raised or logs is None:  # a partial or an empty epoch is
                    break                                # not reported as done
                logs.update({f"val_{k}": v for k, v in (validate() if validate else {}).items()})
                if not snapshot.take(epoch + 1):
                    snapshot.restore()
                    raise FloatingPointError(
                        f"weights became non-finite in epoch {epoch + 1}; model and "
                        f"optimizer are restored to the start of epoch {snapshot.epoch + 1}")
                cbs.call("on_epoch_end", epoch, logs)
                if model.stop_training:
                    break
    except BaseException as error:
        if comm is not None:  # the other ranks would wait for this one: stop them all
            comm.fail(error)
        raise
    finally:
        for m in model.modules():
            m.rng = None
        model.input_grad = True
        if net is not model:
            net.close()
    if interrupted.raised:
        warnings.warn(f"training interrupted by Ctrl-C after {len(history.epoch)} "
                      f"complete epoch(s); returning the history so far", stacklevel=3)
    cbs.call("on_train_end")
    return history


def _runner(model: Any, optimizer: Any, threads: int, comm: Any, seed: int,
            interrupted: InterruptFlag) -> tuple[Any, int]:
    """What runs each batch: the model; with ``threads`` > 1, its replicas on threads; with
    ``comm``, this process's rank of several (``nnlite.distributed``), which starts from
    rank 0's weights, optimizer state and seed. And the seed."""
    if threads > 1 and comm is not None:
        raise ValueError(f"fit: give threads={threads} or comm, not both: each rank of comm "
                         f"runs its part of a batch on one thread")
    if threads > 1:
        from .parallel import Replicas  # (threadpoolctl, loaded on first use)
        return Replicas(model, threads), seed
    if comm is not None:
        model.__dict__["_rank"] = comm.rank  # save writes on rank 0 only
        return comm.runner(model, optimizer, interrupted), comm.start(model, optimizer, seed)
    return model, seed


def shown(verbose: bool, epochs: int, steps: int) -> list[Callback]:
    """What ``fit(verbose=True)`` shows: a line per epoch, and a progress bar where one can
    redraw (a terminal, a notebook)."""
    if not verbose:
        return []
    return [*([ProgressBar(epochs, steps)] if interactive() else []), EpochLine(epochs)]


def _epoch(model: Any, data: Iterable, objective: Any, optimizer: Any, cbs: CallbackList,
           interrupted: InterruptFlag, net: Any, snapshot: Snapshot, epoch: int
           ) -> dict[str, float] | None:
    """One pass over ``data``; the epoch's means of ``objective``'s metrics (None for an
    epoch of no batches: a used-up iterator). A non-finite loss rolls model and optimizer
    back to the snapshot and raises FloatingPointError."""
    objective.reset()
    frozen = None  # the freeze count backward's reach was last set for
    for b, (x, y) in enumerate(data):
        if Parameter.freeze_count != frozen:  # each epoch, and when a layer is (un)frozen
            frozen, model.input_grad = Parameter.freeze_count, False  # no dL/dx of the data
        out = net.forward(x)                    # forward
        value = objective.forward(out, y)       # the loss
        if not math.isfinite(value):
            snapshot.restore()
            raise FloatingPointError(
                f"loss is {value} in epoch {epoch + 1}, batch {b + 1}: training diverged "
                f"(try a lower learning rate); model and optimizer are restored to the "
                f"start of epoch {snapshot.epoch + 1}")
        optimizer.zero_grad()
        net.backward(objective.backward())      # backward: dL/dout, through every layer
        optimizer.step()                        # step
        objective.count(value)
        for hook in cbs.hooks["on_batch_end"]:
            hook(b, {"loss": value})
        if interrupted.raised:
            break
    return objective.logs() if objective.seen else None


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
    finishes; a second Ctrl-C raises KeyboardInterrupt as usual. The ranks of
    ``fit(comm=...)`` set ``agreed``: Ctrl-C then sets ``pending``, and in each batch the
    ranks set ``raised`` together, true if it is pending on any, so that all stop after
    the same batch whichever rank the signal reached, and whenever."""

    def __init__(self) -> None:
        self.raised = self.pending = self.agreed = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True
        if not self.agreed:
            self.raised = True

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
