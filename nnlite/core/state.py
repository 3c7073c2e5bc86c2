"""State dicts with PyTorch's names and layouts (files of them: ``nnlite.files.safetensors``).

``state_dict(model)`` maps every parameter and buffer to an array under the dotted
name PyTorch gives the same architecture built from ``torch.nn`` layers ("0.weight",
"3.running_var"); nnlite's layers keep PyTorch's layouts, so the arrays are the same.
A graph Model names its layers by position in the order of first use, as a Sequential
does.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from .door import checked

#: A ``nnlite.Layer``: this module sits below the layer contract (whose ``state_dict``
#: methods call it), so it walks layers without importing them.
Layer = Any
class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as torch's named tuple."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _slots(model: Layer) -> dict[str, tuple[Layer, str, bool]]:
    """name -> (owning layer, attribute, is a parameter), for every name PyTorch would list
    (a tied or shared parameter under each of its names)."""
    return {name: (owner, attr, kind == "_params") for kind in ("_params", "_buffers")
            for name, owner, attr in model._slots(kind, every_path=True)}


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
    left as they were). Values are checked after the conversion (finite; variances >= 0;
    counts whole numbers >= 0). Nothing is changed unless everything fits."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{source} must be a mapping of names to arrays (such as "
                         f"model.state_dict()), got {type(state).__name__}")
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
        try:
            updates.append((current, checked("parameter" if is_param else "buffer", name,
                                             value, current)))
        except ValueError as e:
            problems.append(str(e))
    if strict:
        problems += [f"missing key {name!r}" for name in missing]
        problems += [f"unexpected key {name!r}" for name in unexpected]
    if problems:
        raise ValueError(f"{source} does not fit {type(model).__name__}: " + "; ".join(problems))
    for current, value in updates:
        current[...] = value   # in place: optimizers' views stay valid
    return IncompatibleKeys(missing, unexpected)
