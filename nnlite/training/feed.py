"""Batches from outside memory: ``fit``, ``evaluate`` and ``predict`` take, instead of arrays,
a dataset object (Keras's ``PyDataset`` protocol: ``len(dataset)`` batches, ``dataset[i]``
batch i as ``(x, y)``, or ``x`` alone for ``predict``; ``on_epoch_end()`` after each epoch
and PyTorch's ``set_epoch(epoch)`` before it, when the dataset has them) or an iterator of
batches with ``steps_per_epoch`` (Keras's rule). The model checks every batch as it arrives,
as it checks arrays at the door (``checked_batch``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from ..core.door import bare, check_number


class Feed:
    """A dataset object or an iterator of batches, read an epoch at a time."""

    def __init__(self, source: Any, what: str, steps: int | None = None):
        self.what, self.peeked = what, None
        self.seen: dict[Any, Any] = {}  # batch shapes probed through the model: its outputs
        if hasattr(source, "__len__") and hasattr(source, "__getitem__"):
            self.dataset, self.iterator = source, None
            length = check_number(what, "len(dataset)", len(source), integer=True, low=1)
            self.steps = length if steps is None else check_number(
                what, "steps_per_epoch", steps, integer=True, low=1, high=length)
        else:
            self.dataset, self.iterator = None, iter(source)
            if steps is None:
                raise ValueError(f"{what}: x is an iterator of batches, so give "
                                 f"steps_per_epoch= (how many of its batches make an epoch), "
                                 f"as Keras asks")
            self.steps = check_number(what, "steps_per_epoch", steps, integer=True, low=1)

    def first(self) -> Any:
        """Batch 0, which the door checks before anything runs (an iterator's is kept for
        the first epoch)."""
        if self.dataset is not None:
            return self.dataset[0]
        self.peeked = self._next(0)
        return self.peeked

    def batches(self, check: Callable[[Any, int], Any], shuffle: np.random.Generator | None,
                epoch: int = 0) -> Iterator[Any]:
        """One epoch: ``check(batch, index)`` of each batch, a dataset's in an order drawn
        from ``shuffle`` (or in order), an iterator's as it comes; then the dataset's
        ``on_epoch_end``."""
        if self.dataset is not None:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            n = len(self.dataset)  # shuffled: only the batches the epoch takes are drawn
            order = range(self.steps) if shuffle is None else shuffle.permutation(n) \
                if self.steps == n else shuffle.choice(n, self.steps, replace=False)
            for i in order:
                yield check(self.dataset[int(i)], int(i))
            if hasattr(self.dataset, "on_epoch_end"):
                self.dataset.on_epoch_end()
            return
        for i in range(self.steps):
            batch = self.peeked if self.peeked is not None else self._next(i)
            self.peeked = None
            yield check(batch, i)

    def _next(self, i: int) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            raise ValueError(f"{self.what}: the iterator ran out after {i} batches of the "
                             f"{self.steps} an epoch takes (steps_per_epoch)") from None


def checked_batch(model: Any, batch: Any, index: int, what: str, seen: dict[Any, Any],
                  losses: list | None = None) -> tuple[Any, Any]:
    """Batch ``index`` of a dataset as ``model``'s arrays, checked as arrays are at its door
    (cast, NaN and inf, lengths, the targets by each of ``losses``, and one row through the
    model: once per shape, ``seen`` keeping what each shape gave), or a ValueError naming
    the batch. With ``losses`` None (predict) a batch is x, or a tuple whose first item is
    x."""
    where = f"{what}: batch {index} of the dataset"
    if losses is None:
        xs = model._as_inputs(batch[0] if isinstance(batch, tuple) else batch, where)
    elif not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{where} is {type(batch).__name__}, not a pair (x, y)")
    else:
        xs, ys = model._as_inputs(batch[0], where), model._as_targets(batch[1], where)
    shapes = tuple((v.shape[1:], v.dtype.str) for v in xs)
    if losses is None:
        seen[shapes] = seen.get(shapes) or model._check_inputs(xs, where)
        return bare(xs), None
    seen[shapes] = model._check_data(xs, ys, losses, where, seen.get(shapes))
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
    ys = [np.concatenate(parts) for parts in zip(*targets)] if with_targets else None
    return [np.concatenate(parts) for parts in zip(*outs)], ys
