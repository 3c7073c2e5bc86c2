"""nnlite: a minimal neural-network framework on NumPy, built on the chain rule."""
from . import callbacks, check, datasets, kernels, layers, losses, optim, plot
from .graph import Model
from .io import load, load_checkpoint, save
from .layer import Layer, set_seed
from .parameter import Parameter, get_default_dtype, set_default_dtype
from .onnx import export_onnx
from .sequential import Sequential
from .symbolic import Input

__version__ = "0.2.0"
__all__ = ["Parameter", "Layer", "Sequential", "Input", "Model", "set_seed",
           "set_default_dtype", "get_default_dtype", "save", "load", "load_checkpoint",
           "export_onnx",
           "layers", "losses", "optim", "callbacks", "check", "datasets", "kernels", "plot"]
