"""Saving and loading models and checkpoints: an .npz archive, no pickle.

The archive holds one JSON header (format name and version, the architecture
as nested layer configs, the optimizer's class and hyper-parameters, the
epochs done) and one array per parameter, buffer and optimizer state.
A layer used at several places is described once and referred to after that
(``{"same_as": k}``, the k-th layer described); a Parameter held under several
names (tied weights) is stored once, the other names listed under ``"tied"``.
Writes are atomic; loading never executes code: only Layer classes defined in
the running program are built, from their JSON configs.
"""
from __future__ import annotations

import json
import math
import os
import uuid
import zipfile
import zlib
from typing import Any

import numpy as np

from . import optim
from .layers import Linear
from .layer import LAYER_CLASSES, Layer, allocation_budget, check_number

FORMAT = "nnlite"
VERSION = 2  # 2: layers inside configs, shared layers, tied parameters, Linear's W as
#                (out, in), BatchNorm's batch count; files of version 1 still load
_HEADER = "__nnlite__"
#: Bytes a file's architecture may declare beyond the arrays it holds (small buffers that
#: files of an older version did not store).
_SLACK = 1 << 16
#: The most values one sample of a recorded input shape may have (the load-time probe).
_MAX_PROBE = 1 << 24


def save(model: Layer, path: str | os.PathLike, *, optimizer: optim.Optimizer | None = None,
         epoch: int | None = None) -> None:
    """Write ``model`` (and, for a checkpoint, ``optimizer`` state and ``epoch``) to ``path``."""
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                              "architecture": describe(model)}
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.update({name: first[id(p)]} if id(p) in first else {})
        first.setdefault(id(p), name)
    if tied:
        header["tied"] = tied
    arrays = {f"param/{name}": p.data for name, p in model.named_parameters()}
    arrays.update({f"buffer/{name}": b for name, b in model.named_buffers()})
    if optimizer is not None:
        names = {id(p): name for name, p in model.named_parameters()}
        if sorted(id(p) for p in optimizer.params) != sorted(names):
            raise ValueError(f"cannot checkpoint {path}: the optimizer's parameters are not "
                             f"exactly the model's")
        groups = [{**{k: v for k, v in settings.items() if k != "initial_lr"},
                   "params": [names[id(p)] for p in group["params"]]}
                  for settings, group in zip(optimizer.group_settings(), optimizer.param_groups)]
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "config": optimizer.get_config(), "groups": groups,
                               "steps": optimizer.steps,
                               "initial_lr": [g["initial_lr"] for g in optimizer.param_groups]}
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_arrays().items()})
    if epoch is not None:
        header["epoch"] = int(epoch)
    shapes = model.__dict__.get("input_shapes")
    if shapes:
        header["input_shapes"] = [list(s) for s in shapes]
    arrays[_HEADER] = np.array(json.dumps(header))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> Layer:
    """Rebuild the model saved at ``path`` (architecture and weights)."""
    model, _, _ = _read(path, want_optimizer=False)
    return model


def load_checkpoint(path: str | os.PathLike) -> tuple[Layer, optim.Optimizer, int]:
    """Rebuild ``(model, optimizer, epochs_done)`` from a checkpoint written during ``fit``."""
    model, opt, epoch = _read(path, want_optimizer=True)
    return model, opt, epoch


def describe(layer: Layer, described: list[Layer] | None = None) -> dict[str, Any]:
    """The JSON description of a layer: its class and config, where a layer inside the
    config is described in turn, and one described before is referred to by number."""
    described = [] if described is None else described
    for k, seen in enumerate(described):
        if seen is layer:
            return {"same_as": k}
    config = {name: _encode(value, described) for name, value in layer.get_config().items()}
    described.append(layer)  # numbered after the layers inside it, as build makes them
    return {"class": type(layer).__name__, "config": config}


