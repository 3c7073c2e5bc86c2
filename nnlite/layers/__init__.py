"""nnlite's layers, one module per family; each module is loaded the first time one of its
layers is used. A layer imports only ``nnlite.core`` and ``nnlite.kernels``: a new layer is
one file (docs/custom-layers.md)."""
from ..core import attach

__getattr__, __dir__ = attach(__name__, {
    "GELU": ".activations", "LeakyReLU": ".activations", "ReLU": ".activations",
    "Sigmoid": ".activations", "Softmax": ".activations", "Tanh": ".activations",
    "MultiHeadAttention": ".attention", "Conv2D": ".convolution", "Flatten": ".dense",
    "Linear": ".dense", "Reshape": ".dense", "Embedding": ".embedding",
    "PositionalEmbedding": ".embedding",
    "Add": ".merge", "Concatenate": ".merge", "Multiply": ".merge",
    "BatchNorm": ".normalisation", "LayerNorm": ".normalisation", "AvgPool2D": ".pooling",
    "MaxPool2D": ".pooling", "GRU": ".recurrent", "LSTM": ".recurrent",
    "Dropout": ".regularisation", "RandomHorizontalFlip": ".regularisation",
    "RandomShift": ".regularisation", "TransformerBlock": ".transformer"})
__all__ = ["Linear", "Flatten", "Reshape", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU",
           "Softmax", "Dropout", "RandomShift", "RandomHorizontalFlip", "Conv2D", "MaxPool2D", "AvgPool2D",
           "BatchNorm", "LayerNorm", "Add", "Multiply", "Concatenate", "Embedding",
           "PositionalEmbedding",
           "MultiHeadAttention", "TransformerBlock", "LSTM", "GRU"]
