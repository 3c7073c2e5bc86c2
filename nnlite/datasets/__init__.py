"""Data: MNIST, Fashion-MNIST, tiny-shakespeare and scikit-learn's digits (downloaded from
public mirrors and checked by SHA-256, or read from ``$NNLITE_DATA``), the IDX format,
``CharVocab`` (text to ids), and ``Dataset``/``ArrayDataset`` (batches for ``fit``).
May import: core, files (atomic writes), training (``batches``)."""
from ..training.trainer import batches
from .loaders import (CHECKSUMS, FASHION_MNIST_CLASSES, FILES, MIRRORS, ArrayDataset, Dataset,
                      data_root, fetch, load_digits, load_fashion_mnist, load_mnist,
                      load_tiny_shakespeare, parse_idx, read_idx)
from .text import CharVocab

__all__ = ["load_mnist", "load_fashion_mnist", "FASHION_MNIST_CLASSES", "load_tiny_shakespeare",
           "CharVocab", "load_digits", "read_idx", "parse_idx", "batches", "Dataset",
           "ArrayDataset", "data_root", "fetch", "FILES", "MIRRORS", "CHECKSUMS"]
