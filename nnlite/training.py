"""The training loop every container shares: fit, evaluate, predict, summary and save.

A container (``Sequential``, the graph ``Model``) is a Layer that also says how
many inputs and outputs it has; ``Trainable`` drives it. One batch of ``fit`` is
forward, the losses and their gradients, one ``backward``, one optimizer step.
With one input and one output, arrays go in and come out bare; with several, as
lists, one entry per input or output, in order.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from . import generation, io
from .budget import probe_rows
from .callbacks import Callback, CallbackList, EpochLine, History, ProgressBar, interactive
from .datasets import batches
from .feed import (Feed, bare, checked_batch, is_stream, predict_stream,
                   validation_source)
from .layer import Layer, default_rng
from .parameter import Parameter, get_default_dtype
from .losses import Loss, scorer
from .objective import Objective, loss_weights_of, per_output
from .optimizer import Optimizer
from .parallel import Replicas, check_threads
from .rollback import InterruptFlag, Snapshot
from .state import load_weights, save_weights
from .validate import (as_arrays, check_batch_size, check_fit_args, check_flag, no_y,
                       check_last_batch, check_lengths)


class Trainable(Layer):
    """Base class of the containers: the Keras-style ``fit``/``evaluate``/``predict``.

    A container keeps its distinct layers in ``self.layers`` and says how many inputs and
    outputs it has (``input_dtypes``, ``n_outputs``); its ``forward`` and ``backward`` take
    and return bare arrays for one input or output, lists for several.
    """

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

    #: Set by ``fit``; a callback stops training by setting it to True.
    stop_training = False
    initial_epoch = 0

    # -- what a container tells the loop ------------------------------------------------
    @property
    def input_dtypes(self) -> list[np.dtype | None]:
        """One entry per input: the integer dtype an input keeps, or None for the model's
        floating dtype, which inputs are cast to."""
        return [None]

    #: How many outputs the container has (a graph's say).
    n_outputs = 1

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the model's parameters (the default dtype if it has none)."""
        for p in self.parameters():
            return p.data.dtype
        return get_default_dtype()

    def output_names(self) -> list[str]:
        """How History and ``evaluate`` name each output's metrics."""
        return [""] if self.n_outputs == 1 else [f"output_{i}_" for i in range(self.n_outputs)]

    # -- inference ----------------------------------------------------------------
    def predict(self, x: Any, batch_size: int = 1024, *, steps: int | None = None
                ) -> np.ndarray | list[np.ndarray]:
        """The model's outputs for ``x``, computed in eval mode, ``batch_size`` rows at a time
        (one array, or a list of one array per output). ``x`` may be a dataset or an
        iterator of batches (``nnlite.feed``; an iterator's ``steps`` batches), whose
        outputs are joined."""
        if is_stream(x):
            outs = predict_stream(self, Feed(x, "predict", steps))[0]
            return outs if self.n_outputs > 1 else outs[0]
        xs = self._as_inputs(x, "predict")
        check_batch_size(batch_size)
        shapes = [(v.shape[1:], v.dtype.str) for v in xs]
        if len(xs[0]) and self.__dict__.get("_predicted") != shapes:  # a new kind of input
            self._check_inputs(xs, "predict")  # (sampling a sequence calls predict per token)
            self.__dict__["_predicted"] = shapes
        outs: list[np.ndarray] | None = None
        n = len(xs[0])
        with self.evaluating():
            for start in range(0, n, batch_size):
                ys = self._forward_list([v[start:start + batch_size] for v in xs])
                if outs is None:
                    outs = [np.empty((n,) + y.shape[1:], y.dtype) for y in ys]
                for out, y in zip(outs, ys):
                    out[start:start + len(y)] = y
        if outs is None:
            outs = [np.empty((0,), self.dtype) for _ in range(self.n_outputs)]
        return outs if self.n_outputs > 1 else outs[0]

    def generate(self, ids: Any, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, seed: int | None = None) -> np.ndarray:
        """``ids`` (N, T) and ``max_new_tokens`` more, sampled one at a time from the logits
        (N, T, vocab) this model returns, as nanoGPT's ``generate``: see
        ``nnlite.generation.generate``."""
        return generation.generate(self, ids, max_new_tokens, temperature=temperature,
                                   top_k=top_k, seed=seed)

    def evaluate(self, x: Any, y: Any = None, loss: Loss | Sequence[Loss] | None = None,
                 metrics: Sequence[str] | None = None, batch_size: int = 1024,
                 loss_weights: Sequence[float] | None = None, *,
                 steps: int | None = None) -> dict[str, float]:
        """``{"loss": ..., "accuracy": ...}`` over the whole of (x, y), in eval mode.

        The loss is ``loss``, else the one ``fit`` last trained the model with. Accuracy
        (``metrics=None``) is reported for classification outputs only: a CrossEntropy or
        BinaryCrossEntropy loss, or, with no loss known, an output of more than one unit
        whose targets are class labels in range (a one-unit output with integer targets is
        a regression: no accuracy, so a loss must be given); asking for
        ``metrics=("accuracy",)`` on a regression output is a ValueError. With several
        outputs, ``loss`` is the weighted sum and each output has its own
        ``output_i_loss`` (and ``output_i_accuracy``). ``x`` may be a dataset or an iterator
        of (x, y) batches (``nnlite.feed``), ``y`` then left out.
        """
        if is_stream(x):
            no_y(y, "evaluate")
            preds, ys = predict_stream(self, Feed(x, "evaluate", steps), with_targets=True)
        else:
            xs, ys = self._as_inputs(x, "evaluate"), self._as_targets(y, "evaluate")
            check_lengths(xs, ys, "evaluate")
            preds = None
        for metric in metrics or ():
            if metric != "accuracy":
                raise ValueError(f"unknown metric {metric!r}; nnlite knows 'accuracy'")
        known = loss if loss is not None else self.__dict__.get("_trained_with")
        losses = per_output(known, self.n_outputs) if known is not None else \
            [None] * self.n_outputs
        weights = loss_weights_of(loss_weights, self.n_outputs)
        if preds is None:
            preds = self.predict(bare(xs), batch_size)
            preds = preds if self.n_outputs > 1 else [preds]
        accuracy = [scorer(fn, p, t) for fn, p, t in zip(losses, preds, ys)]
        for name, fn, t, acc in zip(self.output_names(), losses, ys, accuracy):
            where = f"output {name[:-1]}" if name else "the output"
            if metrics and acc is None:
                raise ValueError(f"evaluate: accuracy is for classification; {where} is a "
                                 f"regression ({type(fn).__name__} loss, {t.dtype} targets)")
            if fn is None and acc is None:
                raise ValueError(f"evaluate: nothing to report for {where}: give loss=, or "
                                 f"fit the model first (no loss is known, and its targets "
                                 f"are not class labels of its outputs)")
        results: dict[str, float] = {}
        if known is not None:
            for fn, p, t in zip(losses, preds, ys):
                fn.check_target(p.shape, t)
            values = [fn.forward(p, t) for fn, p, t in zip(losses, preds, ys)]
            results["loss"] = float(sum(w * v for w, v in zip(weights, values)))
            if self.n_outputs > 1:
                results.update({f"{name}loss": v for name, v in zip(self.output_names(), values)})
        if metrics is None or metrics:
            for name, acc, p, t in zip(self.output_names(), accuracy, preds, ys):
                if acc is not None:
                    results[f"{name}accuracy"] = acc.accuracy(p, t)
        return results

    # -- training -----------------------------------------------------------------
    def fit(self, x: Any, y: Any = None, *, loss: Loss | Sequence[Loss], optimizer: Optimizer,
            epochs: int = 1, batch_size: int = 32,
            validation_data: Any = None, shuffle: bool = True,
            callbacks: Iterable[Callback] = (), verbose: bool = True, seed: int | None = None,
            initial_epoch: int = 0, loss_weights: Sequence[float] | None = None,
            drop_last: bool = False, steps_per_epoch: int | None = None,
            threads: int = 1) -> History:
        """Train for epochs ``initial_epoch`` .. ``epochs - 1`` (Keras's meaning) and return
        the History: per-epoch ``loss`` (and ``accuracy`` for classification) and, with
        validation data, ``val_loss`` (and ``val_accuracy``). With several outputs,
        ``loss`` is a list (one loss per output), the trained loss is the sum weighted by
        ``loss_weights``, and each output's own metrics are logged as ``output_i_loss``.

        With ``verbose``, each epoch prints one line to stdout: its number, its time and
        its metrics; in a terminal or a notebook a progress bar (on stderr) runs meanwhile.

        Each epoch's shuffling and dropout draws depend only on ``seed`` and the
        epoch number. A non-finite loss stops training with FloatingPointError and
        leaves model and optimizer as they were at the start of the last epoch
        whose weights were finite. Ctrl-C stops after the current batch. ``drop_last``
        leaves out each epoch's last, smaller batch (as PyTorch's DataLoader).
        ``threads`` > 1 splits each batch among that many threads (``nnlite.parallel``):
        it pays where a batch takes tens of milliseconds, as a convolutional network's.

        ``x`` may instead be a dataset object or an iterator of (x, y) batches, ``y`` then
        left out (``nnlite.feed``: Keras's ``PyDataset`` protocol, or ``steps_per_epoch``
        batches of an iterator); ``shuffle`` shuffles a dataset's batch order, and every
        batch is checked as it arrives. ``validation_data`` may be a dataset too.
        """
        feed = Feed(x, "fit", steps_per_epoch) if is_stream(x) else None
        if feed is not None:
            no_y(y, "fit")
        losses = per_output(loss, self.n_outputs)
        weights = loss_weights_of(loss_weights, self.n_outputs)
        check_fit_args(self, optimizer, epochs, batch_size, initial_epoch)
        threads, net = check_threads(self, threads), self  # net: what runs each batch
        if feed is None:
            xs, ys = self._as_inputs(x, "fit"), self._as_targets(y, "fit")
            self._check_data(xs, ys, losses, "fit")
            check_last_batch(self, len(xs[0]), batch_size, check_flag("fit", "drop_last",
                                                                      drop_last))
        else:
            checked_batch(self, feed.first(), 0, "fit", feed.seen, losses)
        val = validation_source(self, validation_data, losses)  # evaluate's x and y
        history = History()
        self._trained_with = losses if self.n_outputs > 1 else losses[0]  # for evaluate
        objective = Objective(losses, weights, self.output_names())
        shown = [EpochLine(epochs)] if verbose else []
        if verbose and interactive():  # a bar where it can redraw: a terminal, a notebook
            total = feed.steps if feed is not None else len(xs[0]) // batch_size if drop_last \
                else math.ceil(len(xs[0]) / batch_size)
            shown.insert(0, ProgressBar(epochs, total))
        cbs = CallbackList([*shown, *callbacks, history], self, optimizer)
        self.stop_training, self.initial_epoch = False, initial_epoch
        seed = int(default_rng().integers(2 ** 63)) if seed is None else seed
        self.train()
        cbs.call("on_train_begin")
        try:
            net = Replicas(self, threads) if threads > 1 else self
            snapshot = Snapshot(self, optimizer)
            with InterruptFlag() as interrupted:
                for epoch in range(initial_epoch, epochs):
                    rng = np.random.default_rng([seed, epoch])
                    for m in self.modules():
                        m.rng = rng
                    cbs.call("on_epoch_begin", epoch)
                    data = batches(bare(xs), bare(ys), batch_size, shuffle=shuffle, rng=rng,
                                   drop_last=drop_last) if feed is None else feed.batches(
                        lambda b, i: checked_batch(self, b, i, "fit", feed.seen, losses),
                        rng if shuffle else None, epoch)
                    try:
                        logs = self._train_epoch(data, objective, optimizer, cbs, interrupted,
                                                 net)
                    except _Diverged as d:
                        snapshot.restore()
                        raise FloatingPointError(
                            f"loss is {d.value} in epoch {epoch + 1}, batch {d.batch + 1}: "
                            f"training diverged (try a lower learning rate); model and "
                            f"optimizer are restored to the start of epoch "
                            f"{snapshot.epoch + 1}") from None
                    if interrupted.raised:  # a partial epoch is not reported as done
                        break
                    if val is not None:
                        scores = self.evaluate(*val, losses, loss_weights=weights,
                                               batch_size=batch_size)  # Keras's batches
                        logs.update({f"val_{k}": v for k, v in scores.items()})
                    if not snapshot.take(epoch + 1):
                        snapshot.restore()
                        raise FloatingPointError(
                            f"weights became non-finite in epoch {epoch + 1}; model and "
                            f"optimizer are restored to the start of epoch {snapshot.epoch + 1}")
                    cbs.call("on_epoch_end", epoch, logs)
                    if self.stop_training:
                        break
        finally:
            for m in self.modules():
                m.rng = None
            self.input_grad = True
            if net is not self:
                net.close()
        if interrupted.raised:
            warnings.warn(f"training interrupted by Ctrl-C after {len(history.epoch)} "
                          f"complete epoch(s); returning the history so far", stacklevel=2)
        cbs.call("on_train_end")
        return history

    def _train_epoch(self, data: Iterable[tuple[Any, Any]], objective: Objective,
                     optimizer: Optimizer, cbs: CallbackList, interrupted: InterruptFlag,
                     net: Any) -> dict[str, float]:
        """One pass over ``data``, each batch run by ``net`` (the model, or its
        ``Replicas``); the epoch's means of ``objective``'s metrics."""
        objective.reset()
        frozen = None  # the freeze count backward's reach was last set for
        for b, (x, y) in enumerate(data):
            if Parameter.freeze_count != frozen:  # each epoch, and when a layer is (un)frozen
                frozen, self.input_grad = Parameter.freeze_count, False  # no dL/dx of the data
            out = net.forward(x)                    # forward
            value = objective.forward(out, y)       # the loss
            if not math.isfinite(value):
                raise _Diverged(value, b)
            optimizer.zero_grad()
            net.backward(objective.backward())      # backward: dL/dout, through every layer
            optimizer.step()                        # step
            objective.count(value)
            for hook in cbs.hooks["on_batch_end"]:
                hook(b, {"loss": value})
            if interrupted.raised:
                break
        return objective.logs()

    def _check_data(self, xs: list[np.ndarray], ys: list[np.ndarray], losses: list[Loss],
                    what: str, outs: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Lengths, shapes (a one-row probe, unless its ``outs`` for these shapes are given)
        and targets of data for ``fit``, checked before any training; the probe's outputs."""
        check_lengths(xs, ys, what)
        outs = self._check_inputs(xs, what) if outs is None else outs
        for i, (fn, out, t) in enumerate(zip(losses, outs, ys)):
            try:
                fn.check_target((len(t),) + out.shape[1:], t)
            except ValueError as e:
                where = f"output {i}: " if len(ys) > 1 else ""
                raise ValueError(f"{what}: {where}{e}") from None
        return outs

    def _check_inputs(self, xs: list[np.ndarray], what: str) -> list[np.ndarray]:
        """The door's one-row probe (``nnlite.budget.probe_rows``): every layer's
        ``check_input`` on the way; the outputs."""
        try:
            out = probe_rows(self, bare(xs))
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
        return out if self.n_outputs > 1 else [out]

    def _forward_list(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        out = self.forward(bare(xs))
        return out if self.n_outputs > 1 else [out]

    # -- data in -------------------------------------------------------------------
    def _as_inputs(self, x: Any, what: str) -> list[np.ndarray]:
        """The inputs as a list of arrays, cast once to the model's dtype (integer ids kept)."""
        xs = as_arrays(x, [self.dtype if d is None else d for d in self.input_dtypes], what, "x")
        self.__dict__["input_shapes"] = [v.shape[1:] for v in xs]  # saved: a load-time probe
        return xs

    def _as_targets(self, y: Any, what: str) -> list[np.ndarray]:
        return as_arrays(y, [None] * self.n_outputs, what, "y")

    # -- description and files ----------------------------------------------------------
    def summary(self, input_shape: tuple[int, ...] | None = None) -> str:
        """Print (and return) each layer, its output shape and parameter count, Keras-style
        (and, for a graph, the layers that feed it); then the totals, trainable and not
        (frozen layers' parameters, and buffers such as BatchNorm's running statistics)."""
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
        rows = (f"({i}): {layer!r}".replace("\n", "\n  ") for i, layer in enumerate(self.layers))
        return "\n" + "".join(f"  {row}\n" for row in rows)

    def _summary_rows(self, input_shape) -> list[tuple[str, str, int, str]]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike, *, optimizer: Optimizer | None = None,
             epoch: int | None = None) -> None:
        """Save architecture and weights (and optimizer state for a checkpoint), atomically."""
        io.save(self, path, optimizer=optimizer, epoch=epoch)

    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the state dict to ``path`` as a safetensors file (what PyTorch reads)."""
        save_weights(self, path)

    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> Any:
        """Read a safetensors file of PyTorch's names and layouts into this model."""
        return load_weights(self, path, strict)


class _Diverged(Exception):
    """The loss of batch ``batch`` was not finite (``fit`` rolls back and says so)."""

    def __init__(self, value: float, batch: int):
        super().__init__(value, batch)
        self.value, self.batch = value, batch

