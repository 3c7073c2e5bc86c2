"""Saving and loading models and checkpoints: an .npz archive, no pickle.

The archive holds one JSON header (format name and version, the architecture
as nested layer configs, the optimizer's class and hyper-parameters, the
epochs done) and one array per parameter, buffer and optimizer state.
Writes are atomic; loading never executes code.
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
VERSION = 1
_HEADER = "__nnlite__"


def save(model: Layer, path: str | os.PathLike, *, optimizer: optim.Optimizer | None = None,
         epoch: int | None = None) -> None:
    """Write ``model`` (and, for a checkpoint, ``optimizer`` state and ``epoch``) to ``path``."""
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                              "architecture": describe(model)}
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


def describe(layer: Layer) -> dict[str, Any]:
    """The JSON description of a layer: its class, config and, for containers, children."""
    desc: dict[str, Any] = {"class": type(layer).__name__, "config": layer.get_config()}
    if hasattr(layer, "layers"):
        desc["layers"] = [describe(child) for child in layer.layers]
    return desc


def build(desc: dict[str, Any]) -> Layer:
    """The layer a ``describe`` result stands for, freshly initialised."""
    cls = LAYER_CLASSES.get(desc["class"])
    if cls is None:
        raise ValueError(f"unknown layer class {desc['class']!r}: define or import it before "
                         f"loading")
    children = [build(child) for child in desc.get("layers", [])]
    return cls(*children, **desc["config"])


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
