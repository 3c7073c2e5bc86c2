"""The values a model may hold: checked once, where arrays come in from outside.

``load``, ``load_weights`` and ``load_state_dict`` pass every parameter and buffer through
``checked`` before anything in the model changes.
"""
from __future__ import annotations

from typing import Any

import numpy as np


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
