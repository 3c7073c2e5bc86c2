"""nnlite's layers, one module per family."""
from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .convolution import AvgPool2D, Conv2D, MaxPool2D
from .dense import Flatten, Linear
from .merge import Add, Concatenate, Multiply
from .normalisation import BatchNorm
from .regularisation import Dropout, RandomShift

__all__ = ["Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Dropout", "RandomShift", "Conv2D", "MaxPool2D", "AvgPool2D", "BatchNorm",
           "Add", "Multiply", "Concatenate"]
