"""Data parallelism across processes: ``fit(..., comm=MPIComm())``, launched as
``mpiexec -n 4 python train.py``; the extra ``nnlite[mpi]`` (mpi4py and MPICH).

The chain rule is linear: the gradient of a batch's loss is the sum of its parts'
gradients. Every rank runs the same script over the same data, so each epoch every rank
draws the same shuffle (one seed, rank 0's); each global batch of ``batch_size`` rows is
cut into ``size`` contiguous parts, as ``fit(threads=n)`` cuts it, and rank r reads only
part r's rows (``nnlite.training.parts``: of arrays, of a dataset with ``part``, of an
``ArrayDataset`` over memory maps) and runs it forward. The parts' outputs and targets are
gathered so that every rank computes the loss of the whole batch (its meaning, a mean,
class weights, several outputs, does not change); rank r runs its part backward, the
gradients are summed across ranks, one all-reduce per step over the optimizer's flat
gradient store, and every rank takes the same step. BatchNorm's statistics are the global
batch's: its parts' sums are summed across ranks. Validation is divided likewise, each
rank predicting its part. While ``fit`` runs, each rank's BLAS keeps to its share of its
machine's cores.

``deterministic=True`` (the default) adds the parts in rank order (an Allgather, then an
ordered sum), as ``LocalComm(n)`` adds them in one process, so n ranks train bit for bit
as ``LocalComm(n)`` does; ``deterministic=False`` uses MPI's Allreduce, equal to rounding.
May import: nnlite.core, nnlite.training.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .core.door import check_flag, check_number
from .training.parallel import Replicas, part_generators
from .training.feed import Feed, predict_stream
from .training.parts import joined, part_bounds, part_rows, row_count

try:
    import mpi4py  # noqa: F401 (the package only: MPI starts with the first MPIComm)
except ImportError as e:
    raise ImportError('nnlite.distributed needs mpi4py and an MPI library: '
                      'pip install "nnlite[mpi]"') from e


class LocalComm:
    """``n`` ranks in one process, no MPI: each batch's n parts run on replicas of the
    model and their gradients are added in part order, as ``MPIComm(deterministic=True)``
    adds n ranks'. For tests, and to check a run of n ranks on one machine."""

    rank, part = 0, None  # (this process reads whole batches)

    def __init__(self, n: int):
        self.size = check_number("LocalComm", "n", n, integer=True, low=1)

    def start(self, model: Any, optimizer: Any, seed: int) -> int:
        return seed

    def runner(self, model: Any, optimizer: Any, interrupted: Any) -> Any:
        return model if self.size == 1 else Replicas(model, self.size)

    def predictions(self, model: Any, x: Any, y: Any, batch_size: int | None
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Validation's outputs and targets: the n parts' (``part_predictions``), joined."""
        parts = [part_predictions(model, x, y, batch_size, k, self.size)
                 for k in range(self.size)]
        return joined([outs for outs, _ in parts]), joined([ys for _, ys in parts])

    def fail(self, error: BaseException) -> None:
        """Nothing to stop: the error reaches the caller."""


class MPIComm:
    """mpi4py's ``COMM_WORLD``, or the communicator given, for ``fit(comm=...)``."""

    def __init__(self, comm: Any = None, deterministic: bool = True):
        from mpi4py import MPI
        self.mpi = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.deterministic = check_flag("MPIComm", "deterministic", deterministic)
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.part = (self.rank, self.size)  # this rank reads its part of each batch
        self.rows: list[int] = []  # the rows of each rank's part of the current batch

    def start(self, model: Any, optimizer: Any, seed: int) -> int:
        """Rank 0's weights, buffers, optimizer state and seed, on every rank."""
        arrays = [p.data for p in model.parameters()] + \
            [b for _, b in model.named_buffers()] + list(optimizer.state.values())
        for a in arrays:
            self.comm.Bcast(a, root=0)
        optimizer.steps = self.comm.bcast(optimizer.steps, root=0)
        return self.comm.bcast(seed, root=0)

    def runner(self, model: Any, optimizer: Any, interrupted: Any) -> Ranks:
        return Ranks(model, optimizer, self, interrupted)

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Σ over ranks of ``array`` (the same shape on each), in rank order if deterministic."""
        shape, flat = np.shape(array), np.ascontiguousarray(array).reshape(-1)
        if not self.deterministic:
            total = np.empty_like(flat)
            self.comm.Allreduce(flat, total, op=self.mpi.SUM)
            return total.reshape(shape)
        every = np.empty((self.size, flat.size), flat.dtype)
        self.comm.Allgather(flat, every)
        total = every[0].copy()
        for part in every[1:]:
            total += part
        return total.reshape(shape)

    def counts(self, n: int) -> list[int]:
        """Every rank's ``n``, in rank order."""
        every = np.empty(self.size, np.int64)
        self.comm.Allgather(np.array([n], np.int64), every)
        return every.tolist()

    def batches(self, data: Any) -> Any:
        """This rank's parts (x, y) of ``data``'s batches, as (x, the batch's whole y):
        the targets gathered from every rank, so that each rank's loss is the batch's. The
        parts' rows are kept for ``Ranks``."""
        for x, y in data:  # (every part holds a row: fit's door, cut and checked_batch)
            self.rows = self.counts(row_count(x))
            yield x, self.gather(y, self.rows)

    def predictions(self, model: Any, x: Any, y: Any, batch_size: int | None
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Validation's outputs and targets: this rank's part's (``part_predictions``) and
        the other ranks', joined in rank order."""
        outs, ys = part_predictions(model, x, y, batch_size, self.rank, self.size)
        rows = self.counts(len(outs[0]))
        return self.gather(outs, rows), self.gather(ys, rows)

    def gather(self, array: Any, rows: list[int]) -> Any:
        """The ranks' arrays (or lists of arrays) of ``rows[r]`` rows each, joined in rank
        order, on every rank."""
        if isinstance(array, (list, tuple)):
            return [self.gather(a, rows) for a in array]
        array = np.ascontiguousarray(array)
        width = array[0].size if len(array) else int(np.prod(array.shape[1:]))
        counts = [r * width for r in rows]
        out = np.empty((sum(rows),) + array.shape[1:], array.dtype)
        self.comm.Allgatherv(array, [out, counts])
        return out

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank."""
        return bool(self.comm.allreduce(bool(flag), op=self.mpi.LOR))

    def fail(self, error: BaseException) -> None:
        """An error on one rank would leave the others waiting for it: say which rank
        failed, on stderr, and stop every rank."""
        if self.size == 1:
            return
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        sys.stderr.write(f"nnlite: rank {self.rank} of {self.size} failed; stopping every "
                         f"rank:\n{text}")
        sys.stderr.flush()
        self.comm.Abort(1)


class Ranks:
    """This process's share of training: part ``comm.rank`` of each batch, forward and
    backward, with the outputs gathered and the gradients summed across ranks."""

    def __init__(self, model: Any, optimizer: Any, comm: MPIComm, interrupted: Any):
        Replicas.check(model, f"comm of {comm.size} ranks")
        self.model, self.optimizer, self.comm = model, optimizer, comm
        self.interrupted = interrupted  # fit's Ctrl-C flag: the ranks agree on it
        interrupted.agreed = True
        # BLAS's threads: this rank's share of its machine's cores, rather than every rank
        # spinning as many threads as there are cores (threadpoolctl; released by close)
        here = comm.comm.Split_type(comm.mpi.COMM_TYPE_SHARED).Get_size()
        self.blas = threadpool_limits(max(1, (os.cpu_count() or 1) // here), user_api="blas")
        for layer in model.modules():  # parts meet: their sums are summed across ranks
            if hasattr(layer, "across"):
                layer.across = comm.sum
        self.seen: tuple = (None, None)  # the epoch generator, and this rank's from it

    def forward(self, x: Any) -> Any:
        """The model's output for the whole batch: of ``x``, this rank's part (read by
        ``MPIComm.batches``), the others' gathered."""
        self._sync()
        return self.comm.gather(self.model.forward(x), self.comm.rows)

    def backward(self, grad: Any) -> None:
        """This rank's part backward; then each flat gradient summed across ranks. And
        Ctrl-C pending on any rank, raised on every rank: all stop after this batch."""
        lo = sum(self.comm.rows[:self.comm.rank])
        self.model.backward(part_rows(grad, lo, lo + self.comm.rows[self.comm.rank]))
        for g in self.optimizer.gradients():
            g[...] = self.comm.sum(g)
        self.interrupted.raised = self.comm.any(self.interrupted.pending)

    def _sync(self) -> None:
        """A new epoch: ranks other than 0 draw from a generator of their own, seeded from
        the epoch's as ``fit(threads=n)`` seeds its replicas'."""
        if self.model.rng is None or self.model.rng in self.seen:
            return
        epoch = self.model.rng
        child = part_generators(epoch, self.comm.size)[self.comm.rank]
        for m in self.model.modules():
            m.rng = child
        self.seen = (epoch, child)

    def close(self) -> None:
        self.blas.restore_original_limits()
        for layer in self.model.modules():
            layer.__dict__.pop("across", None)


def part_predictions(model: Any, x: Any, y: Any, batch_size: int | None, k: int, parts: int
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Part ``k`` of ``parts`` of validation data: the model's outputs for its rows and
    their targets, one array per output. Arrays (x, y) are cut once, each part predicting
    its rows in batches of ``batch_size``; batches (y None) are each cut."""
    if y is None:
        return predict_stream(model, Feed(x, "validation_data", part=(k, parts)), True)
    lo, hi = part_bounds(row_count(x), parts)[k:k + 2]
    out = model.predict(part_rows(x, lo, hi), batch_size)
    ys = part_rows(y, lo, hi)
    return (out if model.n_outputs > 1 else [out]), (ys if model.n_outputs > 1 else [ys])
