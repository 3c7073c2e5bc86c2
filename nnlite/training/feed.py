"""Batches from outside memory: ``fit``, ``evaluate`` and ``predict`` take, instead of arrays,

- a dataset object (Keras's ``PyDataset`` protocol: ``len(dataset)`` batches, ``dataset[i]``
  batch i; ``on_epoch_end()`` after each epoch and PyTorch's ``set_epoch(epoch)`` before
  it, when the dataset has them), a list of batches among them;
- a re-iterable, such as PyTorch's ``DataLoader``: iterated afresh each epoch, ``len()``
  (when it has one) giving the steps;
- or an iterator of batches, read once: ``steps_per_epoch`` batches an epoch (Keras's
  rule), or all of them in one epoch; when it runs out, the epoch ends with the batches
  it got, ``fit`` warns once and stops, as Keras does.

A batch is ``(x, y)`` (a tuple or a list, as a DataLoader yields), or ``x`` alone for
``predict``; PyTorch tensors are taken as arrays. The model checks every batch as it
arrives, as it checks arrays at the door (``checked_batch``). A feed of ``part=(k, parts)``
gives part k of each batch (``training.parts``), a rank's share for ``fit(comm=...)``.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterator

import numpy as np

from ..core.door import bare, check_number, no_batch_size, no_y
from .parts import cut


class Feed:
    """A dataset object, a re-iterable or an iterator of batches, read an epoch at a time."""

    def __init__(self, source: Any, what: str, steps: int | None = None,
                 part: tuple[int, int] | None = None):
        self.what, self.peeked, self.ran_out, self.part = what, None, None, part
        self.seen: dict[Any, Any] = {}  # batch shapes probed through the model: its outputs
        self.dataset = source if hasattr(source, "__getitem__") and \
            hasattr(source, "__len__") else None
        self.source, self.iterator = source, None
        if self.dataset is None and iter(source) is source:  # one-shot: read once
            self.iterator = source
        length = len(source) if hasattr(source, "__len__") else None
        if length is not None:
            length = check_number(what, "len(x)", length, integer=True, low=1)
        self.steps = length if steps is None else check_number(
            what, "steps_per_epoch", steps, integer=True, low=1, high=length)

    def first(self) -> Any:
        """Batch 0, which the door checks before anything runs (an iterator's is kept for
        the first epoch); with ``part``, only its part if the dataset reads parts."""
        if self.part is not None and hasattr(self.dataset, "part"):
            return self.dataset.part(0, *self.part)
        if self.dataset is not None:
            return self.dataset[0]
        batch = next(iter(self.source) if self.iterator is None else self.iterator, None)
        if batch is None:
            raise ValueError(f"{self.what}: x holds no batch")
        if self.iterator is not None:
            self.peeked = batch  # read once: kept for the first epoch
        return batch

    def batches(self, check: Callable[[Any, int], Any], shuffle: np.random.Generator | None,
                epoch: int = 0) -> Iterator[Any]:
        """One epoch: ``check(batch, index)`` of each batch, a dataset's in an order drawn
        from ``shuffle`` (or in order), an iterable's as it comes; then the dataset's
        ``on_epoch_end``."""
        if self.dataset is None:
            yield from self._iterate(check, epoch)
            return
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        n = len(self.dataset)  # shuffled: only the batches the epoch takes are drawn
        order = range(self.steps) if shuffle is None else shuffle.permutation(n) \
            if self.steps == n else shuffle.choice(n, self.steps, replace=False)
        for i in order:
            yield self._read(check, int(i))
        if hasattr(self.dataset, "on_epoch_end"):
            self.dataset.on_epoch_end()

    def _read(self, check: Callable[[Any, int], Any], i: int) -> Any:
        """Batch ``i`` of the dataset, checked; with ``part`` (k, parts), only part k of it:
        the dataset's ``part(i, k, parts)`` when it has one, else the batch cut."""
        if self.part is None:
            return check(self.dataset[i], i)
        if hasattr(self.dataset, "part"):
            return check(self.dataset.part(i, *self.part), i)
        return cut(check(self.dataset[i], i), *self.part, self.what)

    def _iterate(self, check: Callable[[Any, int], Any], epoch: int) -> Iterator[Any]:
        """An iterable's batches for one epoch: a re-iterable's afresh, an iterator's where
        the last epoch left it; a short iterator ends the epoch and records ``ran_out``."""
        if self.iterator is None and hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)  # a DataLoader's sampler
        batches = iter(self.source) if self.iterator is None else self.iterator
        i = 0
        while self.steps is None or i < self.steps:
            batch = self.peeked if self.peeked is not None else next(batches, None)
            self.peeked = None
            if batch is None:
                if self.iterator is not None and (self.steps is not None or i == 0):
                    self.ran_out = (epoch, i)
                return
            yield check(batch, i) if self.part is None else \
                cut(check(batch, i), *self.part, self.what)
            i += 1

    def warn_ran_out(self) -> None:
        """Once the iterator has run out: say so, naming the epoch and its batches."""
        epoch, got = self.ran_out
        expected = f" of the {self.steps} an epoch takes" if self.steps else ""
        warnings.warn(f"{self.what}: the iterator of batches ran out in epoch {epoch + 1}, "
                      f"after {got} batches{expected}; training stops with what was "
                      f"trained (make a new iterator for each epoch, or pass a re-iterable "
                      f"such as a DataLoader or a list of batches)", stacklevel=4)


