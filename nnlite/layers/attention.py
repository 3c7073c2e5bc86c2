"""Attention: multi-head self-attention, as ``torch.nn.MultiheadAttention``."""
from __future__ import annotations

import math

from typing import Any

import numpy as np

from ..core.door import check_flag, check_number, new_array
from ..core.layer import Layer, default_rng
from ..core.parameter import Parameter, resolve_dtype
from .dense import Linear


class MultiHeadAttention(Layer):
    """Self-attention on (N, T, E) → (N, T, E) with H heads of size d = E/H.

    [Q K V] = x Wᵢₙᵀ + bᵢₙ (``in_proj_weight`` (3E, E), ``in_proj_bias``); per head,
    A = softmax(Q Kᵀ/√d + M) with M = −∞ above the diagonal when ``causal`` (position t
    sees positions ≤ t only), attention dropout in training, C = A V; y = out_proj([C₁…C_H]).
    Equal to ``torch.nn.MultiheadAttention(E, H, batch_first=True)(x, x, x, attn_mask=M,
    need_weights=False)[0]`` with the same weights.
    VJP, per head, from G = dL/dC: dL/dV = Aᵀ G; dL/dA = G Vᵀ; through the softmax
    dL/dS = A ⊙ (dL/dA − rowsum(dL/dA ⊙ A)); dL/dQ = dL/dS K/√d; dL/dK = dL/dSᵀ Q/√d;
    then dL/dWᵢₙ += dL/d[Q K V]ᵀ x, dL/dbᵢₙ += Σ dL/d[Q K V], dL/dx = dL/d[Q K V] Wᵢₙ.
    JVP, from the tangent v of x: [dQ dK dV] = v Wᵢₙᵀ; dS = (dQ Kᵀ + Q dKᵀ)/√d;
    dA = A ⊙ (dS − rowsum(dS ⊙ A)); dC = dA V + A dV (with the dropout mask on A and dA);
    J · v = dC W_outᵀ.
    Every step is a whole-batch product over all heads at once.
    """

    skips_input_grad = True

    def __init__(self, embed_dim: int, num_heads: int, causal: bool = False, bias: bool = True,
                 dropout: float = 0.0, *, dtype: Any = None,
                 rng: np.random.Generator | None = None):
        super().__init__()
        self.embed_dim = check_number("MultiHeadAttention", "embed_dim", embed_dim,
                                      integer=True, low=1)
        self.num_heads = check_number("MultiHeadAttention", "num_heads", num_heads,
                                      integer=True, low=1)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.causal = check_flag("MultiHeadAttention", "causal", causal)
        self.dropout = check_number("MultiHeadAttention", "dropout", dropout, low=0, high=1,
                                    open_high=True)
        self.dtype = resolve_dtype(dtype)
        e = self.embed_dim
        rng = rng or default_rng()
        limit = np.sqrt(6.0 / (4 * e))   # torch: xavier_uniform_ on (3E, E)
        w = new_array((3 * e, e), self.dtype)
        w[...] = rng.uniform(-limit, limit, (3 * e, e))
        self.in_proj_weight = Parameter(w, self.dtype)
        self.in_proj_bias = Parameter(new_array((3 * e,), self.dtype), self.dtype) \
            if check_flag("MultiHeadAttention", "bias", bias) else None
        self.out_proj = Linear(e, e, bias=self.in_proj_bias is not None, init="glorot",
                               dtype=self.dtype, rng=rng)

    def check_input(self, x: np.ndarray) -> None:
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"{self!r} expects input of shape (N, T, {self.embed_dim}), got "
                             f"{x.shape}")

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call: the projections and each head's
        T×T scores."""
        if len(shapes[0]) != 3:
            return 4 * math.prod(shapes[0])
        n, t, _ = shapes[0]
        return 8 * math.prod(shapes[0]) + 3 * n * self.num_heads * t * t

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, t, e = x.shape
        h, d = self.num_heads, e // self.num_heads
        qkv = x @ self.in_proj_weight.data.T
        if self.in_proj_bias is not None:
            qkv += self.in_proj_bias.data
        # (3, N, H, T, d): queries, keys and values of every head
        q, k, v = qkv.reshape(n, t, 3, h, d).transpose(2, 0, 3, 1, 4)
        scores = q @ k.transpose(0, 1, 3, 2)
        mask = self._causal_mask(t, scores.dtype) if self.causal else None
        a = attention_softmax(scores, 1 / np.sqrt(d), mask)
        self._keep = None
        if self.training and self.dropout:
            rng = self.rng if self.rng is not None else default_rng()
            keep = rng.random(a.shape, dtype=a.dtype if a.dtype == np.float32 else np.float64)
            self._keep = (keep >= self.dropout) * a.dtype.type(1 / (1 - self.dropout))
        attended = a * self._keep if self._keep is not None else a
        context = (attended @ v).transpose(0, 2, 1, 3).reshape(n, t, e)
        self._x, self._q, self._k, self._v, self._a = x, q, k, v, a
        return self.out_proj.forward(context)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        x, q, k, v, a = (self._cached(name) for name in ("_x", "_q", "_k", "_v", "_a"))
        n, t, e = x.shape
        h, d = self.num_heads, e // self.num_heads
        g = self.out_proj.backward(grad).reshape(n, t, h, d).transpose(0, 2, 1, 3)
        attended = a * self._keep if self._keep is not None else a
        dqkv = np.empty((3, n, h, t, d), grad.dtype)
        np.matmul(attended.transpose(0, 1, 3, 2), g, out=dqkv[2])       # dL/dV
        da = g @ v.transpose(0, 1, 3, 2)
        if self._keep is not None:
            da *= self._keep
        ds = softmax_vjp(da, a, 1 / np.sqrt(d))
        np.matmul(ds, k, out=dqkv[0])                                     # dL/dQ
        np.matmul(ds.transpose(0, 1, 3, 2), q, out=dqkv[1])               # dL/dK
        rows = dqkv.transpose(1, 3, 0, 2, 4).reshape(n * t, 3 * e)
        if self._trainable:  # dL/dθ only for a layer fit may change
            self.in_proj_weight.add_matmul(rows.T, x.reshape(n * t, e))
            if self.in_proj_bias is not None:
                self.in_proj_bias.add_matmul(self._filled((n * t,), rows.dtype, 1), rows)
        if not self.input_grad:
            return None
        return (rows @ self.in_proj_weight.data).reshape(n, t, e)

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        q, k, v, a = (self._cached(name) for name in ("_q", "_k", "_v", "_a"))
        n, t, e = tangent.shape
        h, d = self.num_heads, e // self.num_heads
        dq, dk, dv = (tangent @ self.in_proj_weight.data.T).reshape(n, t, 3, h, d
                                                                     ).transpose(2, 0, 3, 1, 4)
        ds = dq @ k.transpose(0, 1, 3, 2) + q @ dk.transpose(0, 1, 3, 2)
        da = softmax_vjp(ds, a, 1 / np.sqrt(d))  # J of the softmax is symmetric: J·v = vᵀ·J
        if self._keep is not None:
            a, da = a * self._keep, da * self._keep
        dc = da @ v + a @ dv
        return self.out_proj.jvp(dc.transpose(0, 2, 1, 3).reshape(n, t, e))

    def _causal_mask(self, t: int, dtype: np.dtype) -> np.ndarray:
        """The causal mask, −∞ above the diagonal, kept between calls."""
        mask = self.__dict__.get("_mask")
        if mask is None or mask.shape != (t, t) or mask.dtype != dtype:
            mask = np.triu(np.full((t, t), -np.inf, dtype), 1)
            mask.flags.writeable = False
            self._mask = mask
        return mask

    def get_config(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "causal": self.causal, "bias": self.in_proj_bias is not None,
                "dropout": self.dropout, "dtype": self.dtype.name}


def attention_softmax(scores: np.ndarray, scale: float, mask: np.ndarray | None) -> np.ndarray:
    """A = softmax(S·scale + M) along the last axis, in place over the scores S; M the
    causal mask (−∞ above the diagonal) or None. Shifted by each row's maximum."""
    scores *= scores.dtype.type(scale)
    if mask is not None:
        scores += mask
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


def softmax_vjp(g: np.ndarray, a: np.ndarray, scale: float) -> np.ndarray:
    """dL/dS = A ⊙ (G − rowsum(G ⊙ A))·scale, in place over G (the softmax's VJP, and as
    its Jacobian is symmetric, its JVP)."""
    g -= np.einsum("...ij,...ij->...i", g, a)[..., None]
    g *= a
    g *= g.dtype.type(scale)
    return g
