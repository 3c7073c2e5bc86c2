"""Training curves, and the matplotlib helpers every picture uses.

matplotlib is the optional extra ``plot``, imported when a function is first called.
``History.plot`` and ``nnlite.plot`` both draw curves from here; the pictures of models
and data are in ``nnlite.plot``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def pyplot() -> Any:
    """matplotlib.pyplot, or an ImportError naming the extra that installs it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError('nnlite.plot needs matplotlib: pip install "nnlite[plot]"') from error
    return plt


def panels(ax: Any, n: int, ncols: int, size: tuple[float, float]) -> tuple[Any, list[Any]]:
    """``n`` Axes to draw on: those given (one Axes, or a sequence or array of them), or
    a new figure's grid of ``ncols`` columns, ``size`` inches per panel."""
    if ax is None:
        rows = max(1, -(-n // ncols))
        cols = max(1, min(n, ncols))
        fig, grid = pyplot().subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows),
                                       squeeze=False, layout="constrained")
        axes = list(grid.flat)
        for extra in axes[n:]:
            extra.set_axis_off()
        return fig, axes[:n]
    axes = list(np.ravel(np.array(ax, dtype=object)))
    if len(axes) < n:
        raise ValueError(f"{n} panels to draw, but ax holds only {len(axes)} Axes")
    return axes[0].figure, axes[:n]


def plot_history(history: Any | Mapping[str, Sequence[float]],
                 metrics: Sequence[str] | None = None, *, xlabel: str = "epoch",
                 ax: Any = None) -> Any:
    """One panel per metric: its training and validation curves against the epoch
    (counting from 1), with the epoch of the lowest ``val_loss`` marked on each panel.
    Any mapping of per-step lists draws the same way (``xlabel="step"``, say).

    ``history`` is what ``fit`` returns (or its ``.history`` dict); ``metrics`` defaults
    to every logged metric without its ``val_`` prefix, ``loss`` first.
    """
    logs = dict(getattr(history, "history", history))
    if metrics is None:
        metrics = list(dict.fromkeys(k.removeprefix("val_") for k in logs))
    metrics = list(metrics)
    missing = [m for m in metrics if m not in logs and f"val_{m}" not in logs]
    if missing or not metrics:
        raise ValueError(f"plot_history: no {missing or 'metrics'} in the history; it "
                         f"logged {sorted(logs)}")
    epochs = getattr(history, "epoch", None)  # a History counts from its first epoch
    first = epochs[0] + 1 if epochs else 1
    val_loss = logs.get("val_loss")
    best = first + int(np.argmin(val_loss)) if val_loss else None
    fig, axes = panels(ax, len(metrics), 3, (4.0, 3.0))
    for panel, metric in zip(axes, metrics):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if key in logs:
                epochs = np.arange(first, first + len(logs[key]))
                panel.plot(epochs, logs[key], marker=".", label=label)
        if best is not None:
            panel.axvline(best, color="0.5", linestyle="--", linewidth=1,
                          label=f"lowest val_loss ({xlabel} {best})")
        panel.set_xlabel(xlabel)
        panel.set_title(metric)
        panel.legend(fontsize="small")
    return fig
