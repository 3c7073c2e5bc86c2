"""Data parallelism on threads: ``fit(threads=n)`` splits every batch into n parts and runs
each part's forward and backward on a thread of its own, through a replica of the model.

A batch's loss is a sum (or mean) over its samples, so its gradient is a sum over its
parts: dL/dθ = Σ_k Σ_{i in part k} (dL/dout_i)·(∂out_i/∂θ). The replicas share the model's
weights (the same arrays) and keep their own gradients and caches; the first part runs
through the model itself, the others through the replicas, and their gradients are added
into the model's. The loss runs once, on the whole batch's outputs, in the calling thread,
so its meaning (a mean, class weights, several outputs) does not change; the sums do, to
rounding.

Each sample's output must depend on that sample alone, or the layer must say how its
parts meet: BatchNorm's statistics are sums over the whole batch, so its copies add up
their parts' sums (``across``, one ``_Sum`` per layer: each part waits for the others and
all get the same total, added in part order). Another layer with buffers is refused. Each
batch, the replicas' buffers take the model's values, the replicas' own updates being
copies of the model's. Dropout-like layers draw from a generator of their own in each
replica, seeded from the epoch's, so a run depends only on ``seed``, the epoch and
``threads``.

While the replicas run, BLAS is held to one thread (threadpoolctl), so each core multiplies
the rows it has just built, rather than nnlite's passes running on one core and OpenBLAS's
products on two, with the data crossing between them at every product. It pays where a
batch takes tens of milliseconds: on a 2-core machine the small CNN of
``benchmarks/cnn_mnist.py`` trained at 0.75-0.84x PyTorch's time on two threads, 0.91-1.44x
on one in the same runs (README, Performance); an MLP's 1 ms batch took 1.2-1.4x as long
(the hand-offs cost more than the second core gives).
"""
from __future__ import annotations

import copy
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from ..core.layer import Layer
from ..core.parameter import Parameter
from .parts import joined, part_bounds, part_rows, row_count


