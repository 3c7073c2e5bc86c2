"""What every container inherits to be trained and used, as Keras's ``Trainer``: ``fit``,
``evaluate`` and ``predict``, each checking its arguments and data once, at the door.

A container (``Sequential``, the graph ``Model``) is a Layer that also says how
many inputs and outputs it has; ``Trainer`` drives it. ``fit`` hands the epochs to
``nnlite.training.loop``: one batch is forward, the losses and their gradients, one
``backward``, one optimizer step.
With one input and one output, arrays go in and come out bare; with several, as
lists, one entry per input or output, in order.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..core.door import (as_arrays, bare, check_batch_size, check_fit_args, check_flag,
                         check_last_batch, check_lengths, check_number, no_batch_size, no_y,
                         probe_rows)
from ..core.layer import Layer, default_rng
from ..core.losses import Loss, Objective, loss_weights_of, per_output
from ..core.optimizer import Optimizer
from ..core.parameter import get_default_dtype
from . import loop
from .callbacks import Callback, History


class Trainer(Layer):
    """Base class of the containers: the Keras-style ``fit``/``evaluate``/``predict``.

    A container keeps its distinct layers in ``self.layers`` and says how many inputs and
    outputs it has (``input_dtypes``, ``n_outputs``); its ``forward`` and ``backward`` take
    and return bare arrays for one input or output, lists for several.
    """

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
    def predict(self, x: Any, batch_size: int | None = None, *, steps: int | None = None
                ) -> np.ndarray | list[np.ndarray]:
        """The model's outputs for ``x``, computed in eval mode, ``batch_size`` rows at a time
        (1024 unless given; one array, or a list of one array per output). ``x`` may be
        batches (a dataset, a DataLoader, an iterator, a list: ``nnlite.training.feed``;
        an iterator's ``steps`` batches), whose outputs are joined."""
        if is_stream(x):
            from .feed import Feed, predict_stream  # (streams: loaded on first use)
            no_batch_size(batch_size, x, "predict")
            outs = predict_stream(self, Feed(x, "predict", steps))[0]
            return outs if self.n_outputs > 1 else outs[0]
        xs = self._as_inputs(x, "predict")
        batch_size = 1024 if batch_size is None else batch_size
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

    def evaluate(self, x: Any, y: Any = None, loss: Loss | Sequence[Loss] | None = None,
                 metrics: Sequence[str] | None = None, batch_size: int | None = None,
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
        of (x, y) batches (``nnlite.training.feed``), ``y`` then left out.
        """
        from .metrics import scores  # (evaluate's numbers, loaded on first use)
        if is_stream(x):
            from .feed import Feed, predict_stream
            no_y(y, "evaluate")
            no_batch_size(batch_size, x, "evaluate")
            preds, ys = predict_stream(self, Feed(x, "evaluate", steps), with_targets=True)
            return scores(self, lambda: (preds, ys), loss, metrics, loss_weights)
        xs, ys = self._as_inputs(x, "evaluate"), self._as_targets(y, "evaluate")
        check_lengths(xs, ys, "evaluate")

        def predictions() -> tuple[list, list]:
            preds = self.predict(bare(xs), batch_size)
            return (preds if self.n_outputs > 1 else [preds]), ys
        return scores(self, predictions, loss, metrics, loss_weights)

    # -- training -----------------------------------------------------------------
    def fit(self, x: Any, y: Any = None, *, loss: Loss | Sequence[Loss], optimizer: Optimizer,
            epochs: int = 1, batch_size: int | None = None, threads: int = 1, comm: Any = None,
            validation_data: Any = None, validation_split: float = 0.0, shuffle: bool = True,
            callbacks: Iterable[Callback] = (), verbose: bool = True, seed: int | None = None,
            initial_epoch: int = 0, loss_weights: Sequence[float] | None = None,
            drop_last: bool = False, steps_per_epoch: int | None = None,
            metrics: Sequence[Any] | None = None) -> History:
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
        ``threads`` > 1 splits each batch among threads (``training.parallel``), ``comm``
        among processes (``nnlite.distributed``); threads pay for batches of 10 ms or more.
        ``validation_split`` holds out the last part of the arrays, as Keras does.

        ``x`` may be batches of (x, y) instead, ``y`` and ``batch_size`` left out
        (``training.feed``): a dataset (Keras's ``PyDataset``), a ``DataLoader``, a list of
        pairs, or an iterator (``steps_per_epoch`` an epoch; used up, training stops with a
        warning). Each batch is checked as it arrives; ``validation_data`` may be batches.
        """
        losses = per_output(loss, self.n_outputs)
        scored, checks = _fit_checks(metrics, losses, self.output_names())
        threads = check_number("fit", "threads", threads, integer=True, low=1)
        check_fit_args(self, optimizer, epochs, initial_epoch)
        if validation_split and validation_data is not None:
            raise ValueError("fit: give validation_data or validation_split, not both")
        epoch_data, steps, held = fit_data(self, x, y, checks, batch_size, shuffle, drop_last,
                                           steps_per_epoch, validation_split, comm)
        val = validation_source(self, validation_data, checks) if held is None else held
        weights = loss_weights_of(loss_weights, self.n_outputs)
        self._trained_with = losses if self.n_outputs > 1 else losses[0]  # for evaluate
        self.stop_training, self.initial_epoch = False, initial_epoch
        seed = int(default_rng().integers(2 ** 63)) if seed is None else seed
        every = None if val is None or val[1] is None else batch_size or 32  # fit's batches
        validate = None if val is None else _validation(self, val, every, losses, metrics,
                                                        weights, comm)
        return loop.train(self, epoch_data, Objective(losses, weights, self.output_names(),
                                                      scored),
                          optimizer, [*loop.shown(verbose, epochs, steps), *callbacks], epochs,
                          seed, threads, validate, comm)

    def _check_data(self, xs: list[np.ndarray], ys: list[np.ndarray],
                    checks: list[tuple[int, Any]], what: str,
                    outs: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Lengths, shapes (a one-row probe, unless its ``outs`` for these shapes are given)
        and targets of data for ``fit``, checked before any training: ``checks`` holds
        (output, a loss or metric whose ``check_target`` judges its targets); the probe's
        outputs."""
        check_lengths(xs, ys, what)
        outs = self._check_inputs(xs, what) if outs is None else outs
        for i, fn in checks:
            try:
                fn.check_target((len(ys[i]),) + outs[i].shape[1:], ys[i])
            except ValueError as e:
                where = f"output {i}: " if len(ys) > 1 else ""
                raise ValueError(f"{what}: {where}{e}") from None
        return outs

    def _check_inputs(self, xs: list[np.ndarray], what: str) -> list[np.ndarray]:
        """The door's one-row probe (``nnlite.core.door.probe_rows``): every layer's
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


def _validation(model: Trainer, val: tuple[Any, Any], batch_size: int | None,
                losses: list[Loss], metrics: Any, weights: list[float], comm: Any
                ) -> Callable[[], dict[str, float]]:
    """fit's validation after each epoch: evaluate's numbers for ``val`` (a dataset in
    batches of its own); with ``comm``, each rank predicts its part, the parts joined
    (``comm.predictions``)."""
    if comm is None:
        return lambda: model.evaluate(*val, losses, metrics, batch_size, weights)
    from .metrics import scores
    from .parts import check_validation_parts
    check_validation_parts(val, comm.size)
    return lambda: scores(model, lambda: comm.predictions(model, *val, batch_size), losses,
                          metrics, weights)


def _scorers(metrics: Sequence[Any] | None, losses: list[Loss], names: list[str], what: str
             ) -> list[tuple[int, str, Any]]:
    """(output, log key, scoring function) of the metrics asked for (``training.metrics``,
    loaded then); by default, the accuracy of each output a classification loss trains."""
    if metrics is None:
        return [(i, f"{names[i]}accuracy", fn.accuracy) for i, fn in enumerate(losses)
                if fn is not None and fn.classification]
    from .metrics import scorers
    return scorers(metrics, losses, names, what)


def _fit_checks(metrics: Sequence[Any] | None, losses: list[Loss], names: list[str]
                ) -> tuple[list[tuple[int, str, Any]], list[tuple[int, Any]]]:
    """fit's metrics, as ``_scorers`` gives them, and what judges the targets at the door:
    (output, its loss or a metric that has ``check_target``)."""
    scored = _scorers(metrics, losses, names, "fit")
    return scored, [*enumerate(losses), *[(i, m) for i, _, m in scored
                                          if hasattr(m, "check_target")]]


def fit_data(model: Any, x: Any, y: Any, checks: list[tuple[int, Any]],
             batch_size: int | None, shuffle: bool, drop_last: bool, steps: int | None,
             split: float, comm: Any) -> tuple[Callable, int | None, tuple[Any, Any] | None]:
    """fit's data, checked at the door: ``epoch_data(rng, epoch)``, an epoch's batches
    (with ``comm``, this rank's part of each); how many batches an epoch has (None: as many
    as an iterator gives); and the (x, y) that ``validation_split`` holds out, Keras's way:
    the last part, taken before shuffling."""
    part = getattr(comm, "part", None)  # (rank, ranks): this process reads one part
    if is_stream(x):
        from .feed import fit_feed
        epoch_data, steps = fit_feed(model, x, y, checks, batch_size, shuffle, steps, split,
                                     comm)
        return _joined_by(comm, epoch_data), steps, None
    batch_size = 32 if batch_size is None else batch_size
    check_batch_size(batch_size)
    xs, ys = model._as_inputs(x, "fit"), model._as_targets(y, "fit")
    model._check_data(xs, ys, checks, "fit")  # the part held out for validation too
    held, at = None, _split_at(len(xs[0]), split)
    if at < len(xs[0]):
        held = (bare([v[at:] for v in xs]), bare([v[at:] for v in ys]))
        xs, ys = [v[:at] for v in xs], [v[:at] for v in ys]
    check_last_batch(model, len(xs[0]), batch_size, check_flag("fit", "drop_last", drop_last),
                     getattr(comm, "size", 1))
    n = len(xs[0])
    return _joined_by(comm, lambda rng, epoch: batches(
        bare(xs), bare(ys), batch_size, shuffle=shuffle, rng=rng, drop_last=drop_last,
        part=part)), n // batch_size if drop_last else math.ceil(n / batch_size), held


def _joined_by(comm: Any, epoch_data: Callable) -> Callable:
    """Each rank's batches with their targets joined from every rank's (``comm.batches``)."""
    if getattr(comm, "part", None) is None:
        return epoch_data
    return lambda rng, epoch: comm.batches(epoch_data(rng, epoch))


def _split_at(n: int, split: Any) -> int:
    """Where ``validation_split`` cuts n samples (n: it holds nothing out)."""
    if not split:
        return n
    split = check_number("fit", "validation_split", split, low=0, high=1)
    at = int(n * (1 - split))
    if not 0 < at < n:
        raise ValueError(f"fit: validation_split must be in (0, 1) and leave samples on both "
                         f"sides; {split} of {n} samples leaves {at} to train on")
    return at


def is_stream(x: Any) -> bool:
    """Whether ``x`` is batches (a dataset object, a re-iterable such as a DataLoader, an
    iterator, or a list of ``(x, y)`` batches), not array data (an array, or a list of one
    array per input)."""
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(isinstance(b, (list, tuple)) and len(b) > 0 and
                                  np.ndim(b[0]) > 0 for b in x)
    if isinstance(x, (np.ndarray, dict, str, bytes)) or hasattr(x, "__array__"):
        return False
    return (hasattr(x, "__len__") and hasattr(x, "__getitem__")) or hasattr(x, "__iter__")


def validation_source(model: Any, data: Any, checks: list[tuple[int, Any]]
                      ) -> tuple[Any, Any] | None:
    """fit's ``validation_data`` as evaluate's (x, y): a pair of arrays, checked now like
    the training data, or batches (a dataset, a DataLoader; y None); None when there is
    none. A tuple or list is the pair, as in Keras."""
    if not isinstance(data, (tuple, list)) and is_stream(data):
        if iter(data) is data:
            raise ValueError("fit: validation_data may be a dataset or a re-iterable such as "
                             "a DataLoader, not an iterator, which the first epoch would use up")
        return data, None
    if data is None:
        return None
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("fit: validation_data must be a pair (x_val, y_val) or a dataset")
    vx, vy = (model._as_inputs(data[0], "validation_data"),
              model._as_targets(data[1], "validation_data"))
    model._check_data(vx, vy, checks, "validation_data")
    return bare(vx), bare(vy)


def batches(x: Any, y: Any, batch_size: int, *, shuffle: bool = True,
            rng: np.random.Generator | int | None = None, drop_last: bool = False,
            part: tuple[int, int] | None = None) -> Iterator[tuple[Any, Any]]:
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` samples each.

    ``x`` and ``y`` are arrays, or lists of arrays (a model's several inputs or targets),
    which are sliced alike; ``y`` may be None. With ``shuffle`` the samples are taken in
    a random order drawn from ``rng`` (a Generator or a seed); call again for a new order
    each epoch. Without it, batches are views, in order. ``drop_last`` leaves out a
    final, smaller batch. ``part=(k, parts)`` yields only part k of each batch's rows
    (``training.parts``): a rank's share.
    """
    check_batch_size(batch_size)
    n = len(x[0]) if isinstance(x, list) else len(x)
    order = np.random.default_rng(rng).permutation(n) if shuffle else None
    end = n - n % batch_size if drop_last else n
    pick = rows if part is None else _share_of(n, *part)
    for start in range(0, end, batch_size):
        taken = order[start:start + batch_size] if shuffle else slice(start, start + batch_size)
        yield pick(x, taken), pick(y, taken)


def _share_of(n: int, k: int, parts: int) -> Callable[[Any, Any], Any]:
    """``rows`` of part ``k`` of ``parts`` of each batch (``training.parts``)."""
    from .parts import share
    return lambda a, taken: rows(a, share(taken, n, k, parts))


def rows(a: Any, taken: Any) -> Any:
    """The given rows of an array (or of each array in a list): a view for a slice, else a
    copy by ``take``, which copies whole rows a little faster than ``a[indices]``."""
    if a is None:
        return None
    if isinstance(a, list):
        return [rows(v, taken) for v in a]
    return a[taken] if isinstance(taken, slice) else a.take(taken, axis=0)
