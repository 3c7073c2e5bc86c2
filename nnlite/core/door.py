"""Checks at the door: arguments, values and data, checked once where they come in, never
per batch; and the probe, one row through a model, that finds layers which do not fit
together before anything runs.

Constructors check their arguments with ``check_number`` and ``check_flag``; ``load``,
``load_weights`` and ``load_state_dict`` pass every parameter and buffer through
``checked``; ``fit``, ``evaluate`` and ``predict`` take data through ``as_arrays`` and
probe the model with ``probe_rows``.

While a file loads (``nnlite.files``), two budgets hold what it can make nnlite do: the
built-in layers make their parameters and buffers with ``new_array``, which may allocate
no more than the arrays the file holds (``allocation_budget``); and every layer call of
the probe is charged, before it runs, an upper bound on the values it allocates and the
steps it takes (``CALL`` plus the layer's own ``cost(shapes)`` where it has one, else
four times its inputs), against ``probe_budget``.
"""
from __future__ import annotations

import contextvars
import math
import re
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

#: The probe budget of a small model, in values (16 MiB of float32).
PROBE_FLOOR = 1 << 22
#: What one layer call costs beyond its arrays (its Python work), in values.
CALL = 1 << 8

#: Bytes that layers may still allocate for parameters and buffers (None: no limit);
#: ``load`` sets it to what the file holds, so a file cannot declare a huge layer.
_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("budget",
                                                                          default=None)
_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("probe", default=None)


@contextmanager
def allocation_budget(nbytes: int) -> Iterator[None]:
    """While active, ``new_array`` refuses to allocate more than ``nbytes`` in all."""
    token = _budget.set([int(nbytes)])
    try:
        yield
    finally:
        _budget.reset(token)


def new_array(shape: tuple[int, ...], dtype: Any, fill: float = 0.0) -> np.ndarray:
    """An array for a parameter or buffer, filled with ``fill``; the built-in layers make
    theirs with it, so that a loaded file's architecture is held to the arrays it has."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    _take(_budget, nbytes, lambda left: f"it declares an array of shape {tuple(shape)} "
                                        f"({nbytes:,} bytes), more than the file holds")
    return np.full(shape, fill, dtype)


@contextmanager
def probe_budget(values: int) -> Iterator[None]:
    """While active, ``probe`` refuses calls whose cost would exceed ``values`` in all."""
    token = _left.set([max(int(values), PROBE_FLOOR)])
    try:
        yield
    finally:
        _left.reset(token)


def probe(layer: Any, x: Any) -> Any:
    """``layer.forward(x)`` at the door: ``check_input`` first, and the call charged first
    while a budget is active; a Sequential's layers are run (checked and charged) one by
    one, an error naming the layer's position."""
    if getattr(layer, "chain", False):
        for i, inner in enumerate(layer.layers):
            try:
                x = probe(inner, x)
            except ValueError as e:
                raise ValueError(_within(i, inner, str(e))) from None
        return x
    if _left.get() is not None:
        shapes = [np.shape(v) for v in (x if isinstance(x, (list, tuple)) else [x])]
        charge(cost(layer, shapes), f"probing {type(layer).__name__} on inputs of shape "
                                    f"{', '.join(map(str, shapes))}")
    layer.check_input(x)
    return layer.forward(x)


def _within(i: int, layer: Any, message: str) -> str:
    """``message`` from layer ``i`` of a Sequential, its path said once, innermost layer
    named: "layer 2.0.1 (Linear): ...", however deep the containers nest."""
    inner = re.match(r"layer ([\d.]+) \((\w+)\): ", message)
    if inner:
        return f"layer {i}.{inner[1]} ({inner[2]}): {message[inner.end():]}"
    return f"layer {i} ({type(layer).__name__}): {message}"


