"""Datasets and mini-batches."""
from __future__ import annotations

from typing import Iterator

import numpy as np


def batches(x: np.ndarray, y: np.ndarray | None, batch_size: int, *, shuffle: bool = True,
            rng: np.random.Generator | int | None = None,
            drop_last: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` samples each.

    With ``shuffle`` the samples are taken in a random order drawn from ``rng``
    (a Generator or a seed); without it, batches are views in order. With
    ``drop_last`` a final, smaller batch is left out.
    """
    n = len(x)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.random.default_rng(rng).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            part = slice(start, start + batch_size)
        else:
            part = order[start:start + batch_size]
        yield x[part], (None if y is None else y[part])
