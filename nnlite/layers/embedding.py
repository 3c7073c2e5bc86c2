"""Embeddings: a table of vectors looked up by integer id, and one added per position."""
from __future__ import annotations

import math

from typing import Any

import numpy as np

from ..core.door import check_number, new_array
from ..core.layer import Layer, default_rng
from ..core.parameter import Parameter, resolve_dtype


class Embedding(Layer):
    """y[…] = W[ids[…]]: integer ids of any shape (…) → (…, embedding_dim), as
    ``torch.nn.Embedding``; W of shape (num_embeddings, embedding_dim) starts N(0, 1).

    y is linear in W with a one-hot Jacobian, so the VJP scatter-adds the gradient rows
    into the table: dL/dW[k] += Σ over positions with id k of g[…] (repeated ids add up).
    The ids are not differentiable: backward returns None for them, and they have no
    tangent: ``jvp(None)`` is zeros of the output's shape.
    """

    integer_input = True

    def __init__(self, num_embeddings: int, embedding_dim: int, *, dtype: Any = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.num_embeddings = check_number("Embedding", "num_embeddings", num_embeddings,
                                           integer=True, low=1)
        self.embedding_dim = check_number("Embedding", "embedding_dim", embedding_dim,
                                          integer=True, low=1)
        self.dtype = resolve_dtype(dtype)
        shape = (self.num_embeddings, self.embedding_dim)
        w = new_array(shape, self.dtype)
        w[...] = (rng or default_rng()).standard_normal(shape)
        self.weight = Parameter(w, self.dtype)

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call: the ids and a vector for each."""
        return math.prod(shapes[0]) * (1 + self.embedding_dim)

    def to_onnx(self, g: Any, ids: str) -> str:
        return g.op("Gather", g.constant(self.weight.data), ids, axis=0)

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            if ids.dtype.kind != "f" or not np.all(np.mod(ids, 1) == 0):
                raise ValueError(f"{self!r} takes integer ids, got {ids.dtype} values such as "
                                 f"{ids.ravel()[:3]}")
            ids = ids.astype(np.intp)
        if ids.size and ids.astype(np.uint64).max() >= self.num_embeddings:  # negatives wrap
            bad = ids[(ids < 0) | (ids >= self.num_embeddings)].ravel()[0]
            raise ValueError(f"{self!r}: id {bad} is outside the table of "
                             f"{self.num_embeddings} embeddings (ids of shape {ids.shape})")
        self._ids = ids
        return self.weight.data[ids]

    def backward(self, grad: np.ndarray) -> None:
        ids = self._cached("_ids")
        if not self._trainable:  # dL/dθ only for a layer fit may change; ids have no dL/dx
            return None
        rows = grad.reshape(-1, self.embedding_dim)
        flat = ids.reshape(-1)
        if self.num_embeddings <= 4 * len(flat):
            # A small table: the scatter-add as one product, onehot(ids)ᵀ · g.
            onehot = np.zeros((self.num_embeddings, len(flat)), rows.dtype)
            onehot[flat, np.arange(len(flat))] = 1
            self.weight.add_matmul(onehot, rows)
        else:
            np.add.at(self.weight.grad, flat, rows)
        return None

    def jvp(self, tangent: None) -> np.ndarray:
        if tangent is not None:
            raise ValueError(f"{self!r} takes integer ids, which have no tangent: jvp takes "
                             f"None (a zero tangent), got {type(tangent).__name__}")
        return np.zeros(self._cached("_ids").shape + (self.embedding_dim,), self.weight.dtype)

    def get_config(self) -> dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim,
                "dtype": self.dtype.name}


class PositionalEmbedding(Layer):
    """y[n, t] = x[n, t] + P[t]: a learned vector per position added to a sequence
    (N, T, D), with P of shape (num_positions, embedding_dim) starting N(0, 1) — GPT's
    position embedding, ``weight`` as torch's ``nn.Embedding`` of the positions.

    J with respect to x is the identity, so dL/dx = g; dL/dP[t] += Σₙ g[n, t]; J · v = v.
    """

    def __init__(self, num_positions: int, embedding_dim: int, *, dtype: Any = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.num_positions = check_number("PositionalEmbedding", "num_positions",
                                          num_positions, integer=True, low=1)
        self.embedding_dim = check_number("PositionalEmbedding", "embedding_dim",
                                          embedding_dim, integer=True, low=1)
        self.dtype = resolve_dtype(dtype)
        shape = (self.num_positions, self.embedding_dim)
        w = new_array(shape, self.dtype)
        w[...] = (rng or default_rng()).standard_normal(shape)
        self.weight = Parameter(w, self.dtype)

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 3 or x.shape[2] != self.embedding_dim:
            raise ValueError(f"{self!r} expects sequences of shape (N, T, "
                             f"{self.embedding_dim}), got {x.shape}")
        if x.shape[1] > self.num_positions:
            raise ValueError(f"{self!r}: a sequence of {x.shape[1]} positions is longer than "
                             f"the table of {self.num_positions}")

    def lipschitz_bound(self) -> float:
        return 1.0  # x + P: it moves nothing further than it moved

    def to_onnx(self, g: Any, x: str) -> str:
        """x + P[:T], T read off x's shape at run time."""
        t = g.op("Slice", g.op("Shape", x), g.constant([1], np.int64), g.constant([2], np.int64))
        table = g.op("Slice", g.constant(self.weight.data), g.constant([0], np.int64), t)
        return g.op("Add", x, table)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._t = x.shape[1]
        return x + self.weight.data[:x.shape[1]]

    def backward(self, grad: np.ndarray) -> np.ndarray:
        t = self._cached("_t")
        if self._trainable:
            self.weight.grad[:t] += grad.sum(axis=0)
        return grad

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        return tangent.copy()

    def get_config(self) -> dict[str, Any]:
        return {"num_positions": self.num_positions, "embedding_dim": self.embedding_dim,
                "dtype": self.dtype.name}
