"""The scalar a model trains on, over all its outputs, and the epoch's running means.

``fit`` runs one ``Objective`` per model: forward, backward, then ``count`` each batch;
``logs`` at the end of the epoch. With one output it is that output's loss.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from .losses import Loss


class Objective(Loss):
    """L = Σᵢ wᵢ Lᵢ(outᵢ, yᵢ) over a model's outputs; dL/doutᵢ = wᵢ · dLᵢ/doutᵢ.

    ``count`` adds the last batch, weighted by its size, to the epoch's means (``logs``):
    the loss; each output's own loss (``output_i_loss``) when there are several; then the
    accuracy of each output trained with a classification loss (``output_i_accuracy``).
    """

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float], names: list[str]):
        self.losses, self.weights = list(losses), list(weights)
        self.multi = len(self.losses) > 1
        self.scored = [i for i, f in enumerate(self.losses) if f.classification]
        self.keys = ["loss"] + [f"{name}loss" for name in names if self.multi] + \
            [f"{names[i]}accuracy" for i in self.scored]
        self.reset()

    def reset(self) -> None:
        self.seen, self.sums = 0, np.zeros(len(self.keys))

    def forward(self, out: Any, target: Any) -> float:
        self.outs, self.targets = (out, target) if self.multi else ([out], [target])
        self.values = [f.forward(o, t) for f, o, t in zip(self.losses, self.outs, self.targets)]
        return sum(w * v for w, v in zip(self.weights, self.values))

    def backward(self) -> Any:
        grads = [f.backward() if w == 1 else f.backward() * w
                 for f, w in zip(self.losses, self.weights)]
        return grads if self.multi else grads[0]

    def count(self, value: float) -> None:
        accuracies = [self.losses[i].accuracy(self.outs[i], self.targets[i])
                      for i in self.scored]
        n = len(self.targets[0])
        self.seen += n
        self.sums += n * np.array([value, *(self.values if self.multi else []), *accuracies])

    def logs(self) -> dict[str, float]:
        return {k: float(s / max(self.seen, 1)) for k, s in zip(self.keys, self.sums)}


def per_output(loss: Any, k: int) -> list[Loss]:
    """One loss per output of a model with ``k``: a list of ``k``, or one loss for all (a
    copy each, since losses cache their forward)."""
    if isinstance(loss, Loss):
        return [loss] if k == 1 else [copy.deepcopy(loss) for _ in range(k)]
    if not isinstance(loss, (list, tuple)) or not all(isinstance(f, Loss) for f in loss):
        raise ValueError(f"loss must be an nnlite loss such as "
                         f"nnlite.losses.CrossEntropy() (or a list, one per output), got "
                         f"{loss!r}")
    if len(loss) != k:
        raise ValueError(f"the model has {k} output(s) but {len(loss)} losses were given")
    return list(loss)


def loss_weights_of(weights: Sequence[float] | None, k: int) -> list[float]:
    """One weight per output of a model with ``k`` (1 each by default)."""
    if weights is None:
        return [1.0] * k
    weights = [float(w) for w in weights]
    if len(weights) != k:
        raise ValueError(f"loss_weights has {len(weights)} entries; the model has {k} "
                         f"output(s)")
    return weights
