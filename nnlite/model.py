"""Sequential: a chain of layers, and the loop that trains it (fit/evaluate/predict).

Forward runs the layers in order; backward runs their vector-Jacobian
products in reverse, which is the chain rule: ∇ₓL = ∇_yL · J_L ⋯ J₂ J₁.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from . import io
from .callbacks import Callback, CallbackList, History
from .datasets import batches
from .layer import Layer, default_rng
from .losses import CrossEntropy, Loss
from .optim import Optimizer


class Sequential(Layer):
    """Layers applied in order; itself a Layer, so Sequentials nest.

    VJP: g · J = g · J_L ⋯ J₁, computed as each layer's backward in reverse.
    """

    def __init__(self, *layers: Layer):
        super().__init__()
        self.layers: list[Layer] = []
        for layer in layers:
            self.append(layer)
        self.stop_training = False

    def append(self, layer: Layer) -> Sequential:
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes Layers, got {type(layer).__name__}")
        setattr(self, str(len(self.layers)), layer)
        self.layers.append(layer)
        return self

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def get_config(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return "\n" + "".join(f"  ({i}): {layer!r}\n" for i, layer in enumerate(self.layers))

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the model's parameters (float32 unless converted)."""
        for p in self.parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for i, layer in enumerate(self.layers):
            try:
                x = layer.forward(x)
            except ValueError as e:
                raise ValueError(f"layer {i} ({type(layer).__name__}): {e}") from None
        return x

    def backward(self, grad: np.ndarray) -> np.ndarray | None:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:  # a first layer told not to compute dL/dx (see fit)
                return None
        return grad

    # -- inference ----------------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """The model's outputs for ``x``, computed in eval mode, ``batch_size`` rows at a time."""
        x = self._as_input(x)
        _check_batch_size(batch_size)
        was_training = self.training
        self.eval()
        try:
            out = None
            for start in range(0, len(x), batch_size):
                y = self.forward(x[start:start + batch_size])
                if out is None:
                    out = np.empty((len(x),) + y.shape[1:], y.dtype)
                out[start:start + len(y)] = y
            return out if out is not None else np.empty((0,), self.dtype)
        finally:
            self.train(was_training)

    def evaluate(self, x: Any, y: Any, loss: Loss | None = None,
                 metrics: Sequence[str] = ("accuracy",),
                 batch_size: int = 1024) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` over the whole of (x, y), in eval mode.

        Accuracy is reported for classification losses (and when no loss is given, as
        the argmax of the outputs against integer labels); a regression loss has none.
        """
        x, y = self._as_input(x), np.asarray(y)
        _check_lengths(x, y)
        pred = self.predict(x, batch_size)
        results = {}
        if loss is not None:
            results["loss"] = loss.forward(pred, y)
        for metric in metrics:
            if metric != "accuracy":
                raise ValueError(f"unknown metric {metric!r}; nnlite knows 'accuracy'")
            if loss is None:
                results["accuracy"] = CrossEntropy().accuracy(pred, y)
            elif loss.classification:
                results["accuracy"] = loss.accuracy(pred, y)
        return results

    # -- training -----------------------------------------------------------------
    def fit(self, x: Any, y: Any, *, loss: Loss, optimizer: Optimizer, epochs: int = 1,
            batch_size: int = 32, validation_data: tuple[Any, Any] | None = None,
            shuffle: bool = True, callbacks: Iterable[Callback] = (), verbose: bool = True,
            seed: int | None = None, initial_epoch: int = 0) -> History:
        """Train for epochs ``initial_epoch`` .. ``epochs - 1`` (Keras's meaning) and return
        the History: per-epoch ``loss`` and, with validation data, ``val_loss`` (and
        ``val_accuracy`` for classification).

        Each epoch's shuffling and dropout draws depend only on ``seed`` and the
        epoch number. A non-finite loss stops training with FloatingPointError and
        leaves model and optimizer as they were at the start of the last epoch
        whose weights were finite. Ctrl-C stops after the current batch.
        """
        x, y = self._as_input(x), np.asarray(y)
        self._check_fit_args(x, y, loss, optimizer, epochs, batch_size, initial_epoch)
        if validation_data is not None:
            val_x, val_y = self._as_input(validation_data[0]), np.asarray(validation_data[1])
            _check_lengths(val_x, val_y, "validation_data")
        if seed is None:
            seed = int(default_rng().integers(2 ** 63))
        history = History()
        cbs = CallbackList([*callbacks, history], self, optimizer)
        self.stop_training, self.initial_epoch = False, initial_epoch
        first = _first_trainable(self)
        interrupted = _InterruptFlag()
        self.train()
        cbs.on_train_begin()
        try:
            if first is not None:
                first.input_grad = False
            snapshot = _Snapshot(self, optimizer)
            with interrupted:
                for epoch in range(initial_epoch, epochs):
                    rng = np.random.default_rng([seed, epoch])
                    for m in self.modules():
                        m.rng = rng
                    cbs.on_epoch_begin(epoch)
                    logs = self._train_epoch(x, y, loss, optimizer, batch_size, shuffle, rng,
                                             epoch, epochs, verbose, cbs, snapshot, interrupted)
                    if interrupted.raised:  # a partial epoch is not reported as done
                        break
                    if validation_data is not None:
                        val = self.evaluate(val_x, val_y, loss, metrics=(
                            ("accuracy",) if loss.classification else ()))
                        logs.update({f"val_{k}": v for k, v in val.items()})
                        if verbose:
                            tqdm.write("  ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
                    if not snapshot.take():
                        snapshot.restore()
                        raise FloatingPointError(
                            f"weights became non-finite in epoch {epoch + 1}; model and "
                            f"optimizer are restored to the start of epoch {snapshot.epoch + 1}")
                    snapshot.epoch = epoch + 1
                    cbs.on_epoch_end(epoch, logs)
                    if self.stop_training:
                        break
        finally:
            for m in self.modules():
                m.rng = None
            if first is not None:
                first.input_grad = True
        if interrupted.raised:
            warnings.warn(f"training interrupted by Ctrl-C after {len(history.epoch)} "
                          f"complete epoch(s); returning the history so far", stacklevel=2)
        cbs.on_train_end()
        return history

    def _train_epoch(self, x, y, loss, optimizer, batch_size, shuffle, rng, epoch, epochs,
                     verbose, cbs, snapshot, interrupted) -> dict[str, float]:
        total, seen = 0.0, 0
        n_batches = math.ceil(len(x) / batch_size)
        with tqdm(total=n_batches, desc=f"Epoch {epoch + 1}/{epochs}", disable=not verbose,
                  unit="batch", leave=True, dynamic_ncols=True) as bar:
            for b, (xb, yb) in enumerate(batches(x, y, batch_size, shuffle=shuffle, rng=rng)):
                value = loss.forward(self.forward(xb), yb)
                if not math.isfinite(value):
                    snapshot.restore()
                    raise FloatingPointError(
                        f"loss is {value} in epoch {epoch + 1}, batch {b + 1}: training "
                        f"diverged (try a lower learning rate); model and optimizer are "
                        f"restored to the start of epoch {snapshot.epoch + 1}")
                optimizer.zero_grad()
                self.backward(loss.backward())
                optimizer.step()
                total += value * len(xb)
                seen += len(xb)
                bar.update()
                if verbose:
                    bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
                for hook in cbs.batch_end_hooks:
                    hook(b, {"loss": value})
                if interrupted.raised:
                    break
        return {"loss": total / max(seen, 1)}

    def _check_fit_args(self, x, y, loss, optimizer, epochs, batch_size, initial_epoch) -> None:
        _check_lengths(x, y)
        _check_batch_size(batch_size)
        if not isinstance(loss, Loss):
            raise ValueError(f"fit: loss must be an nnlite loss such as "
                             f"nnlite.losses.CrossEntropy(), got {loss!r}")
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"fit: optimizer must be an nnlite optimizer such as "
                             f"nnlite.optim.Adam(model.parameters()), got {optimizer!r}")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit: epochs must be a whole number >= 0, got {epochs!r}")
        if not 0 <= initial_epoch <= epochs:
            raise ValueError(f"fit: initial_epoch must lie in [0, epochs={epochs}], got "
                             f"{initial_epoch}")
        _check_finite(x, "x")
        if np.issubdtype(y.dtype, np.floating):
            _check_finite(y, "y")
        out = self.predict(x[:1])
        loss.check_target((len(x),) + out.shape[1:], y)

    def _as_input(self, x: Any) -> np.ndarray:
        """``x`` as an array of the model's dtype: a float array of that dtype is not copied."""
        return np.asarray(x, dtype=self.dtype)

    # -- description and files ----------------------------------------------------------
    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """Print (and return) each layer, its output shape and parameter count, Keras-style.

        Output shapes need the input's shape without the batch axis; it is
        inferred from a first Linear layer when not given.
        """
        if input_shape is None:
            first = next((m for m in self.modules() if hasattr(m, "in_features")), None)
            input_shape = (first.in_features,) if first is not None else None
        shapes = []
        if input_shape is not None:
            x = np.zeros((1, *input_shape), self.dtype)
            was_training = self.training
            self.eval()
            try:
                for layer in self.layers:
                    x = layer.forward(x)
                    shapes.append(str((None, *x.shape[1:])))
            finally:
                self.train(was_training)
        else:
            shapes = ["?"] * len(self.layers)
        rows = [(f"{i} {type(layer).__name__}", shape, sum(p.size for p in layer.parameters()))
                for i, (layer, shape) in enumerate(zip(self.layers, shapes))]
        total = sum(p.size for p in self.parameters())
        width = 64
        lines = [f"{'Layer (type)':<26}{'Output shape':<24}{'Params':>14}", "=" * width]
        lines += [f"{name:<26}{shape:<24}{count:>14,}" for name, shape, count in rows]
        lines += ["=" * width, f"Total params: {total:,} ({self.dtype})"]
        text = "\n".join(lines)
        print(text)
        return text

    def save(self, path: str | os.PathLike, *, optimizer: Optimizer | None = None,
             epoch: int | None = None) -> None:
        """Save architecture and weights (and optimizer state for a checkpoint), atomically."""
        io.save(self, path, optimizer=optimizer, epoch=epoch)


def _first_trainable(layer: Layer) -> Layer | None:
    """The first layer, in forward order, that has parameters (descending into Sequentials)."""
    for child in getattr(layer, "layers", []):
        if child.parameters():
            return _first_trainable(child) if isinstance(child, Sequential) else child
    return None


class _Snapshot:
    """Copies of the model's weights and buffers and the optimizer's state, to roll back to."""

    def __init__(self, model: Sequential, optimizer: Optimizer):
        self.model, self.optimizer, self.epoch = model, optimizer, model.initial_epoch
        self.take()

    def take(self) -> bool:
        """Record the current state if every weight is finite; return whether it was."""
        params = [p.data.copy() for p in self.model.parameters()]
        if not all(np.isfinite(p).all() for p in params):
            return False
        self.params = params
        self.buffers = [b.copy() for _, b in self.model.named_buffers()]
        self.state = {k: v.copy() for k, v in self.optimizer.state.items()}
        self.steps, self.lr = self.optimizer.steps, self.optimizer.lr
        return True

    def restore(self) -> None:
        for p, saved in zip(self.model.parameters(), self.params):
            p.data[...] = saved
        for (_, owner, attr), saved in zip(self.model._buffer_slots(), self.buffers):
            getattr(owner, attr)[...] = saved
        for k, v in self.state.items():
            self.optimizer.state[k][...] = v
        self.optimizer.steps, self.optimizer.lr = self.steps, self.lr


class _InterruptFlag:
    """While active, Ctrl-C sets ``raised`` instead of raising, so the current batch
    finishes; a second Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _check_lengths(x: np.ndarray, y: np.ndarray, what: str = "fit") -> None:
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{what}: x is empty; there is nothing to train or evaluate on")
    if y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"{what}: x has {len(x)} samples but y has "
                         f"{len(y) if y.ndim else 'no'} samples; they must match")


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")


def _check_finite(x: np.ndarray, name: str) -> None:
    """Raise ValueError naming the first row of ``x`` holding NaN or inf.

    Reads about a million values at a time, and makes no temporary of that size
    unless a chunk's sum is not finite (NaN and inf survive a sum).
    """
    row_size = max(1, x[0].size) if len(x) else 1
    chunk = max(1, (1 << 20) // row_size)
    for start in range(0, len(x), chunk):
        part = x[start:start + chunk]
        if np.isfinite(np.sum(part)):
            continue
        finite = np.isfinite(part).reshape(len(part), -1).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(f"fit: {name} has NaN or infinite values, first in row {row}")