def checked_batch(model: Any, batch: Any, index: int, what: str, seen: dict[Any, Any],
                  checks: list | None = None) -> tuple[Any, Any]:
    """Batch ``index`` of a dataset as ``model``'s arrays, checked as arrays are at its door
    (cast, NaN and inf, lengths, the targets by each of ``checks``, and one row through the
    model: once per shape, ``seen`` keeping what each shape gave), or a ValueError naming
    the batch. With ``checks`` None (predict) a batch is x, or a tuple or list whose first
    item is x."""
    where = f"{what}: batch {index} of the dataset"
    if checks is None:  # x, or (x, y) of one input, or (xs, y) with several inputs
        pair = isinstance(batch, (tuple, list)) and (
            len(model.input_dtypes) == 1 or isinstance(batch[0], (tuple, list)))
        xs = model._as_inputs(batch[0] if pair else batch, where)
    elif not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{where} is {type(batch).__name__}, not a pair (x, y)")
    else:
        xs, ys = model._as_inputs(batch[0], where), model._as_targets(batch[1], where)
    shapes = tuple((v.shape[1:], v.dtype.str) for v in xs)
    if checks is None:
        seen[shapes] = seen.get(shapes) or model._check_inputs(xs, where)
        return bare(xs), None
    seen[shapes] = model._check_data(xs, ys, checks, where, seen.get(shapes))
    return bare(xs), bare(ys)


def predict_stream(model: Any, feed: Feed, with_targets: bool = False
                   ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """``model``'s outputs for every batch of ``feed`` in eval mode, joined (one array per
    output), and with ``with_targets`` the batches' targets, joined likewise."""
    outs, targets = [], []
    with model.evaluating():
        for x, y in feed.batches(lambda b, i: checked_batch(
                model, b, i, feed.what, feed.seen, [] if with_targets else None), None):
            outs.append(model._forward_list(x if isinstance(x, list) else [x]))
            targets.append(y if isinstance(y, list) else [y])
    if feed.ran_out is not None:  # fewer batches than asked: no silent partial answer
        raise ValueError(f"{feed.what}: the iterator of batches ran out after "
                         f"{feed.ran_out[1]} batches of the {feed.steps} asked (steps)")
    ys = [np.concatenate(parts) for parts in zip(*targets)] if with_targets else None
    return [np.concatenate(parts) for parts in zip(*outs)], ys


def fit_feed(model: Any, x: Any, y: Any, checks: list, batch_size: Any, shuffle: bool,
             steps: int | None, split: float, comm: Any) -> tuple[Callable, int | None]:
    """fit's batches made already: batch 0 checked at the door, the others as they arrive;
    ``epoch_data(rng, epoch)``, an epoch's (with ``comm``, this rank's part of each), and
    how many an epoch has (None: as many as an iterator gives)."""
    feed = Feed(x, "fit", steps, getattr(comm, "part", None))
    no_y(y, "fit")
    no_batch_size(batch_size, x, "fit")
    if split:
        raise ValueError("fit: validation_split cuts arrays; x is made of batches, so "
                         "give validation_data instead")
    try:
        checked_batch(model, feed.first(), 0, "fit", feed.seen, checks)
    except ValueError as error:  # (a rank's own part: the others would wait for it)
        if comm is not None:
            comm.fail(error)
        raise

    def epoch_data(rng: np.random.Generator, epoch: int) -> Iterator:
        yield from feed.batches(lambda b, i: checked_batch(model, b, i, "fit", feed.seen,
                                                           checks), rng if shuffle else None,
                                epoch)
        if feed.ran_out is not None:  # a one-shot iterator is used up: stop, as Keras
            feed.warn_ran_out()
            model.stop_training = True
    return epoch_data, feed.steps
