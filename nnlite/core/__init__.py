"""The core: what one training step is, readable in one sitting.

- ``parameter``: a Parameter, an array and its gradient.
- ``layer``: the Layer contract, y = f(x): ``forward``, ``backward`` (the vector-Jacobian
  product g·J), ``jvp`` (the Jacobian-vector product J·v); and the walks over layers
  inside layers (parameters, modes, freezing, state dicts).
- ``losses``: the scalar that starts backpropagation, and its gradient dL/dpred.
- ``optimizer``: the optimizer contract and the flat stores its rules update.
- ``validate`` and ``budget``: the checks at the door (arguments, data, one row through
  the model), once per call, never per batch.
- here: ``attach``, how a package loads its names on first use (PEP 562).

One batch of ``fit`` is: out = model.forward(x); loss = L(out, y); model.backward(dL/dout);
optimizer.step(). The containers that chain layers are in ``nnlite.models``, the loop
around the step in ``nnlite.training``.

May import: nothing else of nnlite (numpy only).
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def attach(package: str, where: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list]]:
    """``__getattr__`` and ``__dir__`` for the package or module ``package``: each name in
    ``where`` comes from the module named beside it (relative to ``package``'s package),
    imported the first time it is used;
    a name whose module is its own name (``"layers": ".layers"``) is that module. A name,
    once loaded, is the package's own attribute."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(where[name], sys.modules[package].__package__)
        value = module if where[name].rpartition(".")[2] == name else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(where) | set(sys.modules[package].__dict__))
    return __getattr__, __dir__
