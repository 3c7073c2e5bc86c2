"""Checks at the door: arguments and values, checked once where they come in.

Constructors check their arguments with ``check_number`` and ``check_flag``; ``load``,
``load_weights`` and ``load_state_dict`` pass every parameter and buffer through
``checked`` before anything in the model changes. Nothing here runs per batch.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np


def check_number(owner: str, name: str, value: Any, *, integer: bool = False,
                 low: float | None = None, high: float | None = None,
                 open_high: bool = False) -> Any:
    """``value`` if it is a (whole, with ``integer``) number within [low, high] (or
    [low, high)), else a ValueError naming the layer and the argument."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    ok = isinstance(value, kinds) and not isinstance(value, (bool, np.bool_)) and \
        (isinstance(value, (int, np.integer)) or math.isfinite(value)) and \
        (low is None or value >= low) and \
        (high is None or (value < high if open_high else value <= high))
    if not ok:
        kind = "a whole number" if integer else "a number"
        bounds = "" if low is None and high is None else " in " + (
            f"[{low}, " if low is not None else "(-inf, ") + (
            f"{high}{')' if open_high else ']'}" if high is not None else "inf)")
        raise ValueError(f"{owner}: {name} must be {kind}{bounds}, got {value!r}")
    return int(value) if integer else float(value)


def check_flag(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a ValueError naming the layer and the argument."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
    return bool(value)


def checked(kind: str, name: str, value: Any, like: np.ndarray) -> np.ndarray:
    """``value`` as a new array of ``like``'s dtype, or a ValueError naming the ``kind``
    ("parameter", "buffer") and ``name``: a parameter must hold floating-point numbers, a
    buffer numbers; floating values must be finite after the conversion (1e300 is not a
    float32), a variance (``running_var``) >= 0, and an integer buffer (a count) whole
    numbers >= 0."""
    value = np.asarray(value)
    if value.dtype.kind not in ("f" if kind == "parameter" else "fiu"):
        what = "floating-point numbers" if kind == "parameter" else "numbers"
        raise ValueError(f"{kind} {name!r} holds {value.dtype} values, not {what}")
    if like.dtype.kind in "iu":
        whole = value.dtype.kind in "iu" or bool(
            np.isfinite(value).all() and (value == np.round(value)).all() and
            (np.abs(value) < 2.0 ** 63).all())
        if not whole or (value < 0).any():
            raise ValueError(f"{kind} {name!r} must hold whole numbers >= 0 (a count), got "
                             f"{value.ravel()[:3]}")
        return np.array(value, dtype=like.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.array(value, dtype=like.dtype)
    if not np.isfinite(cast).all():
        raise ValueError(f"{kind} {name!r} holds NaN or infinite values (as {like.dtype})")
    if name.rpartition(".")[2] == "running_var" and (cast < 0).any():
        raise ValueError(f"{kind} {name!r} holds a negative variance")
    return cast


# -- data given to fit, evaluate and predict ------------------------------------------------
def data_name(kind: str, i: int, count: int) -> str:
    """How errors name data: ``x``, or ``x[1]`` (input 1) when there are several."""
    return kind if count == 1 else f"{kind}[{i}]"


def as_list(value: Any, count: int, what: str, kind: str, plural: str) -> list[Any]:
    if count == 1:
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != count:
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else \
            type(value).__name__
        raise ValueError(f"{what}: the model has {count} {plural}, so {kind} must be a list "
                         f"of {count} arrays; got {got}")
    return list(value)


def check_lengths(xs: list[np.ndarray], ys: list[np.ndarray], what: str) -> None:
    for kind, arrays in (("x", xs), ("y", ys)):
        for i, v in enumerate(arrays):
            if v.ndim == 0:
                raise ValueError(f"{what}: {data_name(kind, i, len(arrays))} is a single "
                                 f"value, not an array of samples")
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{what}: x is empty; there is nothing to train or evaluate on")
    for kind, arrays in (("x", xs), ("y", ys)):
        for i, v in enumerate(arrays):
            if len(v) != n:
                raise ValueError(f"{what}: {data_name('x', 0, len(xs))} has {n} samples but "
                                 f"{data_name(kind, i, len(arrays))} has {len(v)} samples; "
                                 f"they must match")


def whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_batch_size(batch_size: int) -> None:
    if not whole(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")


def as_array(value: Any, dtype: Any, name: str) -> np.ndarray:
    """``value`` as an array (cast to ``dtype`` unless None), or a ValueError naming it: an
    iterator or generator is not an array."""
    if isinstance(value, Iterator):
        raise ValueError(f"{name} is a {type(value).__name__}; nnlite's fit, evaluate and "
                         f"predict take arrays (np.asarray(list(...)) makes one)")
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} is not an array of numbers: {e}") from None


def check_finite(x: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first row of ``x`` holding NaN or inf.

    Reads about a million values at a time, and makes no temporary of that size
    unless a chunk's sum is not finite (NaN and inf survive a sum).
    """
    row_size = max(1, x[0].size) if len(x) else 1
    chunk = max(1, (1 << 20) // row_size)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        if np.isfinite(np.sum(part)):
            continue
        finite = np.isfinite(part).reshape(len(part), -1).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(f"{name} has NaN or infinite values, first in row {row}")


def check_fit_args(model: Any, optimizer: Any, epochs: Any, batch_size: Any,
                   initial_epoch: Any) -> None:
    """fit's settings: a batch size, an optimizer (an object with ``step`` and ``params``)
    over this model's parameters only, whole epoch counts."""
    check_batch_size(batch_size)
    if not hasattr(optimizer, "step") or not hasattr(optimizer, "params"):
        raise ValueError(f"fit: optimizer must be an nnlite optimizer such as "
                         f"nnlite.optim.Adam(model.parameters()), got {optimizer!r}")
    mine = {id(p) for p in model.parameters()}
    foreign = [p for p in optimizer.params if id(p) not in mine]
    if foreign:
        some = (f"{len(foreign)} parameter(s) this model does not have, such as "
                f"{foreign[0]!r}") if len(foreign) < len(optimizer.params) else \
            "none of this model's parameters"
        raise ValueError(f"fit: the optimizer holds {some}, so training would not change "
                         f"the model (was the model rebuilt after the optimizer?); build "
                         f"the optimizer from this model's parameters()")
    if not whole(epochs) or epochs < 0:
        raise ValueError(f"fit: epochs must be a whole number >= 0, got {epochs!r}")
    if not whole(initial_epoch) or not 0 <= initial_epoch <= epochs:
        raise ValueError(f"fit: initial_epoch must be a whole number in [0, "
                         f"epochs={epochs}], got {initial_epoch!r}")


def check_last_batch(model: Any, n: int, batch_size: int, drop_last: bool) -> None:
    """BatchNorm in training needs two values per channel; a last batch of one sample
    gives one to a BatchNorm of (N, C) features: its eval-mode forward in the one-row probe
    just kept one row per channel (``_centred``)."""
    if drop_last or n % batch_size != 1:
        return
    for m in model.modules():
        if type(m).__name__ == "BatchNorm" and len(m.__dict__.get("_centred", ())) == 1:
            raise ValueError(f"fit: the last batch of each epoch would hold 1 sample "
                             f"({n} samples, batch_size={batch_size}), and {m!r} cannot "
                             f"normalise one sample's features in training; pass "
                             f"drop_last=True or another batch_size")
