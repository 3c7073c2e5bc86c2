"""Saving and loading models and checkpoints: an .npz archive, no pickle.

The archive holds one JSON header (format name and version, the architecture
as nested layer configs, the optimizer's class and hyper-parameters, the
epochs done) and one array per parameter, buffer and optimizer state.
A layer used at several places is described once and referred to after that
(``{"same_as": k}``, the k-th layer described); a Parameter held under several
names (tied weights) is stored once, the other names listed under ``"tied"``.
A class is named by its bare name when it is one of nnlite's public layers or
containers (always built from nnlite), else as ``"module:qualified name"``; loading takes
that class, or, when the program defines it elsewhere, the program's only layer class of
that name (two are an error naming both). Writes are atomic; loading never executes code:
only Layer classes defined in the running program are built, from their JSON configs,
and ``nnlite.files.archive`` and ``nnlite.files.budget`` bound what a file can make nnlite inflate,
allocate and run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from .. import kernels, layers, optim
from ..core import losses
from ..core.door import allocation_budget, check_number, checked, probe_budget, quote, whole
from ..core.layer import Layer
from .architecture import build, describe, subclasses
from .archive import HEADER, Archive, atomic_write, little_endian
from .budget import check_expansion, probe_model

FORMAT = "nnlite"
VERSION = 4  # 2: layers inside configs, shared layers, tied parameters, Linear's W as
#                (out, in), BatchNorm's batch count; 3: classes other than nnlite's own as
#                "module:qualified name"; 4: optimizer state per parameter, by name;
#                files of versions 1 to 3 still load
#: Bytes a file's architecture may declare beyond the arrays it holds (small buffers that
#: files of an older version did not store).
_SLACK = 1 << 16
#: The most characters of a refusal's reason shown.
_MESSAGE = 1000


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
        problem = _uncovered(model, optimizer)
        if problem:
            raise ValueError(f"cannot checkpoint {path}: {problem}")
        groups = [{**{k: v for k, v in settings.items() if k != "initial_lr"},
                   "params": [names[id(p)] for p in group["params"]]}
                  for settings, group in zip(optimizer.group_settings(), optimizer.param_groups)]
        header["optimizer"] = {"class": type(optimizer).__name__,
                               "config": optimizer.get_config(), "groups": groups,
                               "steps": optimizer.steps,
                               "initial_lr": [g["initial_lr"] for g in optimizer.param_groups]}
        arrays.update({f"optim/{k}": v for k, v in optimizer.state_arrays(names).items()})
    if epoch is not None:
        header["epoch"] = int(epoch)
    trained = _described_losses(model.__dict__.get("_trained_with"))
    if trained is not None:
        header["loss"] = trained
    shapes = model.__dict__.get("input_shapes")
    if shapes:
        header["input_shapes"] = [list(s) for s in shapes]
    arrays = little_endian(arrays)
    arrays[HEADER] = np.array(json.dumps(header))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> Layer:
    """Rebuild the model saved at ``path`` (architecture and weights)."""
    model, _, _ = _read(path, want_optimizer=False)
    return model


def load_checkpoint(path: str | os.PathLike) -> tuple[Layer, optim.Optimizer, int]:
    """Rebuild ``(model, optimizer, epochs_done)`` from a checkpoint written during ``fit``."""
    model, opt, epoch = _read(path, want_optimizer=True)
    return model, opt, epoch


def _tie(model: Layer, tied: dict[str, str]) -> None:
    """Make each name in ``tied`` hold the very Parameter of the name it maps to."""
    for alias, name in tied.items():
        owner, attr = _slot(model, alias)
        own, shared = getattr(owner, attr), getattr(*_slot(model, name))
        if own.shape != shared.shape or own.dtype != shared.dtype:
            raise ValueError(f"tied parameter {alias!r} is {own.dtype} of shape {own.shape} in "
                             f"the architecture; {name!r}, which it is tied to, is "
                             f"{shared.dtype} of shape {shared.shape}")
        setattr(owner, attr, shared)


def _slot(model: Layer, name: str) -> tuple[Layer, str]:
    """The layer and attribute holding the parameter called ``name`` ("0.block.1.weight"),
    found by following the name, not by listing every path."""
    *path, attr = name.split(".")
    owner, parts = model, iter(path)
    for part in parts:
        child = owner.__dict__.get("_children", {}).get(part)
        if isinstance(child, (list, tuple)):
            index = next(parts, "")
            child = child[int(index)] if index.isdigit() and int(index) < len(child) else None
        if not isinstance(child, Layer):
            break
        owner = child
    else:
        if attr in owner.__dict__.get("_params", {}):
            return owner, attr
    raise ValueError(f"tied parameter {quote(name)} is not in the architecture")


def _read(path: str | os.PathLike, want_optimizer: bool):
    """Everything in the file at ``path``, checked: a ValueError naming the file for
    anything that is not exactly a model (and optimizer) nnlite wrote."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder, not an nnlite file")
    try:
        with Archive(path) as archive:
            header = archive.header()
            version = _check_header(header)
            return _rebuild(header, archive, want_optimizer, version)
    except Exception as e:  # whatever a file makes a constructor or NumPy raise
        if isinstance(e, ValueError) and str(e).startswith(path):
            raise
        message = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        if len(message) > _MESSAGE:  # whatever a constructor quoted of the file, bounded
            message = f"{message[:_MESSAGE]}… ({len(message):,} characters)"
        raise ValueError(f"{path}: {message}") from None