class Replicas:
    """``model`` and ``threads - 1`` replicas of it, run as one: ``forward`` and
    ``backward`` take and return what the model's do, for a whole batch."""

    def __init__(self, model: Layer, threads: int):
        self.check(model, f"threads={threads}")
        self.model = model
        shared = {id(p.data): p.data for p in model.parameters()}
        self.copies = [copy.deepcopy(model, dict(shared)) for _ in range(threads - 1)]
        self.params = [list(zip(model.parameters(), c.parameters())) for c in self.copies]
        modules = [list(model.modules())] + [list(c.modules()) for c in self.copies]
        self.layers = [list(zip(modules[0], others)) for others in modules[1:]]
        self.buffers = [(m, c, name) for pairs in self.layers for m, c in pairs
                        for name in m.__dict__.get("_buffers", ())]
        self.sums = []  # one per layer whose parts meet: part k calls it as its ``across``
        for j, layer in enumerate(modules[0]):
            if hasattr(layer, "across"):
                self.sums.append(_Sum())
                for k, part in enumerate(modules):
                    part[j].across = functools.partial(self.sums[-1], k)
        self.pool = ThreadPoolExecutor(threads - 1, thread_name_prefix="nnlite-replica")
        self.blas = ThreadpoolController().select(user_api="blas")
        self.rng = None  # the epoch generator the replicas' generators were seeded from
        self.frozen = None  # the freeze count the replicas' flags were copied at

    @staticmethod
    def check(model: Layer, how: str) -> None:
        """fit's door: samples meet only where parts add up."""
        for layer in model.modules():
            if layer.__dict__.get("_buffers") and not hasattr(layer, "across"):
                raise ValueError(f"fit: {how} trains the model on parts of each batch apart, "
                                 f"but {layer!r} keeps buffers ({', '.join(layer._buffers)}) "
                                 f"that would be updated apart (only a layer with ``across``, "
                                 f"as BatchNorm, adds up its parts); train it in one part")

    def forward(self, x: Any) -> Any:
        """The model's output for the whole batch: its parts' outputs, joined."""
        self._sync()
        n = row_count(x)
        bounds = part_bounds(n, min(len(self.copies) + 1, n))
        parts = [part_rows(x, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
        self.bounds = bounds
        for total in self.sums:
            total.expect(len(parts))
        outs = self._run([self.model.forward] + [c.forward for c in self.copies], parts)
        return outs[0] if len(outs) == 1 else joined(outs)

    def backward(self, grad: Any) -> None:
        """dL/dθ of the whole batch into the model's gradients: each part's backward, then
        the replicas' gradients added to the model's (dL/dx of the data is not needed)."""
        bounds, used = self.bounds, self.copies[:len(self.bounds) - 2]
        for pairs in self.params[:len(used)]:
            for _, q in pairs:
                q.zero_grad()
        parts = [part_rows(grad, lo, hi) for lo, hi in zip(bounds, bounds[1:])]
        self._run([self.model.backward] + [c.backward for c in used], parts)
        for pairs in self.params[:len(used)]:
            for p, q in pairs:
                if p.requires_grad:
                    p.grad += q.grad

    def _run(self, calls: list, parts: list) -> list:
        """calls[0](parts[0]) here and the others on the pool's threads, BLAS on one thread;
        their results, or, once all have ended, the error that stopped them."""
        with self.blas.limit(limits=1):
            futures = [self.pool.submit(self._call, f, part)
                       for f, part in zip(calls[1:], parts[1:])]
            try:
                ended = [self._call(calls[0], parts[0])] + [f.result() for f in futures]
            except BaseException:  # Ctrl-C while waiting for the other parts
                self._release()
                raise
        errors = [e for _, e in ended if e is not None]
        if errors:  # the cause, rather than another part's broken wait for it
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                       errors[0])
        return [value for value, _ in ended]

    def _call(self, f: Any, part: Any) -> tuple[Any, BaseException | None]:
        """(f(part), None), or (None, the error, Ctrl-C and SystemExit included) once the
        other parts are released."""
        try:
            return f(part), None
        except BaseException as e:
            self._release()
            return None, e

    def _release(self) -> None:
        """Break every wait for a sum: the other parts would wait for this one forever."""
        for total in self.sums:
            total.barrier.abort()

    def _sync(self) -> None:
        """The model's weights, buffers, frozen layers and epoch generator, into the
        replicas: an optimizer or a callback may have replaced or changed them since."""
        for pairs in self.params:
            for p, q in pairs:
                q.data = p.data
        for m, c, name in self.buffers:
            getattr(c, name)[...] = getattr(m, name)
        if Parameter.freeze_count != self.frozen:  # a layer (un)frozen: the same in each copy
            self.frozen = Parameter.freeze_count
            for pairs, params, c in zip(self.layers, self.params, self.copies):
                for m, r in pairs:
                    r.__dict__["_trainable"] = m._trainable
                for p, q in params:  # (its setter would bump the count the optimizer watches)
                    q._requires_grad = p._requires_grad
                c.input_grad = False  # backward's reach
        if self.model.rng is not self.rng:  # a new epoch: each replica a generator of its own
            self.rng = self.model.rng
            children = [None] * len(self.layers) if self.rng is None else \
                part_generators(self.rng, len(self.layers) + 1)[1:]
            for pairs, child in zip(self.layers, children):
                for _, c in pairs:
                    c.rng = child

    def close(self) -> None:
        self._release()  # a part still waiting (fit left by an error) ends now
        self.pool.shutdown()
        for layer in self.model.modules():
            layer.__dict__.pop("across", None)


class _Sum:
    """Adds up an array over the parts of a batch: part k calls it with its own sum and
    waits until every part has; each gets the total of all, added in part order."""

    def __init__(self):
        self.barrier, self.slots = threading.Barrier(1), [None]

    def expect(self, parts: int) -> None:
        """The next calls come from this many parts (fewer for a batch of fewer rows)."""
        if parts != self.barrier.parties or self.barrier.broken:
            self.barrier, self.slots = threading.Barrier(parts), [None] * parts

    def __call__(self, k: int, part_sum: np.ndarray) -> np.ndarray:
        self.slots[k] = part_sum
        self.barrier.wait()
        total = functools.reduce(np.add, self.slots)
        self.barrier.wait()  # every part has read the slots before any writes its next sum
        return total


def part_generators(epoch: np.random.Generator, parts: int) -> list[np.random.Generator]:
    """The generators of a batch's parts for an epoch: part 0 draws from the epoch's own,
    part k from one seeded with (a number drawn from the epoch's, k), so that a run depends
    only on the seed, the epoch and the number of parts (threads, or ranks)."""
    entropy = int(epoch.integers(2 ** 63))
    return [epoch] + [np.random.default_rng([entropy, k]) for k in range(1, parts)]