def build(desc: dict[str, Any], built: list[Layer] | None = None) -> Layer:
    """The layer a ``describe`` result stands for, freshly initialised."""
    built = [] if built is None else built
    if not isinstance(desc, dict) or not isinstance(desc.get("config", {}), dict):
        raise ValueError(f"a layer description must be a JSON object with a config, got "
                         f"{str(desc)[:80]}")
    if "same_as" in desc:
        k = desc["same_as"]
        if not _whole(k) or not 0 <= k < len(built):
            raise ValueError(f"a layer refers to layer {k!r}, which is not described before it")
        return built[k]
    cls = _buildable(desc.get("class"))
    config = {name: _decode(value, built) for name, value in desc.get("config", {}).items()}
    if "layers" in desc:  # version 1: a Sequential's layers beside its config
        if not isinstance(desc["layers"], list):
            raise ValueError("a Sequential's layers must be a list")
        config["layers"] = [build(child, built) for child in desc["layers"]]
    try:
        layer = cls.from_config(config)
    except Exception as e:
        raise ValueError(f"{cls.__name__} cannot be built from the config "
                         f"{json.dumps(desc.get('config'))[:200]}: {e}") from None
    built.append(layer)
    return layer


def _buildable(name: Any) -> type:
    """The Layer class called ``name``: one of nnlite's public layers and containers, or
    one the running program defined; never a private helper."""
    import nnlite

    cls = LAYER_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None or name.startswith("_"):
        raise ValueError(f"unknown layer class {name!r}: define or import it before loading")
    if cls.__module__.startswith("nnlite.") and \
            cls not in (getattr(nnlite.layers, name, None), getattr(nnlite, name, None)):
        raise ValueError(f"{name!r} is not one of nnlite's public layers")
    return cls


def _encode(value: Any, described: list[Layer]) -> Any:
    if isinstance(value, Layer):
        return {"layer": describe(value, described)}
    if isinstance(value, (list, tuple)) and any(isinstance(v, Layer) for v in value):
        return [_encode(v, described) for v in value]
    return value


def _decode(value: Any, built: list[Layer]) -> Any:
    if isinstance(value, dict) and set(value) == {"layer"}:
        return build(value["layer"], built)
    if isinstance(value, list):
        return [_decode(v, built) for v in value]
    return value


def _tie(model: Layer, tied: dict[str, str]) -> None:
    """Make each name in ``tied`` hold the very Parameter of the name it maps to."""
    slots = {name: (owner, attr) for name, owner, attr in model._slots("_params")}
    for alias, name in tied.items():
        if alias not in slots or name not in slots:
            raise ValueError(f"tied parameters {alias!r} and {name!r} are not both in the "
                             f"architecture")
        owner, attr = slots[alias]
        setattr(owner, attr, getattr(*slots[name]))


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it over
    ``path``: a reader sees the old file or the new one, never a torn one. Each write has
    its own temporary file, so two saves to one path at once cannot mix."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save {path}: the folder {folder} does not exist")
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path: str | os.PathLike, want_optimizer: bool):
    """Everything in the file at ``path``, checked: a ValueError naming the file for
    anything that is not exactly a model (and optimizer) nnlite wrote."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not an nnlite file")
    try:
        header, arrays = _open(path)
        version = _check_header(header)
        return _rebuild(header, arrays, want_optimizer, version)
    except Exception as e:  # whatever a file makes a constructor or NumPy raise
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        raise ValueError(f"{path}: {message}") from None


def _open(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and the arrays of an nnlite archive. Each array's size is checked
    against the archive's own record before it is read, and the zip CRC of every member
    (so a flipped byte anywhere is found)."""
    with open(path, "rb") as f:
        magic = f.read(8)
        if magic.startswith(b"\x93NUMPY"):
            raise ValueError(f"{path} is a single NumPy array (.npy), not an nnlite file; "
                             f"nnlite files are .npz archives written by nnlite.save")
        if not magic.startswith(b"PK"):
            kind = "a text file" if _is_text(magic + f.read(512)) else "not a zip archive"
            raise ValueError(f"{path} is not an nnlite file: it is {kind}, and nnlite files "
                             f"are .npz archives written by nnlite.save")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                arrays = {info.filename[:-4]: _member(archive, info)
                          for info in archive.infolist()}
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as e:
            raise ValueError(f"{path} is truncated or corrupt: {e}") from None
    if _HEADER not in arrays:
        raise ValueError(f"{path} is not an nnlite file (it has no {_HEADER} header)")
    raw = arrays.pop(_HEADER)
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{path}: its header is not a JSON text")
    try:
        header = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{path}: its header is not valid JSON ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnlite file")
    return header, arrays


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member, read only after its header's shape agrees with its stored size."""
    if not info.filename.endswith(".npy"):
        raise ValueError(f"unexpected member {info.filename!r}")
    with archive.open(info) as m:
        version = np.lib.format.read_magic(m)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(m)
        if dtype.hasobject:
            raise ValueError(f"{info.filename} holds Python objects, which nnlite never loads")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - m.tell():
            raise ValueError(f"{info.filename} declares shape {shape} of {dtype} "
                             f"({nbytes:,} bytes) but stores {info.file_size - m.tell():,}")
        data = m.read(nbytes)
        if m.read(1) or len(data) != nbytes:  # reading to the end checks the CRC
            raise ValueError(f"{info.filename} is cut short")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C")


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in head


