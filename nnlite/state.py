"""State dicts with PyTorch's names and layouts, and weights files in safetensors.

``state_dict(model)`` maps every parameter and buffer to an array under the dotted
name PyTorch gives the same architecture built from ``torch.nn`` layers ("0.weight",
"3.running_var"); nnlite's layers keep PyTorch's layouts, so the arrays are the same.
A graph Model names its layers by position in the order of first use, as a Sequential
does.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, NamedTuple

import numpy as np

from .archive import atomic_write, little_endian, strict_json
from .validate import checked, whole as _whole

#: A ``nnlite.Layer``: this module sits below the layer contract (whose ``state_dict``
#: methods call it), so it walks layers without importing them.
Layer = Any
#: safetensors' dtypes as NumPy reads them (little-endian); BF16 is widened to float32.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
           "U8": "u1", "BOOL": "?"}
#: The largest safetensors header read, in bytes: room for about 150,000 tensors, a budget
#: Python's json parses in about a second (the safetensors library allows 100 MB).
_MAX_HEADER = 16 << 20


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


def save_weights(model: Layer, path: str | os.PathLike) -> None:
    """Write ``state_dict(model)`` to ``path`` as a safetensors file, atomically."""
    from safetensors.numpy import save

    data = save(little_endian(state_dict(model)), metadata={"format": "pt"})
    atomic_write(path, lambda f: f.write(data))


def load_weights(model: Layer, path: str | os.PathLike, strict: bool = True) -> IncompatibleKeys:
    """Read a safetensors file (written by ``save_weights`` or by
    ``safetensors.torch.save_file(torch_model.state_dict(), path)``, in any float dtype:
    bfloat16 and float16 widen exactly) into the model."""
    return load_state_dict(model, read_safetensors(path), strict, source=os.fspath(path))


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{name: array}`` of a safetensors file, every entry checked against the format: a
    key once, a known dtype, a shape whose size is its byte range, ranges that tile the
    data. bfloat16 becomes float32 (its 16 bits are a float32's top half)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not a safetensors file")
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"PK"):
            raise ValueError(f"{path} is a zip archive (an nnlite .npz file?), not a "
                             f"safetensors file; load it with nnlite.load")
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        size = os.fstat(f.fileno()).st_size
        if not 0 < n <= size - 8:
            raise ValueError(f"{path} is not a readable safetensors file: it does not start "
                             f"with the length of a JSON header inside the file")
        if n > _MAX_HEADER:
            raise ValueError(f"{path}: its header of {n:,} bytes is larger than nnlite reads "
                             f"({_MAX_HEADER:,})")
        try:
            header = strict_json(f.read(n).decode("utf-8"))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
        data = f.read()
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable safetensors file: its header is not a map")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ValueError(f"{path}: its __metadata__ is not a map of strings to strings")
    for name, spec in header.items():
        ok = isinstance(spec, dict) and spec.get("dtype") in _DTYPES and \
            isinstance(spec.get("shape"), list) and \
            all(_whole(d) and d >= 0 for d in spec["shape"]) and \
            isinstance(spec.get("data_offsets"), list) and len(spec["data_offsets"]) == 2 \
            and all(_whole(o) and o >= 0 for o in spec["data_offsets"])
        if not ok:
            raise ValueError(f"{path}: entry {name!r} is not a tensor as safetensors describes "
                             f"one (dtype one of {', '.join(_DTYPES)}, shape, data_offsets)")
    tensors, end = {}, 0
    for name, spec in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        tensors[name], end = _tensor(path, name, spec, data, end)
    if end != len(data):
        raise ValueError(f"{path}: its tensors cover {end:,} of its {len(data):,} data bytes")
    return tensors


def _tensor(path: str, name: str, spec: Any, data: bytes, start: int
            ) -> tuple[np.ndarray, int]:
    """Entry ``name`` of a safetensors header, whose bytes must begin at ``start``."""
    dtype, shape, (begin, end) = np.dtype(_DTYPES[spec["dtype"]]), spec["shape"], \
        spec["data_offsets"]
    if begin != start or end != begin + math.prod(shape) * dtype.itemsize or end > len(data):
        raise ValueError(f"{path}: entry {name!r} of shape {tuple(shape)} {spec['dtype']} "
                         f"does not fit its bytes {spec['data_offsets']}")
    array = np.frombuffer(data, dtype, math.prod(shape), begin).reshape(shape)
    if spec["dtype"] == "BF16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array, end
