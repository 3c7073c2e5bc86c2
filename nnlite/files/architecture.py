"""A layer as JSON and back: ``describe`` writes a layer's class and config (layers inside
described in turn, a layer met again referred to by number), ``build`` rebuilds it, taking
only classes nnlite and the running program define (never anything the file names into
being). ``nnlite.files.io`` puts the description in a file's header.
"""
from __future__ import annotations

import json
from typing import Any

from .. import layers
from ..core.door import quote, whole
from ..core.layer import Layer

#: nnlite's public containers, by the name files give them.
_CONTAINERS = {"Sequential": "nnlite.models.sequential:Sequential", "Model": "nnlite.models.graph:Model"}


def describe(layer: Layer, described: dict[int, int] | None = None) -> dict[str, Any]:
    """The JSON description of a layer: its class and config, where a layer inside the
    config is described in turn, and one described before is referred to by number."""
    described = {} if described is None else described  # id -> number, in order
    if id(layer) in described:
        return {"same_as": described[id(layer)]}
    config = {name: _encode(value, described) for name, value in layer.get_config().items()}
    described[id(layer)] = len(described)  # numbered after the layers inside it, as build
    desc = {"class": _class_name(type(layer)), "config": config}  # makes them
    if not layer.trainable:
        desc["trainable"] = False
    return desc


def build(desc: dict[str, Any], built: list[Layer] | None = None) -> Layer:
    """The layer a ``describe`` result stands for, freshly initialised."""
    built = [] if built is None else built
    if not isinstance(desc, dict) or not isinstance(desc.get("config", {}), dict):
        raise ValueError(f"a layer description must be a JSON object with a config, got "
                         f"{str(desc)[:80]}")
    if "same_as" in desc:
        k = desc["same_as"]
        if not whole(k) or not 0 <= k < len(built):
            raise ValueError(f"a layer refers to layer {quote(k)}, which is not described "
                             f"before it")
        return built[k]
    cls = _buildable(desc.get("class"))
    config = {name: _decode(value, built) for name, value in desc.get("config", {}).items()}
    if "layers" in desc:  # version 1: a Sequential's layers beside its config
        if not isinstance(desc["layers"], list):
            raise ValueError("a Sequential's layers must be a list")
        config["layers"] = [build(child, built) for child in desc["layers"]]
    if desc.get("trainable", True) is not True and desc["trainable"] is not False:
        raise ValueError(f"{cls.__name__}: 'trainable' must be true or false, got "
                         f"{str(desc['trainable'])[:40]}")
    try:
        layer = cls.from_config(config)
    except Exception as e:
        raise ValueError(f"{cls.__name__} cannot be built from the config "
                         f"{json.dumps(desc.get('config'))[:200]}: {e}") from None
    if desc.get("trainable") is False:  # its own flag only: the layers inside have theirs
        layer._set_own_trainable(False)
    built.append(layer)
    return layer


def class_key(cls: type) -> str:
    """How a file names a class that is not one of nnlite's: ``"module:qualified name"``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def subclasses(base: type) -> list[type]:
    """Every class the running program has derived from ``base``, in order of definition
    within each family."""
    found, todo = [], list(base.__subclasses__())
    while todo:
        found.append(todo.pop(0))
        todo.extend(found[-1].__subclasses__())
    return found


def _layer_classes() -> dict[str, type]:
    """Every Layer class by ``class_key`` (of one key, the one defined last, as when a
    notebook cell runs again)."""
    return {class_key(cls): cls for cls in subclasses(Layer)}


def _public(name: str) -> type | None:
    """nnlite's public layer or container called ``name``."""
    if name in layers.__all__:
        return getattr(layers, name)
    return _layer_classes().get(_CONTAINERS.get(name, ""))


def _class_name(cls: type) -> str:
    """How a file names ``cls``: nnlite's public classes bare, others module:qualname."""
    return cls.__name__ if _public(cls.__name__) is cls else class_key(cls)


def _buildable(name: Any) -> type:
    """The Layer class a file names: nnlite's public class of a bare name, else the
    program's class of that ``"module:qualified name"``, else the program's only layer
    class of that bare name; never a private helper or another of nnlite's classes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"unknown layer class {name!r}: define or import it before loading")
    bare = name.rpartition(":")[2].rpartition(".")[2]
    public = _public(bare)
    if public is not None and name in (bare, class_key(public)):
        return public
    classes = _layer_classes()
    cls = classes.get(name)
    if cls is not None and not name.startswith("nnlite.") and not bare.startswith("_"):
        return cls
    mine = sorted(key for key, c in classes.items()
                  if c.__name__ == bare and not key.startswith("nnlite."))
    if len(mine) > 1:
        raise ValueError(f"the layer class {name!r} could be any of {', '.join(mine)}; "
                         f"define only one of them before loading")
    if not mine or bare.startswith("_"):
        raise ValueError(f"unknown layer class {name!r}: define or import it before loading")
    return classes[mine[0]]


def _encode(value: Any, described: dict[int, int]) -> Any:
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