def _check_header(header: dict[str, Any]) -> int:
    """The format version, after checking the header's fields have the right types."""
    version = header.get("version")
    if not whole(version) or version < 1:
        raise ValueError(f"its format version {quote(version)} is not a version nnlite wrote")
    if version > VERSION:
        raise ValueError(f"it has format version {version}, newer than this nnlite reads "
                         f"({VERSION}); upgrade nnlite")
    if not isinstance(header.get("architecture"), dict):
        raise ValueError("it has no architecture")
    tied = header.get("tied", {})
    if not isinstance(tied, dict) or not all(isinstance(v, str) for v in tied.values()):
        raise ValueError("its list of tied parameters is not a map of names")
    if "epoch" in header and not (whole(header["epoch"]) and header["epoch"] >= 0):
        raise ValueError(f"its epoch count {quote(header['epoch'])} is not a whole number "
                         f">= 0")
    shapes = header.get("input_shapes")
    if shapes is not None and not (isinstance(shapes, list) and all(
            isinstance(s, list) and all(whole(d) and d > 0 for d in s) for s in shapes)):
        raise ValueError(f"its input shapes {str(shapes)[:80]} are not shapes of samples")
    return version


def _rebuild(header: dict[str, Any], archive: Archive, want_optimizer: bool, version: int):
    tied = header.get("tied", {})
    sizes = {k: math.prod(shape) * dtype.itemsize
             for k in archive.names for shape, dtype in [archive.declared(k)]}
    held = sum(n for k, n in sizes.items() if k.startswith(("param/", "buffer/")))
    held += sum(sizes.get(f"param/{name}", 0) for name in tied.values())
    with allocation_budget(held + _SLACK), probe_budget(held // 4), kernels.numpy_path():
        model = build(header["architecture"])
        if not isinstance(model, Layer):
            raise ValueError("its architecture is not a layer")
        check_expansion(model)
        _tie(model, tied)
        wanted = _members(model, header, version)
        unknown = [k for k in archive.names if k not in wanted and not (
            k.startswith("optim/") and "optimizer" in header)]
        if unknown:
            raise ValueError(f"the model rebuilt from its architecture does not use the "
                             f"arrays {', '.join(sorted(unknown))} (is a layer class defined "
                             f"differently now than when the file was saved?)")
        for key, (owner, attr, kind, transposed) in wanted.items():
            held = getattr(owner, attr)
            if kind == "parameter":
                held.data = _array(archive, key, held.data, kind, transposed)
                held.grad = np.zeros_like(held.data)
            else:
                setattr(owner, attr, _array(archive, key, held, kind, transposed))
        if header.get("input_shapes"):
            probe_model(model, header["input_shapes"])
    if "loss" in header:
        model._trained_with = _losses(header["loss"], model)
    epoch = header.get("epoch")
    if not want_optimizer:
        return model, None, epoch
    if epoch is None:
        raise ValueError("it has no epoch count: it was written by save(), not by a checkpoint")
    return model, _optimizer(header, archive, model, version), epoch


def _members(model: Layer, header: dict[str, Any], version: int
             ) -> dict[str, tuple[Layer, str, str, bool]]:
    """member name -> (layer, attribute, "parameter" or "buffer", stored transposed) of
    every array the rebuilt model takes from the file, each parameter and buffer once."""
    wanted, seen = {}, set()
    for name, owner, attr in model._slots("_params"):
        if id(getattr(owner, attr)) not in seen:
            seen.add(id(getattr(owner, attr)))
            old_linear = version < 2 and isinstance(owner, layers.Linear) and attr == "weight"
            wanted[f"param/{name}"] = (owner, attr, "parameter", old_linear)
    for name, owner, attr in model._slots("_buffers"):
        if version >= 2 or not name.endswith("num_batches_tracked"):  # version 1 lacked it
            wanted[f"buffer/{name}"] = (owner, attr, "buffer", False)
    return wanted


def _array(archive: Archive, key: str, current: np.ndarray, kind: str, transposed: bool
           ) -> np.ndarray:
    """``archive``'s member ``key``, refused before it is inflated unless it has the shape
    and dtype the rebuilt layer has, and after unless its values are valid."""
    name = key.split("/", 1)[1]
    if key not in archive.infos:
        raise ValueError(f"{kind} {name!r} is missing")
    shape, dtype = archive.declared(key)
    shape = shape[::-1] if transposed else shape  # version 1 kept Linear's W as (in, out)
    if shape != current.shape:
        raise ValueError(f"{kind} {name!r} has shape {shape}, the architecture needs "
                         f"{current.shape}")
    if dtype.newbyteorder("=") != current.dtype.newbyteorder("="):
        raise ValueError(f"{kind} {name!r} is {dtype}, the architecture says "
                         f"{current.dtype}")
    value = archive.read(key)
    return checked(kind, name, value.T if transposed else value, current)


def _optimizer(header: dict[str, Any], archive: Archive, model: Layer, version: int
               ) -> optim.Optimizer:
    """The checkpoint's optimizer over ``model``'s parameters, with exactly the state its
    class keeps (``Optimizer.load_state`` checks every entry)."""
    spec = header.get("optimizer")
    if spec is None:
        raise ValueError("it holds a model but no optimizer state: it was written by save(), "
                         "not by a checkpoint")
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ValueError("its optimizer record is malformed")
    cls = _optimizer_classes().get(spec.get("class"))
    if cls is None:
        raise ValueError(f"unknown optimizer class {quote(spec.get('class'))}")
    opt = cls(_groups(spec.get("groups"), model), **spec["config"])
    initial_lr = spec.get("initial_lr")
    if initial_lr is not None:
        values = initial_lr if isinstance(initial_lr, list) else [initial_lr]
        if len(values) != len(opt.param_groups):
            raise ValueError("its optimizer has a learning rate per group, but not as many")
        values = [check_number(cls.__name__, "initial_lr", v, low=0) for v in values]
        if not all(values):
            raise ValueError(f"{cls.__name__}: initial_lr must be positive, got {initial_lr}")
        initial_lr = values if isinstance(initial_lr, list) else values[0]
    problem = _uncovered(model, opt)
    if problem:
        raise ValueError(problem)
    state = {k[len("optim/"):]: archive.read(k) for k in archive.names if k.startswith("optim/")}
    names = {id(p): name for name, p in model.named_parameters()}
    if version < 4:
        state = _per_parameter(state, opt, names)
    opt.load_state(state, spec.get("steps"), names, initial_lr)
    return opt


def _per_parameter(flat: dict[str, np.ndarray], opt: optim.Optimizer, names: dict[int, str]
                   ) -> dict[str, np.ndarray]:
    """A version-3 checkpoint's state (one flat array per group and state, "i/name" when
    there are several groups) cut into each parameter's array. The flat order is the
    order the groups list their parameters in, which only the header records: it is taken
    only where each group lists them in the model's order, as an optimizer built on
    ``model.parameters()`` does, and refused otherwise, not guessed."""
    order = {i: k for k, i in enumerate(names)}
    state = {}
    for i, group in enumerate(opt._groups):
        params = group.store.params
        if [order[id(p)] for p in params] != sorted(order[id(p)] for p in params):
            raise ValueError(f"its optimizer's group {i} lists the parameters out of the "
                             f"model's order, and this version-3 file keeps their state in "
                             f"one array, so which state is whose is not known")
        prefix = f"{i}/" if len(opt._groups) > 1 else ""
        for key in [k for k in flat if k.startswith(prefix) and "/" not in k[len(prefix):]]:
            values, start = flat.pop(key), 0
            if values.shape != (group.store.data.size,):
                raise ValueError(f"state {key!r} has shape {values.shape}; its parameters "
                                 f"need ({group.store.data.size},)")
            for p in params:
                state[f"{names[id(p)]}/{key[len(prefix):]}"] = \
                    values[start:start + p.size].reshape(p.shape)
                start += p.size
    return {**state, **flat}  # what is left over is refused by name


def _uncovered(model: Layer, optimizer: optim.Optimizer) -> str | None:
    """What is wrong with ``optimizer`` as the one training ``model``: it must hold only
    the model's parameters, and every trainable one (frozen ones it may leave out)."""
    mine = {id(p) for p in optimizer.params}
    if not mine <= {id(p) for p in model.parameters()}:
        return "the optimizer holds parameters that are not the model's"
    left_out = [name for name, p in model.named_parameters()
                if p.requires_grad and id(p) not in mine]
    if left_out:
        return (f"the optimizer does not hold the model's trainable parameter "
                f"{left_out[0]!r} ({len(left_out)} left out)")
    return None


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
    return {cls.__name__: cls for cls in subclasses(optim.Optimizer)
            if not cls.__name__.startswith("_")}


def _described_losses(trained: Any) -> Any:
    """The loss (or list of losses) a model was trained with, as a file records it: class
    and config; None when there is none, or one is not nnlite's (not recorded)."""
    if trained is None:
        return None
    listed = isinstance(trained, list)
    described = [{"class": type(fn).__name__, "config": fn.get_config()}
                 for fn in (trained if listed else [trained])]
    if any(_LOSSES.get(d["class"]) is not type(fn)
           for d, fn in zip(described, trained if listed else [trained])):
        return None
    return described if listed else described[0]


def _losses(spec: Any, model: Layer) -> Any:
    """The loss (or losses) a file records, rebuilt from nnlite's own loss classes only."""
    listed = isinstance(spec, list)
    specs = spec if listed else [spec]
    if listed != (getattr(model, "n_outputs", 1) > 1) or len(specs) != getattr(
            model, "n_outputs", 1):
        raise ValueError("its loss record does not give one loss per output of the model")
    built = []
    for d in specs:
        cls = _LOSSES.get(d.get("class")) if isinstance(d, dict) else None
        if cls is None or not isinstance(d.get("config", {}), dict):
            raise ValueError(f"its loss record {quote(d)} is not one of nnlite's losses")
        try:
            built.append(cls(**d.get("config", {})))
        except (TypeError, ValueError) as e:
            raise ValueError(f"its loss {cls.__name__} cannot be built: {e}") from None
    return built if listed else built[0]


#: The losses a file may name.
_LOSSES = {cls.__name__: cls for cls in (losses.MSE, losses.CrossEntropy,
                                         losses.BinaryCrossEntropy)}
