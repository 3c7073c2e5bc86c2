"""Checks at the door: arguments and values, checked once where they come in.

Constructors check their arguments with ``check_number`` and ``check_flag``; ``load``,
``load_weights`` and ``load_state_dict`` pass every parameter and buffer through
``checked`` before anything in the model changes. Nothing here runs per batch.
"""
from __future__ import annotations

import math
from typing import Any

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
