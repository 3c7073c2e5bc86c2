"""What Sequential and the graph Model share beyond ``fit``: ``input_grad`` passed on to
their layers, ``summary``, ``generate``, and their files (``save``, ``save_weights``,
``load_weights``, from ``nnlite.files``)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..core.optimizer import Optimizer
from ..training.trainer import Trainer


class Container(Trainer):
    """Base class of Sequential and Model: a Layer of layers (``self.layers``), trained by
    ``Trainer``; its ``_pass_input_grad`` and ``_summary_rows`` say how its backward reaches
    its layers and what ``summary`` lists."""

    skips_input_grad = True

    @property
    def input_grad(self) -> bool:
        return self.__dict__.get("_input_grad", True)

    @input_grad.setter
    def input_grad(self, needed: bool) -> None:
        """Set once per ``fit`` (not per batch): the container passes it on to its layers
        (``_pass_input_grad``), so its ``backward`` needs no case for it."""
        self.__dict__["_input_grad"] = needed
        self._pass_input_grad(needed)

    def _pass_input_grad(self, needed: bool) -> None:
        raise NotImplementedError

    def generate(self, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> np.ndarray:
        """``ids`` (N, T) and ``max_new_tokens`` more, sampled one at a time from the logits
        (N, T, vocab) this model returns, as nanoGPT's ``generate``: see
        ``nnlite.training.generation.generate``."""
        from ..training import generation  # (files, text: loaded on first use)
        return generation.generate(self, ids, max_new_tokens, temperature=temperature,
                                   top_k=top_k, seed=seed)

    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """Print (and return) each layer, its output shape (for ``input_shape``, one
        sample's, else the shape the model last ran on; "?" before any) and parameter
        count, Keras-style (and, for a graph, the layers that feed it); then the totals,
        trainable and not (frozen layers' parameters, and buffers such as BatchNorm's
        running statistics)."""
        rows = self._summary_rows(input_shape)
        connected = any(row[3] for row in rows)
        width = 64 + 24 * connected
        head = f"{'Layer (type)':<26}{'Output shape':<24}{'Params':>14}"
        lines = [head + ("  Connected to" if connected else ""), "=" * width]
        for name, shape, count, inputs in rows:
            line = f"{name:<26}{shape:<24}{count:>14,}"
            lines.append(line + (f"  {inputs}" if connected else ""))
        trainable = sum(p.size for p in self.trainable_parameters())
        fixed = sum(p.size for p in self.parameters()) - trainable + sum(
            np.size(b) for _, b in self.named_buffers())
        lines += ["=" * width, f"Total params: {trainable + fixed:,} ({self.dtype})",
                  f"Trainable params: {trainable:,}", f"Non-trainable params: {fixed:,}"]
        text = "\n".join(lines)
        print(text)
        return text

    def extra_repr(self) -> str:
        names = self.__dict__.get("names") or range(len(self.layers))
        rows = (f"({n}): {layer!r}".replace("\n", "\n  ") for n, layer in zip(names, self.layers))
        return "\n" + "".join(f"  {row}\n" for row in rows)

    def _summary_rows(self, input_shape) -> list[tuple[str, str, int, str]]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike, *, optimizer: Optimizer | None = None,
             epoch: int | None = None) -> None:
        """Save architecture and weights (and optimizer state for a checkpoint), atomically;
        after ``fit(comm=...)``, on rank 0 only (every rank holds the same)."""
        if self.__dict__.get("_rank"):
            return
        from ..files import io
        io.save(self, path, optimizer=optimizer, epoch=epoch)

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the state dict to ``path`` as a safetensors file (what PyTorch reads); after
        ``fit(comm=...)``, on rank 0 only."""
        if self.__dict__.get("_rank"):
            return
        from ..files import safetensors
        safetensors.save_weights(self, path)

    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> Any:
        """Read a safetensors file of PyTorch's names and layouts into this model."""
        from ..files import safetensors
        return safetensors.load_weights(self, path, strict)
