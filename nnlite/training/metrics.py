"""Metrics for ``fit`` and ``evaluate``, by Keras's names: ``"accuracy"``,
``"top_k_accuracy"`` (k = 5; ``TopKAccuracy(k)`` for another k), ``"mae"`` and ``"mse"``.
Each is a mean over a batch's samples; ``fit`` logs each epoch's mean under the metric's
name (``output_i_`` before it with several outputs, ``val_`` for validation data), and
``evaluate`` returns it over the whole data (``scores``: evaluate's numbers, the loss,
accuracy and these).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..core.door import check_number, quote
from ..core.losses import MSE, CrossEntropy, Loss, loss_weights_of, per_output, scorer


class Metric:
    """A number about predictions: ``metric(pred, target)``, a mean over the samples;
    ``check_target`` refuses targets it cannot score, at the door."""

    name = ""

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        raise NotImplementedError

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        """Raise a ValueError for targets this metric cannot score."""


class TopKAccuracy(Metric):
    """The share of samples whose label's logit is among the k largest, as Keras's sparse
    top-k accuracy: where tied logits straddle the k-th place, all of them count as in the
    top k (as ``tf.math.in_top_k``). One-hot targets stand for their argmax."""

    def __init__(self, k: int = 5):
        self.k = check_number("TopKAccuracy", "k", k, integer=True, low=1)
        self.name = "top_k_accuracy" if self.k == 5 else f"top_{self.k}_accuracy"

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        z = pred.reshape(-1, pred.shape[-1])
        labels = (target.argmax(axis=-1) if target.shape == pred.shape else target)
        score = z[np.arange(len(z)), labels.reshape(-1).astype(np.intp)]
        return float(np.mean((z > score[:, None]).sum(axis=1) < self.k))

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        CrossEntropy().check_target(pred_shape, target)  # labels in range, or one-hot


class MeanAbsoluteError(Metric):
    """mean |pred − target| over every element (scikit-learn's ``mean_absolute_error``)."""

    name = "mae"

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean(np.abs(pred - target.reshape(pred.shape))))

    def check_target(self, pred_shape: tuple[int, ...], target: np.ndarray) -> None:
        MSE().check_target(pred_shape, target)


class MeanSquaredError(MeanAbsoluteError):
    """mean (pred − target)² over every element (``mean_squared_error``)."""

    name = "mse"

    def __call__(self, pred: np.ndarray, target: np.ndarray) -> float:
        return float(np.mean(np.square(pred - target.reshape(pred.shape))))


KNOWN = {"accuracy": None, "top_k_accuracy": TopKAccuracy, "mae": MeanAbsoluteError,
         "mse": MeanSquaredError}


def scorers(metrics: Sequence[Any], losses: Sequence[Loss | None], names: list[str],
            what: str) -> list[tuple[int, str, Callable[[np.ndarray, np.ndarray], float]]]:
    """(output, its log key, the scoring function) of every metric of every output."""
    if isinstance(metrics, (str, Metric)) or not isinstance(metrics, (list, tuple)):
        raise ValueError(f"{what}: metrics must be a list, such as ['accuracy'], got "
                         f"{quote(metrics)}")
    found = []
    for m in metrics:
        if isinstance(m, str) and m not in KNOWN:
            raise ValueError(f"{what}: unknown metric {quote(m)}; nnlite knows "
                             f"{', '.join(KNOWN)} (and nnlite.metrics.TopKAccuracy(k))")
        if not isinstance(m, (str, Metric)):
            raise ValueError(f"{what}: a metric is a name or an nnlite.metrics.Metric, got "
                             f"{quote(m)}")
        for i, fn in enumerate(losses):
            if m == "accuracy":
                if fn is None or not fn.classification:
                    where = f"output {names[i][:-1]}" if names[i] else "the output"
                    raise ValueError(f"{what}: accuracy is for classification; {where} is a "
                                     f"regression ({type(fn).__name__} loss)")
                found.append((i, f"{names[i]}accuracy", fn.accuracy))
            else:
                metric = KNOWN[m]() if isinstance(m, str) else m
                found.append((i, f"{names[i]}{metric.name}", metric))
    return found


def scores(model: Any, predictions: Callable[[], tuple[list, list]], loss: Any, metrics: Any,
           loss_weights: Any) -> dict[str, float]:
    """``model.evaluate``'s numbers from ``predictions()``: (outputs, targets), one array
    per output, asked for once the arguments are checked."""
    others = scorers([m for m in metrics if m != "accuracy"], [None] * model.n_outputs,
                      model.output_names(), "evaluate") if metrics is not None else []
    known = loss if loss is not None else model.__dict__.get("_trained_with")
    losses = per_output(known, model.n_outputs) if known is not None else \
        [None] * model.n_outputs
    weights = loss_weights_of(loss_weights, model.n_outputs)
    preds, ys = predictions()
    results = _loss_and_accuracy(model.output_names(), losses, weights, preds, ys, metrics)
    for i, key, metric in others:
        metric.check_target(preds[i].shape, ys[i])
        results[key] = metric(preds[i], ys[i])
    return results


def _loss_and_accuracy(names: list[str], losses: list[Loss | None], weights: list[float],
                       preds: list[np.ndarray], ys: list[np.ndarray],
                       metrics: Sequence[str] | None) -> dict[str, float]:
    """evaluate's numbers: the (weighted) loss where one is known, each output's own loss
    when there are several, and accuracy where an output is a classifier's (``scorer``)."""
    accuracy = [scorer(fn, p, t) for fn, p, t in zip(losses, preds, ys)]
    for name, fn, t, acc in zip(names, losses, ys, accuracy):
        where = f"output {name[:-1]}" if name else "the output"
        if metrics and "accuracy" in metrics and acc is None:
            raise ValueError(f"evaluate: accuracy is for classification; {where} is a "
                             f"regression ({type(fn).__name__} loss, {t.dtype} targets)")
        if fn is None and acc is None and not metrics:
            raise ValueError(f"evaluate: nothing to report for {where}: give loss=, or "
                             f"fit the model first (no loss is known, and its targets "
                             f"are not class labels of its outputs)")
    results: dict[str, float] = {}
    if losses[0] is not None:
        for fn, p, t in zip(losses, preds, ys):
            fn.check_target(p.shape, t)
        values = [fn.forward(p, t) for fn, p, t in zip(losses, preds, ys)]
        results["loss"] = float(sum(w * v for w, v in zip(weights, values)))
        if len(losses) > 1:
            results.update({f"{name}loss": v for name, v in zip(names, values)})
    if metrics is None or "accuracy" in metrics:
        for name, acc, p, t in zip(names, accuracy, preds, ys):
            if acc is not None:
                results[f"{name}accuracy"] = acc.accuracy(p, t)
    return results
