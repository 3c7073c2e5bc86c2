"""Losses: a scalar L(pred, target), averaged over the batch; and ``Objective``, the scalar
a model with several outputs trains on.

``forward(pred, target)`` returns L as a float and caches what ``backward``
needs; ``backward()`` returns dL/dpred, the gradient that starts backpropagation.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from .door import check_number, quote
from .layer import Layer


def sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) via e^(−|x|), which never overflows (BinaryCrossEntropy's, and the Sigmoid
    layer's)."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, z) / (1 + z)


class Loss:
    """Base class: subclasses define ``forward`` and ``backward``, and ``check_target``,
    which ``fit`` and ``evaluate`` call once, at the door, so ``forward`` need not check."""

    #: Whether ``accuracy`` means something for this loss.
    classification = False

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The loss, after ``check_target`` (the door, as Keras's ``__call__``)."""
        self.check_target(np.shape(pred), target)
        return self.forward(pred, np.asarray(target))

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float:
        raise ValueError(f"{type(self).__name__} is not a classification loss: "
                         f"accuracy is undefined")

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        """Raise ValueError if ``target`` cannot go with predictions of ``pred_shape``."""
        _same_shape(self, np.empty(pred_shape), target)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for files (``nnlite.save`` records the loss a
        model was trained with, so a loaded model's ``evaluate`` reports it)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    _cached = Layer._cached  # an attribute forward set, or a clear error


class MSE(Loss):
    """L = mean((pred − target)²) over every element.  dL/dpred = 2(pred − target)/size."""

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        self._diff = pred - _same_shape(self, pred, target)
        return float(np.vdot(self._diff, self._diff) / self._diff.size)

    def backward(self) -> np.ndarray:
        diff = self._cached("_diff")
        return diff * diff.dtype.type(2.0 / diff.size)


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits z (…, C), mean over every position (…), as
    ``torch.nn.CrossEntropyLoss(weight=, label_smoothing=)`` computes it.

    With class labels y of shape (…): L = Σₙ Σ_c aₙ,c (logsumexp(zₙ) − zₙ,c) / D, where
    aₙ,c = (1 − ε) w_yₙ [c = yₙ] + (ε/C) w_c and D = Σₙ w_yₙ (the positions, without
    ``weight``): with ε = 0 and no weights, mean(logsumexp(zₙ) − zₙ,yₙ).
    With probability (or one-hot) targets t of z's shape: aₙ,c = w_c (tₙ,c (1 − ε) + ε/C)
    and D the number of positions, as torch divides.
    dL/dzₙ = (softmax(zₙ) Σ_c aₙ,c − aₙ) / D: softmax and the loss fused, so no Softmax
    layer belongs before it. ``weight`` has one number >= 0 per class.
    """

    classification = True

    def __init__(self, label_smoothing: float = 0.0, weight: Any = None):
        self.label_smoothing = check_number("CrossEntropy", "label_smoothing", label_smoothing,
                                            low=0, high=1)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float64)
        if self.weight is not None and (self.weight.ndim != 1 or not self.weight.size or
                                        not (np.isfinite(self.weight).all() and
                                             (self.weight >= 0).all())):
            raise ValueError(f"CrossEntropy: weight must hold one finite number >= 0 per "
                             f"class, got {quote(weight)}")

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        labels = target.shape != pred.shape  # class labels, else probabilities (checked in
        z = pred.reshape(-1, pred.shape[-1])  # check_target, at the door)
        n = z.shape[0]
        self._shape, self._scale = pred.shape, 1.0 / n
        # Classes along rows, (C, M): each position's max and sum then run down contiguous
        # rows, several times faster than along a short last axis.
        s = z.T.copy()
        s -= s.max(axis=0)
        if labels and self.weight is None and not self.label_smoothing:
            # Where each position's true class sits in the flattened (C, M) array.
            self._picks = np.arange(n) + n * target.reshape(-1).astype(np.intp)
            self._t = None
            picked = s.ravel()[self._picks].sum()
        else:
            self._picks, (self._t, self._scale) = None, self._coefficients(target, labels, s)
            picked = np.vdot(self._t, s)
        np.exp(s, out=s)
        total = s.sum(axis=0)
        s /= total
        self._p = s
        log_total = np.log(total)
        weighted = log_total.sum() if self._t is None else log_total @ self._t.sum(axis=0)
        return float(weighted - picked) * self._scale

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing,
                "weight": None if self.weight is None else self.weight.tolist()}

    def _coefficients(self, target: np.ndarray, labels: bool, s: np.ndarray
                      ) -> tuple[np.ndarray, float]:
        """(aₙ,c as (C, M), 1/D): each position's coefficient of each class's −log p."""
        (c, m), eps = s.shape, self.label_smoothing
        w = np.ones(c, s.dtype) if self.weight is None else self.weight.astype(s.dtype)
        if not labels:
            t = np.asarray(target, dtype=s.dtype).reshape(-1, c).T
            return (t * (1 - eps) + eps / c) * w[:, None], 1.0 / m
        y = target.reshape(-1).astype(np.intp)
        a = np.repeat((eps / c) * w[:, None], m, axis=1)
        a[y, np.arange(m)] += (1 - eps) * w[y]
        return a, 1.0 / w[y].sum()

    def backward(self) -> np.ndarray:
        """dL/dz, written over forward's softmax: one backward per forward, as in PyTorch."""
        p = self._cached("_p")
        self._p = None
        if self._t is None:
            p.ravel()[self._picks] -= 1
        else:
            p = p * self._t.sum(axis=0) - self._t
        p *= p.dtype.type(self._scale)
        return p.T.reshape(self._shape)

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float:
        labels = target if target.shape != pred.shape else target.argmax(axis=-1)
        return float(np.mean(pred.argmax(axis=-1) == labels))

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        """Labels: integers (or whole floats) in [0, classes) of the logits' leading
        shape; probabilities: pred's shape, >= 0."""
        if len(pred_shape) < 2:
            raise ValueError(f"CrossEntropy expects logits of shape (N, …, classes), "
                             f"got {pred_shape}")
        target, classes = np.asarray(target), pred_shape[-1]
        if self.weight is not None and len(self.weight) != classes:
            raise ValueError(f"CrossEntropy: weight has {len(self.weight)} numbers for logits "
                             f"of {classes} classes")
        if target.shape == pred_shape:
            if not (target >= 0).all():
                raise ValueError("CrossEntropy: probability targets must be >= 0 (a negative "
                                 "one makes the loss meaningless)")
        elif target.shape != pred_shape[:-1]:
            raise ValueError(
                f"CrossEntropy: target of shape {target.shape} does not fit logits of shape "
                f"{pred_shape}; give class labels of the logits' leading shape "
                f"{pred_shape[:-1]}, or one-hot/probability targets of shape {pred_shape}")
        elif target.dtype.kind not in "iu" and not (target.dtype.kind == "f" and
                                                     np.all(np.mod(target, 1) == 0)):
            raise ValueError(f"CrossEntropy: class labels must be integers, got "
                             f"{target.dtype} values such as {target.ravel()[:3]}")
        # Cast to unsigned, a negative label wraps to a huge one: one max checks both bounds.
        elif target.size and target.astype(np.int64).astype(np.uint64).max() >= classes:
            bad = target[(target < 0) | (target >= classes)][0]
            raise ValueError(f"CrossEntropy: label {bad} is outside [0, {classes}) for logits "
                             f"with {classes} classes")


class BinaryCrossEntropy(Loss):
    """Sigmoid cross-entropy from logits z with targets t in [0, 1], mean over elements.

    L = mean(max(z, 0) − z·t + log(1 + e^(−|z|))), stable for any z.
    dL/dz = (σ(z) − t) / size.
    """

    classification = True

    def forward(self, pred: np.ndarray, target: np.ndarray) -> float:
        t = _same_shape(self, pred, target)  # in [0, 1]: checked at the door
        loss = np.maximum(pred, 0) - pred * t + np.log1p(np.exp(-np.abs(pred)))
        self._pred, self._t = pred, t
        return float(loss.mean())

    def backward(self) -> np.ndarray:
        pred, t = self._cached("_pred"), self._cached("_t")
        grad = sigmoid(pred) - t
        grad *= grad.dtype.type(1.0 / grad.size)
        return grad

    def accuracy(self, pred: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean((pred > 0) == (_same_shape(self, pred, target) > 0.5)))

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        self._target(np.empty(pred_shape), target)

    @staticmethod
    def _target(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
        t = _same_shape(BinaryCrossEntropy, pred, target)
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError("BinaryCrossEntropy: targets must lie in [0, 1]")
        return t


def _same_shape(loss, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``target`` as an array of pred's shape and dtype; (N,) is taken for (N, 1)."""
    t = np.asarray(target, dtype=pred.dtype)
    if pred.ndim == 2 and pred.shape[1] == 1 and t.shape == pred.shape[:1]:
        t = t[:, None]
    if t.shape != pred.shape:
        name = loss.__name__ if isinstance(loss, type) else type(loss).__name__
        raise ValueError(f"{name}: target of shape {np.shape(target)} does not match "
                         f"predictions of shape {pred.shape}")
    return t


def scorer(fn: Loss | None, pred: np.ndarray, target: np.ndarray) -> Loss | None:
    """The loss whose ``accuracy`` scores an output: its own loss if a classification
    one; with no loss known, CrossEntropy's argmax where the output is a classifier's
    (more than one unit, the targets class labels in range); else None."""
    if fn is not None:
        return fn if fn.classification else None
    classes = pred.shape[-1] if pred.ndim > 1 else 0
    labels = target.dtype.kind in "iu" and classes > 1 and target.shape == pred.shape[:-1] \
        and (target.size == 0 or 0 <= target.min() and target.max() < classes)
    return CrossEntropy() if labels else None


class Objective(Loss):
    """L = Σᵢ wᵢ Lᵢ(outᵢ, yᵢ) over a model's outputs; dL/doutᵢ = wᵢ · dLᵢ/doutᵢ.

    ``count`` adds the last batch, weighted by its size, to the epoch's means (``logs``):
    the loss; each output's own loss (``output_i_loss``) when there are several; then each
    metric of ``scorers``, (output, key, function of (pred, target)), such as the accuracy
    of an output trained with a classification loss (``output_i_accuracy``).
    """

    def __init__(self, losses: Sequence[Loss], weights: Sequence[float], names: list[str],
                 scorers: Sequence[tuple[int, str, Any]]):
        self.losses, self.weights = list(losses), list(weights)
        self.multi = len(self.losses) > 1
        self.scorers = [(i, fn) for i, _, fn in scorers]
        self.keys = ["loss"] + [f"{name}loss" for name in names if self.multi] + \
            [key for _, key, _ in scorers]
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
        accuracies = [fn(self.outs[i], self.targets[i]) for i, fn in self.scorers]
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