def probe_rows(layer: Any, x: Any) -> Any:
    """``probe`` on the first row of ``x`` (an array, or a list of one per input), in eval
    mode: the checks at the door, as cheap as one sample. An error's shapes are the
    probe's, batch axis 1: it says ``x``'s batch size instead."""
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    rows = [v[:1] for v in xs]
    try:
        with layer.evaluating():
            return probe(layer, rows if isinstance(x, (list, tuple)) else rows[0])
    except ValueError as e:
        raise ValueError(re.sub(r"\(1,", f"({len(xs[0])},", str(e))) from None


def left() -> int | None:
    """The values left in the active probe budget; None when no budget is active."""
    budget = _left.get()
    return None if budget is None else budget[0]


def charge(values: int, what: str) -> None:
    """Take ``values`` from the active budget (if any), or raise a ValueError saying
    ``what`` would have cost them."""
    _take(_left, values, lambda left: f"{what} is too large to rebuild: about {values:,} "
                                      f"values of work, more than the file's budget of {left:,}")


def _take(budget: contextvars.ContextVar, amount: int, refusal: Any) -> None:
    """Take ``amount`` from ``budget`` when one is active, else raise the ValueError
    ``refusal(what is left)`` says."""
    left = budget.get()
    if left is not None:
        if amount > left[0]:
            raise ValueError(refusal(left[0]))
        left[0] -= amount


def cost(layer: Any, shapes: list[tuple[int, ...]]) -> int:
    """What one call of ``layer`` on inputs of ``shapes`` is charged: ``CALL``, plus the
    layer's own ``cost(shapes)`` (an upper bound, in values, on what its forward allocates
    and, for a recurrent layer, the steps it takes) where it has one, else four times its
    inputs."""
    own = getattr(layer, "cost", None)
    return CALL + (own(shapes) if own is not None else 4 * sum(math.prod(s) for s in shapes))


#: The most dimensions a NumPy array has: an axis argument lies in [-MAX_DIMS, MAX_DIMS).
MAX_DIMS = 64


def quote(value: Any, limit: int = 200) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters: a value from a
    file may be a 400-digit number or a kilobyte of nested lists."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 40]}…{text[-20:]} ({len(text):,} characters)"


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
        raise ValueError(f"{owner}: {name} must be {kind}{bounds}, got {quote(value)}")
    return int(value) if integer else float(value)


def check_flag(owner: str, name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a ValueError naming the layer and the argument."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{owner}: {name} must be True or False, got {quote(value)}")
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
def as_arrays(value: Any, dtypes: list[Any], what: str, kind: str) -> list[np.ndarray]:
    """``value`` (``x`` or ``y``: one array, or a list of one per entry of ``dtypes``) as a
    list of arrays of samples, or a ValueError naming the bad one. A floating dtype casts
    (an array already of it is not copied); an integer one (token ids) requires integers
    and keeps them; None keeps any numbers. Not an array: an iterator, a single value, or
    data holding NaN or inf (the first such row is named)."""
    if len(dtypes) == 1:
        value = [value]
    elif not isinstance(value, (list, tuple)) or len(value) != len(dtypes):
        got = f"a list of {len(value)}" if isinstance(value, (list, tuple)) else \
            type(value).__name__
        raise ValueError(f"{what}: the model has {len(dtypes)} "
                         f"{'inputs' if kind == 'x' else 'outputs'}, so {kind} must be a list "
                         f"of {len(dtypes)} arrays; got {got}")
    arrays = []
    for i, (v, dtype) in enumerate(zip(value, dtypes)):
        name = f"{what}: {kind}" if len(dtypes) == 1 else f"{what}: {kind}[{i}]"
        if isinstance(v, Iterator):
            raise ValueError(f"{name} is a {type(v).__name__}; nnlite's fit, evaluate and "
                             f"predict take arrays (np.asarray(list(...)) makes one)")
        if not isinstance(v, np.ndarray) and hasattr(v, "numpy"):
            v = v.numpy()  # a PyTorch tensor (a DataLoader's batch), as an array
        try:
            v = np.asarray(v, dtype=dtype if dtype is not None and dtype.kind == "f" else None)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} is not an array of numbers: {e}") from None
        if v.ndim == 0:
            raise ValueError(f"{name} is a single value, not an array of samples")
        if dtype is not None and dtype.kind in "iu" and v.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer ids ({dtype}), got {v.dtype}")
        with np.errstate(over="ignore"):  # (a sum of large values can overflow: see below)
            suspect = v.dtype.kind == "f" and not np.isfinite(np.sum(v))
        if suspect:  # NaN and inf survive a sum
            finite = np.isfinite(v).reshape(len(v), -1).all(axis=1)
            if not finite.all():  # (a sum of large values can overflow where none is inf)
                raise ValueError(f"{name} has NaN or infinite values, first in row "
                                 f"{int(np.argmin(finite))}")
        arrays.append(v)
    return arrays


