"""``nnlite.save``, ``load`` and ``load_checkpoint`` (``nnlite.files.io``), with the
containers a file may name (``"Sequential"``, ``"Model"``) defined first."""
from ..files.io import load, load_checkpoint, save
from . import graph, sequential  # noqa: F401  (the classes a file names)

__all__ = ["save", "load", "load_checkpoint"]