def _check_header(header: dict[str, Any]) -> int:
    """The format version, after checking the header's fields have the right types."""
    version = header.get("version")
    if not _whole(version) or version < 1:
        raise ValueError(f"its format version {version!r} is not a version nnlite wrote")
    if version > VERSION:
        raise ValueError(f"it has format version {version}, newer than this nnlite reads "
                         f"({VERSION}); upgrade nnlite")
    if not isinstance(header.get("architecture"), dict):
        raise ValueError("it has no architecture")
    tied = header.get("tied", {})
    if not isinstance(tied, dict) or not all(isinstance(v, str) for v in tied.values()):
        raise ValueError("its list of tied parameters is not a map of names")
    if "epoch" in header and not (_whole(header["epoch"]) and header["epoch"] >= 0):
        raise ValueError(f"its epoch count {header['epoch']!r} is not a whole number >= 0")
    shapes = header.get("input_shapes")
    if shapes is not None and not (isinstance(shapes, list) and all(
            isinstance(s, list) and all(_whole(d) and d > 0 for d in s) and
            math.prod(s) <= _MAX_PROBE for s in shapes)):
        raise ValueError(f"its input shapes {shapes!r} are not shapes of samples")
    return version


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rebuild(header: dict[str, Any], arrays: dict[str, np.ndarray], want_optimizer: bool,
             version: int):
    tied = header.get("tied", {})
    held = sum(a.nbytes for k, a in arrays.items() if k.startswith(("param/", "buffer/")))
    held += sum(arrays[f"param/{name}"].nbytes for name in tied.values()
                if f"param/{name}" in arrays)
    with allocation_budget(held + _SLACK):
        model = build(header["architecture"])
    if not isinstance(model, Layer):
        raise ValueError("its architecture is not a layer")
    _tie(model, tied)
    used: set[str] = set()
    optional = () if version >= 2 else ("num_batches_tracked",)  # buffers version 1 lacked
    if version < 2:  # version 1 kept Linear's W as (in, out)
        for name, owner, attr in model._slots("_params"):
            if isinstance(owner, Linear) and attr == "weight" and \
                    f"param/{name}" in arrays:
                arrays[f"param/{name}"] = arrays[f"param/{name}"].T
    for name, p in model.named_parameters():
        p.data = _array(arrays, f"param/{name}", p.data, used, "parameter")
        p.grad = np.zeros_like(p.data)
    for name, owner, attr in model._buffer_slots():
        if f"buffer/{name}" not in arrays and name.endswith(optional):
            continue
        setattr(owner, attr, _array(arrays, f"buffer/{name}", getattr(owner, attr), used,
                                    "buffer"))
    unused = sorted(k for k in arrays if k.startswith(("param/", "buffer/")) and k not in used)
    if unused:
        raise ValueError(f"the model rebuilt from its architecture does not use the arrays "
                         f"{', '.join(unused)} (is a layer class defined differently now than "
                         f"when the file was saved?)")
    if header.get("input_shapes"):
        _probe(model, header["input_shapes"])
    epoch = header.get("epoch")
    if not want_optimizer:
        return model, None, epoch
    return model, _optimizer(header, arrays, model), int(epoch or 0)


