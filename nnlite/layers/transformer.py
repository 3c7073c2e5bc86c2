"""A transformer block: nanoGPT's ``Block``, made of nnlite's own layers."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.door import check_flag, check_number
from ..core.layer import Layer
from .activations import GELU
from .attention import MultiHeadAttention
from .dense import Linear
from .normalisation import LayerNorm
from .regularisation import Dropout


class TransformerBlock(Layer):
    """nanoGPT's ``Block`` on (N, T, E): u = x + D(attn(ln_1(x))), then
    y = u + mlp(ln_2(u)), where ``mlp`` is Linear (E → r·E), GELU (exact), Linear (r·E → E)
    and dropout D, and ``attn`` is causal multi-head self-attention (``causal``), its own
    attention dropout inside. ``bias=False`` drops the Linear and LayerNorm biases, as
    nanoGPT's flag does. The attributes ``ln_1``, ``attn``, ``ln_2`` and ``mlp`` (a list:
    ``mlp.0``, ``mlp.2`` hold the weights) name the state dict as PyTorch's modules would.

    VJP, from g = dL/dy: through the MLP's chain, dL/du = g + ln_2ᵀ(mlpᵀ g); then
    dL/dx = dL/du + ln_1ᵀ(attnᵀ(Dᵀ dL/du)), each ᵀ a sublayer's backward: the two paths of
    each residual add, as the chain rule says. JVP, from v: du = v + D(attn(ln_1(v))) in
    the sublayers' jvp, dy = du + mlp(ln_2(du)).
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, causal: bool = True, bias: bool = True, *,
                 dtype: Any = None, rng: np.random.Generator | None = None):
        super().__init__()
        self.embed_dim = check_number("TransformerBlock", "embed_dim", embed_dim, integer=True,
                                      low=1)
        self.num_heads, self.bias = num_heads, check_flag("TransformerBlock", "bias", bias)
        self.mlp_ratio = check_number("TransformerBlock", "mlp_ratio", mlp_ratio, integer=True,
                                      low=1)
        self.dropout = check_number("TransformerBlock", "dropout", dropout, low=0, high=1,
                                    open_high=True)
        self.causal = check_flag("TransformerBlock", "causal", causal)
        e, wide = self.embed_dim, self.mlp_ratio * self.embed_dim
        self.ln_1 = LayerNorm(e, bias=bias, dtype=dtype)
        self.attn = MultiHeadAttention(e, num_heads, causal=causal, bias=bias, dropout=dropout,
                                       dtype=dtype, rng=rng)
        self.drop = Dropout(dropout) if dropout else None  # (none at p = 0: no copies)
        self.ln_2 = LayerNorm(e, bias=bias, dtype=dtype)
        self.mlp = [Linear(e, wide, bias=bias, dtype=dtype, rng=rng), GELU(),
                    Linear(wide, e, bias=bias, dtype=dtype, rng=rng)] + \
            ([Dropout(dropout)] if dropout else [])

    def check_input(self, x: np.ndarray) -> None:
        self.attn.check_input(x)

    def cost(self, shapes: list[tuple[int, ...]]) -> int:
        """The load-time probe's charge beyond a call: the attention's, and the MLP's
        widened rows."""
        return self.attn.cost(shapes) + 4 * (self.mlp_ratio + 2) * int(np.prod(shapes[0]))

    def forward(self, x: np.ndarray) -> np.ndarray:
        a = self.attn.forward(self.ln_1.forward(x))
        u = x + (a if self.drop is None else self.drop.forward(a))
        h = self.ln_2.forward(u)
        for layer in self.mlp:
            h = layer.forward(h)
        return u + h

    def backward(self, grad: np.ndarray) -> np.ndarray:
        d = grad
        for layer in reversed(self.mlp):
            d = layer.backward(d)
        du = grad + self.ln_2.backward(d)
        da = du if self.drop is None else self.drop.backward(du)
        return du + self.ln_1.backward(self.attn.backward(da))

    def jvp(self, tangent: np.ndarray) -> np.ndarray:
        da = self.attn.jvp(self.ln_1.jvp(tangent))
        du = tangent + (da if self.drop is None else self.drop.jvp(da))
        d = self.ln_2.jvp(du)
        for layer in self.mlp:
            d = layer.jvp(d)
        return du + d

    def get_config(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio, "dropout": self.dropout, "causal": self.causal,
                "bias": self.bias, "dtype": self.ln_1.dtype.name}
