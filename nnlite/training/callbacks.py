"""Callbacks: hooks into ``fit``, as in Keras.

``fit`` calls, in order: ``on_train_begin``, then per epoch ``on_epoch_begin``,
``on_batch_end`` after each batch, ``on_epoch_end`` with the epoch's logs
(``loss``, ``val_loss``, ...), and finally ``on_train_end``. Before that it
sets ``callback.model`` and ``callback.optimizer``. A callback stops training
by setting ``self.model.stop_training = True``.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings
from typing import Any

import numpy as np



def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where output is drawn in a notebook)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return hasattr(shell, "kernel")


class Callback:
    """Base class: override any of the ``on_*`` hooks. One that ``writes`` (a file, the
    screen) runs on rank 0 only in ``fit(comm=...)``; the others run on every rank."""

    model: Any = None
    optimizer: Any = None
    writes = False

    def set_context(self, model: Any, optimizer: Any) -> None:
        self.model, self.optimizer = model, optimizer

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class History(Callback):
    """What ``fit`` returns: ``.history`` maps each metric to its per-epoch list."""

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def plot(self, metrics: list[str] | None = None, *, ax: Any = None) -> Any:
        """The training curves: ``nnlite.plot.plot_history(self, metrics, ax=ax)``."""
        from .curves import plot_history  # (matplotlib, loaded on first use)
        return plot_history(self, metrics, ax=ax)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best epoch.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False):
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(min_delta)
        self.mode = _monitor_mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.wait, self.best_weights, self.stopped_epoch = 0, None, None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"EarlyStopping: '{self.monitor}' is not among the logged metrics "
                          f"{sorted(logs or {})}; pass validation_data to fit", stacklevel=2)
            return
        if self._improved(value):
            self.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = [p.data.copy() for p in self.model.parameters()]
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            for p, best in zip(self.model.parameters(), self.best_weights):
                p.data[...] = best


class ModelCheckpoint(Callback):
    """Save the model, its optimizer's state and the epochs done to ``path`` after each
    epoch (atomically), or only when ``monitor`` improves with ``save_best_only``.

    ``path`` may contain ``{epoch}`` and logged metrics, e.g. ``"ckpt-{epoch:02d}.npz"``.
    Weights that are not finite are never saved.
    """

    writes = True

    def __init__(self, path: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.mode = _monitor_mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(f"ModelCheckpoint: '{self.monitor}' is not among the logged "
                              f"metrics {sorted(logs)}; nothing saved", stacklevel=2)
                return
            if not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        if not all(np.isfinite(p.data).all() for p in self.model.parameters()):
            warnings.warn(f"ModelCheckpoint: weights after epoch {epoch + 1} are not finite; "
                          f"{self.path} was not overwritten", stacklevel=2)
            return
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path, optimizer=self.optimizer, epoch=epoch + 1)


class CSVLogger(Callback):
    """Each epoch's logs as one row of a CSV file, as Keras's ``CSVLogger``: the columns
    ``epoch`` (counted from 0) and the logged metrics in sorted order, a header first; the
    file is flushed after every row, so a run killed midway keeps its finished epochs.
    With ``append``, rows are added to an existing file (without a second header)."""

    writes = True

    def __init__(self, path: str, separator: str = ",", append: bool = False):
        self.path, self.separator, self.append = str(path), separator, bool(append)
        self.file: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        has_rows = self.append and os.path.exists(self.path) and os.path.getsize(self.path)
        self.file = open(self.path, "a" if self.append else "w", newline="")
        self.writer, self.header = None, not has_rows

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if self.writer is None:
            self.writer = csv.DictWriter(self.file, ["epoch", *sorted(logs)],
                                         delimiter=self.separator)
            if self.header:
                self.writer.writeheader()
        self.writer.writerow({"epoch": epoch, **logs})
        self.file.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


HOOKS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_batch_end")


class LambdaCallback(Callback):
    """A callback from functions, as Keras's: ``on_epoch_begin(epoch, logs)``,
    ``on_epoch_end(epoch, logs)``, ``on_batch_end(batch, logs)``, ``on_train_begin(logs)``,
    ``on_train_end(logs)``; the hooks not given do nothing (and are not called)."""

    def __init__(self, **hooks: Any):
        for hook, fn in hooks.items():
            if hook not in HOOKS:
                raise ValueError(f"LambdaCallback: fit has no hook {hook!r}; it has "
                                 f"{', '.join(HOOKS)}")
            if fn is not None and not callable(fn):
                raise ValueError(f"LambdaCallback: {hook} must be a function, got "
                                 f"{type(fn).__name__}")
            if fn is not None:
                setattr(self, hook, _keras_call(fn, hook.startswith("on_train")))


def _keras_call(fn: Any, train_hook: bool) -> Any:
    """``fn`` called as Keras calls a hook: with the epoch or batch number (train hooks have
    none) and the logs, {} where fit gives none."""
    if train_hook:
        return lambda logs=None: fn(logs or {})
    return lambda index, logs=None: fn(index, logs or {})


def _overrides(cb: Callback, hook: str) -> bool:
    """Whether ``cb`` does something at ``hook``: its class or the instance replaces the
    base class's empty method."""
    fn = getattr(cb, hook)
    return getattr(fn, "__func__", fn) is not getattr(Callback, hook)


class CallbackList:
    """Calls a hook of every callback, in order: only where a callback overrides it (the
    base class's do nothing), so a batch calls no empty ``on_batch_end``."""

    def __init__(self, callbacks: Any, model: Any, optimizer: Any):
        for cb in callbacks:
            cb.set_context(model, optimizer)
        self.hooks = {hook: [getattr(cb, hook) for cb in callbacks if _overrides(cb, hook)]
                      for hook in HOOKS}

    def call(self, hook: str, *args: Any) -> None:
        for fn in self.hooks[hook]:
            fn(*args)


def interactive() -> bool:
    """Whether a progress bar can redraw where it lands: a terminal, or a notebook.

    Elsewhere (a log file, a pipe, CI), ``fit`` writes one line per epoch instead.
    """
    try:
        return sys.stderr.isatty() or in_notebook()
    except (AttributeError, ValueError):  # a replaced or closed stderr
        return in_notebook()


class EpochLine(Callback):
    """One line per epoch on stdout, its number, its time and its metrics: ``fit`` adds
    it with ``verbose``."""

    writes = True

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.started
        from tqdm import tqdm  # (loaded on first use: import nnlite loads little)
        tqdm.write(f"Epoch {epoch + 1}/{self.epochs}  {seconds:.2f} s" + "".join(
            f"  {k}: {v:.4f}" for k, v in (logs or {}).items()), file=sys.stdout)


class ProgressBar(Callback):
    """The epoch's progress bar on stderr with its running loss: ``fit`` adds it, with
    ``verbose``, where a bar can redraw (a terminal or a notebook)."""

    writes = True

    def __init__(self, epochs: int, batches: int):
        self.epochs, self.batches, self.bar = epochs, batches, None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        from tqdm import tqdm
        self.bar = tqdm(total=self.batches, desc=f"Epoch {epoch + 1}/{self.epochs}",
                        unit="batch", leave=False, dynamic_ncols=True)
        self.total = 0.0

    def on_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.total += (logs or {}).get("loss", 0.0)
        self.bar.update()
        self.bar.set_postfix(loss=f"{self.total / (batch + 1):.4f}", refresh=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.close()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
