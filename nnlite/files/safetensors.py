"""Weights files in safetensors (what PyTorch's ``safetensors.torch`` reads and writes):
``save_weights`` writes a model's state dict, ``load_weights`` reads one into a model, and
``read_safetensors`` checks every entry of a file against the format before use.
"""
from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..core.door import whole as _whole
from ..core.state import IncompatibleKeys, load_state_dict, state_dict
from .archive import atomic_write, little_endian, strict_json

#: A ``nnlite.Layer``.
Layer = Any
#: safetensors' dtypes as NumPy reads them (little-endian); BF16 is widened to float32.
_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8",
           "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
           "U8": "u1", "BOOL": "?"}
#: The largest safetensors header read, in bytes: room for about 150,000 tensors, a budget
#: Python's json parses in about a second (the safetensors library allows 100 MB).
_MAX_HEADER = 16 << 20


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
