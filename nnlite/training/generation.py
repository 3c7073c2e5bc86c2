"""Text generation: a model that maps integer ids (N, T) to logits (N, T, vocab) writes, one
id at a time, as nanoGPT's ``GPT.generate``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.door import check_number
from ..layers.embedding import PositionalEmbedding


def context_length(model: Any) -> int | None:
    """The longest window of ids ``model`` takes: its position table's length, or a graph
    model's Input length, whichever is shorter; None when neither limits it."""
    limits = [m.num_positions for m in model.modules() if isinstance(m, PositionalEmbedding)]
    inputs = getattr(model, "inputs", None)  # a Model's symbolic Inputs
    if inputs and len(inputs[0].shape) == 1:
        limits.append(inputs[0].shape[0])
    return min(limits) if limits else None


def generate(model: Any, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None) -> np.ndarray:
    """``ids`` (N, T) followed by ``max_new_tokens`` ids drawn one at a time, each from the
    softmax of the model's last logits over at most the last ``context_length(model)`` ids,
    divided by ``temperature`` (0: the argmax, greedy) and, with ``top_k``, limited to the k
    largest; the same ``seed`` draws the same ids. Returns (N, T + max_new_tokens)."""
    ids = np.asarray(ids)
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
        raise ValueError(f"generate: ids must be integers of shape (N, T) with T >= 1, got "
                         f"{ids.dtype} of shape {ids.shape} (one sequence: ids[None])")
    max_new_tokens = check_number("generate", "max_new_tokens", max_new_tokens, integer=True,
                                  low=0)
    temperature = check_number("generate", "temperature", temperature, low=0)
    if top_k is not None:
        top_k = check_number("generate", "top_k", top_k, integer=True, low=1)
    rng = np.random.default_rng(seed)
    context = context_length(model)
    out = ids.astype(np.int64)
    for _ in range(max_new_tokens):
        window = out if context is None else out[:, -context:]
        logits = model.predict(window)
        if not isinstance(logits, np.ndarray) or logits.ndim != 3 or \
                logits.shape[:2] != window.shape:
            raise ValueError(f"generate needs a model whose output is logits (N, T, vocab) "
                             f"for ids (N, T); for ids of shape {window.shape} it returned "
                             f"{_shapes(logits)}")
        out = np.concatenate([out, _draw(logits[:, -1], temperature, top_k, rng)[:, None]],
                             axis=1)
    return out


def _draw(logits: np.ndarray, temperature: float, top_k: int | None,
          rng: np.random.Generator) -> np.ndarray:
    """One id per row of ``logits`` (N, vocab)."""
    if temperature == 0:
        return logits.argmax(axis=1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        kth = np.partition(z, -top_k, axis=1)[:, -top_k, None]
        z[z < kth] = -np.inf                      # ties with the k-th stay, as nanoGPT's
    cdf = np.cumsum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)
    cdf /= cdf[:, -1:]                            # ends at exactly 1, above any u in [0, 1)
    return (cdf < rng.random((len(z), 1))).sum(axis=1)   # the inverse of the CDF at u


def _shapes(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "a list of " + ", ".join(str(np.shape(v)) for v in value)
    return str(np.shape(value))