def no_y(y: Any, what: str) -> None:
    """A dataset or an iterator of batches carries its targets: ``y`` is left out."""
    if y is not None:
        raise ValueError(f"{what}: x is a dataset or an iterator of (x, y) batches, which "
                         f"hold the targets; leave y out")


def no_batch_size(batch_size: Any, x: Any, what: str) -> None:
    if batch_size is not None:
        raise ValueError(f"{what}: x is made of batches already ({type(x).__name__}), so "
                         f"batch_size={batch_size!r} cannot apply; leave it out")


def check_lengths(xs: list[np.ndarray], ys: list[np.ndarray], what: str) -> None:
    """Some samples, and as many in every input and target."""
    n = len(xs[0])
    if n == 0:
        raise ValueError(f"{what}: x is empty; there is nothing to train or evaluate on")
    for kind, arrays in (("x", xs), ("y", ys)):
        for i, v in enumerate(arrays):
            if len(v) != n:
                name = kind if len(arrays) == 1 else f"{kind}[{i}]"
                raise ValueError(f"{what}: {'x' if len(xs) == 1 else 'x[0]'} has {n} samples "
                                 f"but {name} has {len(v)} samples; they must match")


def whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_batch_size(batch_size: int) -> None:
    if not whole(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")


def check_fit_args(model: Any, optimizer: Any, epochs: Any, initial_epoch: Any) -> None:
    """fit's settings: an optimizer (an object with ``step`` and ``params``) over this
    model's parameters only, whole epoch counts."""
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


def check_last_batch(model: Any, n: int, batch_size: int, drop_last: bool, parts: int = 1
                     ) -> None:
    """Each batch of ``fit(comm=...)`` is cut into ``parts``, one per rank: none may have
    fewer rows. A layer normalising with its batch's statistics in training
    (``batch_statistics``, BatchNorm's) needs two values per channel; a last batch of one
    sample gives one to a BatchNorm of (N, C) features: its eval-mode forward in the
    one-row probe just kept one row per channel (``_centred``)."""
    last = n % batch_size if not drop_last and n % batch_size else batch_size
    if min(batch_size, last) < parts:
        raise ValueError(f"fit: comm cuts each batch into {parts} parts, one per rank, but "
                         f"{'the last batch' if last < batch_size else 'a batch'} of each "
                         f"epoch has {min(batch_size, last)} rows ({n} samples, batch_size="
                         f"{batch_size}); give a larger batch_size or drop_last=True")
    if drop_last or n % batch_size != 1:
        return
    for m in model.modules():
        if getattr(m, "batch_statistics", False) and len(m.__dict__.get("_centred", ())) == 1:
            raise ValueError(f"fit: the last batch of each epoch would hold 1 sample "
                             f"({n} samples, batch_size={batch_size}), and {m!r} cannot "
                             f"normalise one sample's features in training; pass "
                             f"drop_last=True or another batch_size")


def bare(values: list[Any]) -> Any:
    """One array bare, several as the list: how containers take inputs and outputs."""
    return values if len(values) > 1 else values[0]
