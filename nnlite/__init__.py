"""nnlite: a minimal neural-network framework on NumPy, built on the chain rule.

The layout is the architecture; each subpackage's docstring says what it holds and what it
may import (the floors are import-linter contracts in setup.cfg, lowest first):

- ``core``: what one training step is: Parameter, the Layer contract, losses, the
  optimizer contract, the checks at the door. Imports nothing else of nnlite.
- ``kernels``: compiled twins of a few NumPy passes (the ``numba`` extra).
- ``layers``: the built-in layers, one family per module.
- ``training``: the loop ``fit`` runs and what plugs into it (callbacks, schedules,
  rollback, streams, threads, text generation).
- ``optim``: torch.optim's update rules, and the schedules.
- ``files``: nnlite files, state dicts in safetensors, ONNX.
- ``datasets``: MNIST, Fashion-MNIST, tiny-shakespeare, IDX files, text vocabularies.
- ``models``: the containers, Sequential and the graph Model, with fit, save and load.
- ``check`` and ``plot``: Jacobians, gradient checks, Lipschitz constants, figures.
- ``sklearn``: scikit-learn estimators.
- ``distributed``: data-parallel ``fit`` across processes over MPI (the ``mpi`` extra).

Nothing is loaded until it is used: ``import nnlite`` reads this file only.
"""
from .core import attach

__version__ = "0.2.0"
__getattr__, __dir__ = attach(__name__, {
    "Parameter": ".core.parameter", "set_default_dtype": ".core.parameter",
    "get_default_dtype": ".core.parameter", "Layer": ".core.layer", "set_seed": ".core.layer",
    "Sequential": ".models.sequential", "Model": ".models.graph", "Input": ".models.symbolic",
    "save": ".models.loading", "load": ".models.loading", "load_checkpoint": ".models.loading",
    "export_onnx": ".files.onnx",
    **{name: f".{name}" for name in ("layers", "losses", "optim", "callbacks", "check",
                                     "datasets", "kernels", "metrics", "plot", "onnx",
                                     "sklearn", "distributed")}})
__all__ = ["Parameter", "Layer", "Sequential", "Input", "Model", "set_seed",
           "set_default_dtype", "get_default_dtype", "save", "load", "load_checkpoint",
           "export_onnx",
           "layers", "losses", "optim", "callbacks", "check", "datasets", "kernels", "metrics",
           "plot"]
