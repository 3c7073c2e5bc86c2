"""nnlite: a minimal neural-network framework on NumPy, built on the chain rule."""
from . import callbacks, check, datasets, layers, losses, optim
from .io import load, load_checkpoint, save
from .layer import Layer, Parameter, set_seed
from .model import Sequential

__version__ = "0.1.0"
__all__ = ["Parameter", "Layer", "Sequential", "set_seed", "save", "load", "load_checkpoint",
           "layers", "losses", "optim", "callbacks", "check", "datasets"]
