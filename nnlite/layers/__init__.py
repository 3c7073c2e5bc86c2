"""nnlite's layers, one module per family."""
from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .dense import Flatten, Linear
from .regularisation import Dropout

__all__ = ["Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Dropout"]
