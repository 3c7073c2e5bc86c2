"""nnlite's layers, one module per family."""
from .activations import GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from .attention import MultiHeadAttention
from .convolution import Conv2D
from .dense import Flatten, Linear
from .embedding import Embedding, PositionalEmbedding
from .merge import Add, Concatenate, Multiply
from .normalisation import BatchNorm, LayerNorm
from .pooling import AvgPool2D, MaxPool2D
from .recurrent import GRU, LSTM
from .regularisation import Dropout, RandomHorizontalFlip, RandomShift

__all__ = ["Linear", "Flatten", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax",
           "Dropout", "RandomShift", "RandomHorizontalFlip", "Conv2D", "MaxPool2D", "AvgPool2D",
           "BatchNorm", "LayerNorm", "Add", "Multiply", "Concatenate", "Embedding",
           "PositionalEmbedding",
           "MultiHeadAttention", "LSTM", "GRU"]
