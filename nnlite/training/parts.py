"""A batch cut into parts, one per thread (``fit(threads=n)``) or per rank
(``fit(comm=...)``): part k of n holds the batch's rows b[k]:b[k+1], b = ``part_bounds``.

A rank reads only its part. Of arrays, its rows of each batch; of a dataset,
``dataset.part(index, k, n)`` when the dataset has it (``ArrayDataset`` does: over memory
maps it reads only those rows from disk), else batch ``index`` whole, cut (``cut``).
Validation data is cut the same way (``nnlite.distributed``).
May import: nothing of nnlite.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def part_bounds(n: int, parts: int) -> np.ndarray:
    """Where n rows are cut into ``parts`` contiguous parts, as even as can be: part k is
    rows b[k]:b[k+1]."""
    return np.linspace(0, n, parts + 1).astype(int)


def share(taken: Any, n: int, k: int, parts: int) -> Any:
    """Part ``k`` of ``parts`` of a batch's rows ``taken`` (their indices, or a slice of
    n rows)."""
    if isinstance(taken, slice):
        taken = range(n)[taken]
    lo, hi = part_bounds(len(taken), parts)[k:k + 2]
    ours = taken[lo:hi]
    return slice(ours.start, ours.stop) if isinstance(ours, range) else ours


def row_count(x: Any) -> int:
    return len(x[0] if isinstance(x, (list, tuple)) else x)


def part_rows(x: Any, lo: int, hi: int) -> Any:
    """Rows lo:hi of an array, or of each array of a list (several inputs or outputs)."""
    return [a[lo:hi] for a in x] if isinstance(x, (list, tuple)) else x[lo:hi]


def cut(batch: tuple[Any, Any], k: int, parts: int, what: str = "fit") -> tuple[Any, Any]:
    """Part ``k`` of ``parts`` of a batch (x, y) read whole."""
    lo, hi = part_rows_of(row_count(batch[0]), k, parts, what)
    return tuple(None if a is None else part_rows(a, lo, hi) for a in batch)


def part_rows_of(n: int, k: int, parts: int, what: str) -> tuple[int, int]:
    """The rows (lo, hi) of part ``k`` of ``parts`` of a batch of n rows; none is a
    ValueError (``what`` names the caller)."""
    if n < parts:
        raise ValueError(f"{what}: a batch of {n} rows cannot be cut into {parts} parts, "
                         f"one per rank; make every batch at least {parts} rows")
    lo, hi = part_bounds(n, parts)[k:k + 2]
    return int(lo), int(hi)


def joined(parts: list) -> Any:
    if isinstance(parts[0], (list, tuple)):
        return [np.concatenate(column) for column in zip(*parts)]
    return np.concatenate(parts)


def check_validation_parts(val: tuple[Any, Any] | None, parts: int) -> None:
    """With ``fit(comm=...)`` each rank predicts its part of validation arrays: none may
    be empty."""
    if val is not None and val[1] is not None and row_count(val[0]) < parts:
        raise ValueError(f"fit: comm cuts the validation data into {parts} parts, one per "
                         f"rank, but it has {row_count(val[0])} rows")