def _array(arrays: dict[str, np.ndarray], key: str, current: np.ndarray, used: set[str],
           kind: str) -> np.ndarray:
    """A copy of ``arrays[key]``, refused unless it has the shape and dtype the rebuilt
    layer has, and (if floating) only finite values."""
    name = key.split("/", 1)[1]
    if key not in arrays:
        raise ValueError(f"{kind} {name!r} is missing")
    value = arrays[key]
    if value.shape != current.shape:
        raise ValueError(f"{kind} {name!r} has shape {value.shape}, the architecture needs "
                         f"{current.shape}")
    if value.dtype != current.dtype:
        raise ValueError(f"{kind} {name!r} is {value.dtype}, the architecture says "
                         f"{current.dtype}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError(f"{kind} {name!r} holds NaN or infinite values")
    used.add(key)
    return value.copy()


def _probe(model: Layer, shapes: list[list[int]]) -> None:
    """Run the model once on zeros of the input shapes it was used with: an architecture
    whose layers do not fit together fails here, at load, not later at predict."""
    from .layer import get_default_dtype

    dtype = next((p.dtype for p in model.parameters()), get_default_dtype())
    xs = [np.zeros((1, *s), dtype) for s in shapes]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        model.forward(xs if len(xs) > 1 else xs[0])
    finally:
        for m, mode in modes:
            m.training = mode


def _optimizer(header: dict[str, Any], arrays: dict[str, np.ndarray], model: Layer
               ) -> optim.Optimizer:
    spec = header.get("optimizer")
    if spec is None:
        raise ValueError("it holds a model but no optimizer state: it was written by save(), "
                         "not by a checkpoint")
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict) or \
            not (_whole(spec.get("steps")) and spec["steps"] >= 0):
        raise ValueError("its optimizer record is malformed")
    cls = _optimizer_classes().get(spec.get("class"))
    if cls is None:
        raise ValueError(f"unknown optimizer class {spec.get('class')!r}")
    opt = cls(_groups(spec.get("groups"), model), **spec["config"])
    initial_lr = spec.get("initial_lr")
    if initial_lr is not None:
        values = initial_lr if isinstance(initial_lr, list) else [initial_lr]
        if len(values) != len(opt.param_groups):
            raise ValueError("its optimizer has a learning rate per group, but not as many")
        values = [check_number(cls.__name__, "initial_lr", v, low=0) for v in values]
        initial_lr = values if isinstance(initial_lr, list) else values[0]
    state = {}
    for key, value in arrays.items():
        if key.startswith("optim/"):
            if value.dtype != opt.dtype or not np.isfinite(value).all():
                raise ValueError(f"optimizer state {key[6:]!r} is not finite {opt.dtype} "
                                 f"values")
            state[key[len("optim/"):]] = value
    opt.load_state(state, spec["steps"], initial_lr)
    return opt


def _groups(groups: Any, model: Layer) -> list[Any]:
    """The optimizer's parameter groups, by the model's parameter names (a version-1
    checkpoint has one group: the model's parameters in order)."""
    named = dict(model.named_parameters())
    if groups is None:
        return list(named.values())
    if not isinstance(groups, list) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and
            all(isinstance(n, str) and n in named for n in g["params"]) for g in groups):
        raise ValueError("its optimizer's parameter groups do not name the model's parameters")
    return [{**g, "params": [named[n] for n in g["params"]]} for g in groups]


def _optimizer_classes() -> dict[str, type]:
    """The public optimizer classes, nnlite's and the running program's, by name."""
    found, todo = {}, [optim.Optimizer]
    while todo:
        cls = todo.pop()
        if not cls.__name__.startswith("_"):
            found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
