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
import os
import uuid
from typing import Any

import numpy as np

from . import optim
from .layer import LAYER_CLASSES, Layer

FORMAT = "nnlite"
VERSION = 2  # 2: layers inside configs, shared layers, tied parameters (1 still loads)
_HEADER = "__nnlite__"


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
        if [id(p) for p in optimizer.params] != [id(p) for p in model.parameters()]:
            raise ValueError(f"cannot checkpoint {path}: the optimizer's parameters are not "
                             f"exactly the model's, in order")
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "config": optimizer.get_config(), "steps": optimizer.steps,
                               "initial_lr": optimizer.initial_lr}
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_arrays().items()})
    if epoch is not None:
        header["epoch"] = int(epoch)
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
    if "same_as" in desc:
        k = desc["same_as"]
        if not isinstance(k, int) or not 0 <= k < len(built):
            raise ValueError(f"a layer refers to layer {k!r}, which is not described before it")
        return built[k]
    cls = LAYER_CLASSES.get(desc["class"])
    if cls is None:
        raise ValueError(f"unknown layer class {desc['class']!r}: define or import it before "
                         f"loading")
    config = {name: _decode(value, built) for name, value in desc["config"].items()}
    if "layers" in desc:  # version 1: a Sequential's layers beside its config
        config["layers"] = [build(child, built) for child in desc["layers"]]
    layer = cls.from_config(config)
    built.append(layer)
    return layer


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
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        header = json.loads(str(arrays.pop(_HEADER)))
    except KeyError:
        raise ValueError(f"{path} is not an nnlite file (it has no {_HEADER} header)") from None
    except Exception as e:
        raise ValueError(f"{path} is truncated, corrupt or not an nnlite file: {e}") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not an nnlite file")
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        raise ValueError(f"{path} has format version {header.get('version')}, newer than this "
                         f"nnlite reads ({VERSION}); upgrade nnlite")
    try:
        model = build(header["architecture"])
        _tie(model, header.get("tied", {}))
        _fill(path, "parameter", dict(model.named_parameters()), arrays, "param/",
              lambda p, v: setattr(p, "data", v.copy()))
        slots = {name: (owner, attr) for name, owner, attr in model._buffer_slots()}
        _fill(path, "buffer", slots, arrays, "buffer/",
              lambda slot, v: setattr(slot[0], slot[1], v.copy()))
    except (TypeError, KeyError) as e:
        raise ValueError(f"{path}: the architecture in the file cannot be rebuilt: {e}") from e
    for p in model.parameters():
        p.grad = np.zeros_like(p.data)
    if not want_optimizer:
        return model, None, header.get("epoch")
    if "optimizer" not in header:
        raise ValueError(f"{path} holds a model but no optimizer state: it was written by "
                         f"save(), not by a checkpoint")
    spec = header["optimizer"]
    classes = _optimizer_classes()
    if spec["class"] not in classes:
        raise ValueError(f"{path}: unknown optimizer class {spec['class']!r}")
    opt = classes[spec["class"]](model.parameters(), **spec["config"])
    state = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    opt.load_state(state, spec["steps"], spec.get("initial_lr"))
    return model, opt, int(header.get("epoch", 0))


def _fill(path: str, kind: str, targets: dict, arrays: dict, prefix: str, assign) -> None:
    for name, target in targets.items():
        key = prefix + name
        if key not in arrays:
            raise ValueError(f"{path}: {kind} {name!r} is missing")
        value = arrays[key]
        current = target.data if kind == "parameter" else getattr(*target)
        if value.shape != current.shape:
            raise ValueError(f"{path}: {kind} {name!r} has shape {value.shape}, the "
                             f"architecture needs {current.shape}")
        assign(target, value)


def _optimizer_classes() -> dict[str, type]:
    found, todo = {}, [optim.Optimizer]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found
