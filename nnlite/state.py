"""State dicts with PyTorch's names and layouts, and weights files in safetensors.

``state_dict(model)`` maps every parameter and buffer to an array under the dotted
name PyTorch gives the same architecture built from ``torch.nn`` layers ("0.weight",
"3.running_var"); nnlite's layers keep PyTorch's layouts, so the arrays are the same.
A graph Model names its layers by position in the order of first use, as a Sequential
does.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, NamedTuple

import numpy as np

from .layer import Layer


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as torch's named tuple."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _slots(model: Layer) -> dict[str, tuple[Layer, str, bool]]:
    """name -> (owning layer, attribute, is a parameter), for every name PyTorch would list
    (a tied or shared parameter under each of its names)."""
    slots = {name: (owner, attr, True) for name, owner, attr in model._slots("_params")}
    slots.update((name, (owner, attr, False)) for name, owner, attr in model._slots("_buffers"))
    return slots


def state_dict(model: Layer) -> dict[str, np.ndarray]:
    """``{name: array}`` of every parameter and buffer, as copies."""
    out = {}
    for name, (owner, attr, is_param) in _slots(model).items():
        value = getattr(owner, attr)
        out[name] = np.array(value.data if is_param else value)
    return out


def load_state_dict(model: Layer, state: Mapping[str, Any], strict: bool = True,
                    source: str = "state_dict") -> IncompatibleKeys:
    """Copy ``state`` (PyTorch's names) into the model's parameters and buffers,
    converted to their dtypes. Raises ValueError naming every missing key, unexpected key
    and shape mismatch (with ``strict=False``, only shape mismatches; missing entries are
    left as they were). Nothing is changed unless everything fits."""
    slots = _slots(model)
    missing = [name for name in slots if name not in state]
    unexpected = [name for name in state if name not in slots]
    problems, updates = [], []
    for name, (owner, attr, is_param) in slots.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        current = getattr(owner, attr)
        current = current.data if is_param else current
        if value.shape != current.shape:
            problems.append(f"{name!r} has shape {value.shape}, the model needs "
                            f"{current.shape}")
            continue
        if value.dtype.kind not in ("f" if is_param else "fiu"):
            problems.append(f"{name!r} holds {value.dtype} values, not "
                            f"{'floating-point numbers' if is_param else 'numbers'}")
            continue
        if is_param and not np.isfinite(value).all():
            problems.append(f"{name!r} holds NaN or infinite values")
            continue
        updates.append((current, value))
    if strict:
        problems += [f"missing key {name!r}" for name in missing]
        problems += [f"unexpected key {name!r}" for name in unexpected]
    if problems:
        raise ValueError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    for current, value in updates:
        current[...] = value   # in place: optimizers' views stay valid
    return IncompatibleKeys(missing, unexpected)


def save_weights(model: Layer, path: str | os.PathLike) -> None:
    """Write ``state_dict(model)`` to ``path`` as a safetensors file, atomically."""
    from safetensors.numpy import save

    from .io import atomic_write

    data = save(state_dict(model), metadata={"format": "pt"})
    atomic_write(path, lambda f: f.write(data))


def load_weights(model: Layer, path: str | os.PathLike, strict: bool = True) -> IncompatibleKeys:
    """Read a safetensors file (written by ``save_weights`` or by
    ``safetensors.torch.save_file(torch_model.state_dict(), path)``) into the model."""
    from safetensors.numpy import load

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        state = load(data)
    except Exception as e:  # the Rust reader's error, or NumPy refusing a dtype
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    return load_state_dict(model, state, strict, source=path)
